"""Content-addressed artifact store: ``<root>/blobs/ab/cdef...`` named by SHA-256.

The server chooses every path from the digest of the bytes; no client-supplied name ever reaches
the file system, so path traversal is impossible by construction. Writes go to ``<root>/tmp``,
are fsynced, then atomically renamed into place (and the directory fsynced), so a blob is either
absent or complete. A blob already present is not rewritten (same digest ⇒ same bytes), which
makes repeated pushes idempotent. Blobs whose push never committed (crash between write and DB
commit) are harmless orphans: nothing in the database points at them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def clean_tmp(self) -> int:
        """Remove leftovers of writes interrupted by a crash (called at start-up)."""
        n = 0
        for p in self.tmp.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        return n

    def path(self, digest: str) -> Path:
        if not _HEX64.match(digest):
            raise ValueError("digest must be 64 lowercase hex digits")
        return self.blobs / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, data: bytes) -> str:
        """Store ``data`` durably; return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        dest = self.path(digest)
        if dest.is_file() and dest.stat().st_size == len(data):
            return digest
        dest.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return digest

    def get(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:  # bit rot or tampering on disk
            raise OSError(f"blob {digest} is corrupted on disk")
        return data


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobCache:
    """Bounded LRU of verified blob bytes: content-addressed blobs never change, so a hot
    generator is served from memory without touching the disk."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            b = self._d.get(digest)
            if b is not None:
                self._d.move_to_end(digest)
            return b

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:
            return
        with self._lock:
            if digest in self._d:
                return
            self._d[digest] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, old = self._d.popitem(last=False)
                self._size -= len(old)
