"""Content-addressed artifact store: ``<root>/blobs/ab/cdef...`` named by SHA-256.

The server chooses every path from the digest of the bytes; no client-supplied name ever reaches
the file system, so path traversal is impossible by construction. Writes go to ``<root>/tmp``,
are fsynced, then atomically renamed into place (and the directory fsynced), so a blob is either
absent or complete. A blob already present is verified (hash) before a put skips it, so a
corrupted file is rewritten, and its mtime is refreshed so that :meth:`BlobStore.gc` sees it as
fresh. Several hub processes may share one store:

* temp files are named ``put.<host>.<pid>.<random>``; :meth:`BlobStore.clean_tmp` removes only
  those of dead processes on this host, or any older than a grace period (another host's, an old
  name), never another live process's in-flight write;
* the 256 ``blobs/xx/`` folders are created (and ``blobs/`` fsynced) when a store is opened, so a
  blob's directory entry is durable once its put returns;
* blobs are written before the database row that references them (a crash leaves only an
  unreferenced blob, never a row without its blob); refused or crashed pushes thus leave orphans,
  which :meth:`BlobStore.gc` removes once they are older than a grace period (an in-flight push of
  another process is younger than that) — ``fedsynth hub gc`` and every hub start-up run it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX62 = re.compile(r"^[0-9a-f]{62}$")
_TMP_NAME = re.compile(r"^(put|gc)\.([0-9a-f]{8})\.([0-9]+)\.(.*)$")
#: A temp file or orphan blob younger than this is left alone by default (an upload in flight).
DEFAULT_GRACE_S = 3600.0
_CHUNK = 1 << 20
_log = logging.getLogger(__name__)


def _host_tag() -> str:
    # pids are only meaningful on their own host (a store on a shared volume has several)
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # Linux: a killed process not yet reaped by its parent is a zombie, and writes nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class GcStats:
    """What one :meth:`BlobStore.gc` pass did."""

    removed: int  # orphan blobs deleted
    freed_bytes: int
    kept_referenced: int
    kept_recent: int  # unreferenced but younger than the grace period (maybe an upload in flight)


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for i in range(256):
            (self.blobs / f"{i:02x}").mkdir(exist_ok=True)
        # always, not only when this process made a folder: another process may have made it and
        # not yet fsynced blobs/ (once this returns every xx/ entry is durable)
        _fsync_dir(self.blobs)
        _fsync_dir(self.root)
        self._host = _host_tag()

    def clean_tmp(self, grace_s: float = DEFAULT_GRACE_S) -> int:
        """Remove leftovers of interrupted writes (called at start-up): temp files of processes
        on this host that are gone, and anything older than ``grace_s``. A live process's
        in-flight temp file is kept."""
        n = 0
        now = time.time()
        for p in self.tmp.iterdir():
            m = _TMP_NAME.match(p.name)
            try:
                old = now - p.lstat().st_mtime > grace_s
            except FileNotFoundError:  # its writer renamed it into place meanwhile
                continue
            dead = m is not None and m.group(2) == self._host and not _pid_alive(int(m.group(3)))
            if not (old or dead):
                continue
            if m is not None and m.group(1) == "gc" and _HEX64.match(m.group(4)):
                # a gc that died with a blob moved aside: put it back (a later gc decides again)
                _restore(p, self.path(m.group(4)))
                n += 1
                continue
            if p.is_dir() and not p.is_symlink():
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

    def _intact(self, dest: Path, digest: str, size: int) -> bool:
        """``dest`` holds exactly the blob (size, then hash); its mtime refreshed if so."""
        try:
            if dest.stat().st_size != size or _file_sha256(dest) != digest:
                return False
            os.utime(dest)  # a reused blob is fresh again: gc's grace period protects it
        except FileNotFoundError:  # gc removed it just now: write it again
            return False
        return True

    def put(self, data: bytes) -> str:
        """Store ``data`` durably; return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        dest = self.path(digest)
        if self._intact(dest, digest, len(data)):
            return digest
        if not dest.parent.is_dir():  # removed by hand since the store was opened
            dest.parent.mkdir(exist_ok=True)
            _fsync_dir(self.blobs)
        tmp = self.tmp / f"put.{self._host}.{os.getpid()}.{secrets.token_hex(8)}"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)  # also atomically replaces a corrupted copy
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return digest

    def get(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:  # bit rot or tampering on disk
            raise OSError(f"blob {digest} is corrupted on disk")
        return data

    def digests(self) -> Iterable[tuple[str, Path]]:
        """Every blob on disk as ``(digest, path)``; stray files are skipped."""
        for sub in self.blobs.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for p in sub.iterdir():
                if _HEX62.match(p.name):
                    yield sub.name + p.name, p

    def gc(self, referenced: set[str], older_than_s: float = DEFAULT_GRACE_S) -> GcStats:
        """Delete blobs that no database row references and that are older than ``older_than_s``.

        ``referenced`` must be read from the database BEFORE this is called. A blob stored after
        that is younger than the grace period (its put wrote or touched it), so a push in flight
        in any process is never raced. The final decision is made on the blob moved aside into
        ``tmp/`` (an atomic rename): a put that touched it in between is seen there and the blob
        is put back, and a put after the move finds no blob and writes it again."""
        removed = freed = kept_ref = kept_recent = 0
        for digest, p in list(self.digests()):
            if digest in referenced:
                kept_ref += 1
                continue
            try:
                if time.time() - p.stat().st_mtime <= older_than_s:
                    kept_recent += 1
                    continue
                aside = self.tmp / f"gc.{self._host}.{os.getpid()}.{digest}"
                os.rename(p, aside)
            except FileNotFoundError:
                continue
            st = aside.stat()
            if time.time() - st.st_mtime <= older_than_s:  # touched by a put since the first look
                _restore(aside, p)
                kept_recent += 1
                continue
            aside.unlink()
            removed += 1
            freed += st.st_size
        if removed:
            _fsync_dir(self.tmp)
        return GcStats(removed, freed, kept_ref, kept_recent)


def _restore(aside: Path, dest: Path) -> None:
    try:
        os.link(aside, dest)  # never over a copy a put wrote meanwhile (that one is verified)
    except FileExistsError:
        pass
    except OSError:  # no hard links on this file system
        if not dest.exists():
            os.replace(aside, dest)
            return
    aside.unlink(missing_ok=True)


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def referenced_blobs(engine: Engine) -> set[str]:
    """Every digest a database row points at: the weights and card of every generator (pushed by
    a silo or released by a federation round)."""
    from sqlalchemy import select

    from fedsynth.exchange import db

    with engine.connect() as conn:
        rows = conn.execute(select(db.Generator.weights_sha256, db.Generator.card_sha256)).all()
    return {d for row in rows for d in row}


def collect_garbage(engine: Engine, store: BlobStore, grace_s: float = DEFAULT_GRACE_S) -> GcStats:
    """One gc pass: the referenced set from the database first, then :meth:`BlobStore.gc`."""
    return store.gc(referenced_blobs(engine), older_than_s=grace_s)


def gc_in_background(engine: Engine, store: BlobStore, grace_s: float = DEFAULT_GRACE_S) -> threading.Thread:
    """The start-up gc of a hub process, off the start-up path (a large store takes a while to
    list); a failure (e.g. a database not migrated yet) is logged, never raised."""

    def run() -> None:
        try:
            st = collect_garbage(engine, store, grace_s)
            if st.removed:
                _log.warning("store gc: removed %d orphan blobs (%d bytes)", st.removed, st.freed_bytes)
        except Exception as e:  # start-up must not fail on housekeeping
            _log.warning("store gc at start-up failed: %s", e)

    t = threading.Thread(target=run, name="store-gc", daemon=True)
    t.start()
    return t


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
