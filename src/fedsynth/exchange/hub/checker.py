"""The output check of pushed generators, in a worker process the hub starts on demand.

Checking a pushed generator means re-deriving its privacy claim (the DP-SGD accountants are
Opacus', which imports torch), building its model from the server-fixed spec and sampling a fixed
batch per class (:func:`fedsynth.generators.io.from_artifact` with ``check=True``); normalising a
federation's family spec imports the family's module. For the neural families all of that loads
torch: ≈ 300 MB resident and ≈ 250k long-lived objects, kept for the life of the process that
imported it. The hub's serving processes need none of it otherwise (pool, pull and metadata
routes read bytes and rows), so that code runs in a child:

* **memory**: the serving process stays at its at-rest footprint; the worker exits after
  ``idle_s`` without a request (the next push starts a fresh one, ≈ 1–2 s with torch);
* **isolation**: an artifact that exhausts memory, hangs past ``timeout_s`` or crashes the
  interpreter takes the worker down, not the hub; the push is refused (422) and nothing is stored;
* **no pickle**: requests and replies are length-prefixed frames on the worker's stdin / stdout —
  a JSON header (the operation, schema, families' specs, byte counts) followed by raw byte
  frames (a card and its weights); the reply is one JSON object.

The checks are the same functions either way: :func:`fedsynth.exchange.protocol.check_artifact`
and :func:`~fedsynth.exchange.protocol.family_spec`, which ``validate_generator_set`` and
``check_requirements`` run in process by default (library use).
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from fedsynth.artifacts.card import ArtifactError
from fedsynth.data.schema import Schema
from fedsynth.exchange.protocol import check_artifact, family_spec
from fedsynth.generators.base import UnknownFamilyError

# --------------------------------------------------------------------------- framing


def _write_frame(out: IO[bytes], data: bytes) -> None:
    out.write(struct.pack(">I", len(data)))
    out.write(data)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _read_frame(fd: int, deadline: float | None = None) -> bytes:
    (n,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    return _read_exact(fd, n, deadline)


# --------------------------------------------------------------------------- parent side


class ArtifactChecker:
    """Runs the family code of the hub's checks in a worker process, one request at a time:
    :func:`~fedsynth.exchange.protocol.check_artifact` (a pushed generator) and
    :func:`~fedsynth.exchange.protocol.family_spec` (a federation's or round's family spec).
    See the module docstring."""

    def __init__(self, *, idle_s: float = 60.0, timeout_s: float = 300.0) -> None:
        self.idle_s = idle_s
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __call__(
        self, card: bytes, weights: bytes, schema: Schema, families: Mapping[str, dict[str, Any]]
    ) -> None:
        self._request(
            {"op": "check", "schema": schema.to_dict(), "families": dict(families)}, [card, weights]
        )

    def family_spec(self, name: Any, spec: Any, schema: Schema) -> tuple[str, dict[str, Any]]:
        reply = self._request(
            {"op": "family_spec", "name": name, "spec": spec, "schema": schema.to_dict()}, []
        )
        return str(reply["kind"]), dict(reply["spec"])

    def _request(self, head: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
        try:
            header = json.dumps({**head, "blobs": [len(b) for b in blobs]}).encode()
        except (TypeError, ValueError) as e:  # a spec that is not JSON never reaches the worker
            raise ArtifactError(f"invalid request for the checker: {e}") from None
        with self._lock:
            for attempt in (0, 1):
                fresh = self._proc is None or self._proc.poll() is not None
                proc = self._start() if fresh else self._proc
                assert proc is not None and proc.stdin is not None and proc.stdout is not None
                try:
                    for frame in (header, *blobs):
                        _write_frame(proc.stdin, frame)
                    proc.stdin.flush()
                    reply = json.loads(_read_frame(proc.stdout.fileno(), time.monotonic() + self.timeout_s))
                    break
                except TimeoutError:
                    self._stop()
                    raise ArtifactError(
                        f"the generator check did not finish within {self.timeout_s:g} s; refusing it"
                    ) from None
                except (EOFError, OSError) as e:  # a broken pipe; after TimeoutError, itself an OSError
                    self._stop()
                    if attempt == 0 and not fresh:
                        continue  # the idle worker was exiting as we wrote: once more on a fresh one
                    raise ArtifactError(
                        f"the generator check process failed ({type(e).__name__}): the artifact "
                        "crashed or exhausted the checker; refusing it"
                    ) from None
        if not reply.get("ok"):
            err = UnknownFamilyError if reply.get("unknown_family") else ArtifactError
            raise err(str(reply.get("error", "generator check failed")))
        return dict(reply)

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "FEDSYNTH_THREADS": os.environ.get("FEDSYNTH_THREADS", "1")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "fedsynth.exchange.hub.checker", "--idle", str(self.idle_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        return self._proc

    def _stop(self) -> None:
        p, self._proc = self._proc, None
        if p is not None and p.poll() is None:
            p.kill()
        if p is not None:
            p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()

    def close(self) -> None:
        with self._lock:
            self._stop()

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs (tests, benchmarks)."""
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None


# --------------------------------------------------------------------------- worker side


def _handle(head: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
    schema = Schema.from_dict(head["schema"])
    if head.get("op") == "check" and len(blobs) == 2:
        check_artifact(blobs[0], blobs[1], schema, head["families"])
        return {"ok": True}
    if head.get("op") == "family_spec" and not blobs:
        kind, spec = family_spec(head["name"], head["spec"], schema)
        return {"ok": True, "kind": kind, "spec": spec}
    return {"ok": False, "error": f"unknown checker request {head.get('op')!r}"}


def _serve(idle_s: float) -> None:
    fd = sys.stdin.fileno()
    out = sys.stdout.buffer
    while True:
        if not select.select([fd], [], [], idle_s)[0]:
            return  # idle: give the memory back; the hub starts a fresh worker when needed
        try:
            head = json.loads(_read_frame(fd))
            blobs = [_read_frame(fd) for _ in head["blobs"]]
        except EOFError:
            return  # the hub closed the pipe
        try:
            reply = _handle(head, blobs)
        except ArtifactError as e:
            reply = {"ok": False, "error": str(e), "unknown_family": isinstance(e, UnknownFamilyError)}
        except Exception as e:  # any failure on hostile input is a refusal, never a dead worker
            reply = {"ok": False, "error": f"generator check failed ({type(e).__name__}: {e})"}
        _write_frame(out, json.dumps(reply).encode())
        out.flush()


if __name__ == "__main__":  # pragma: no cover - exercised through ArtifactChecker
    import argparse

    ap = argparse.ArgumentParser(description="fedsynth hub: generator output-check worker")
    ap.add_argument("--idle", type=float, default=60.0)
    _serve(ap.parse_args().idle)
