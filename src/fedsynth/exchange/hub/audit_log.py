"""The audit trail: a batched background writer and the event helpers every route uses."""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from fedsynth.exchange import db
from fedsynth.exchange.hub.settings import Caller

log = logging.getLogger("fedsynth.hub")


def _clean(text: str | None, n: int) -> str | None:
    """Audit strings may carry attacker-chosen text (paths, names): make them printable and bounded
    (PostgreSQL refuses NUL, and one bad row must not sink a batch)."""
    if text is None:
        return None
    if text.isprintable():  # the common case, without a per-character loop
        return text[:n]
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[:n])[:n]


class AuditWriter:
    """Appends audit events from a background thread in batches (every 100 ms or 500 events),
    so that hot read paths (pulls) never wait for a database commit. Unauthenticated refusals
    are counted instead (:meth:`refused`): one row per source and minute. ``flush`` blocks until
    everything queued so far is written; shutdown flushes. A SIGKILL can lose at most the last
    batch of pull/subscribe/refusal events; push events are written in the push's transaction.
    """

    #: distinct refusal sources counted per minute; beyond, they share one "(other sources)" row
    MAX_REFUSAL_SOURCES = 1024

    def __init__(
        self, session_factory: sessionmaker[Session], interval: float = 0.1, batch: int = 500
    ) -> None:
        self._sf = session_factory
        self._q: queue.Queue[dict[str, Any] | threading.Event] = queue.Queue()
        self._interval, self._batch = interval, batch
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # (source, minute) -> [count, first detail]: unauthenticated refusals, written as one row
        # per source and minute, so a flood of bad tokens cannot grow the append-only table
        self._refusals: dict[tuple[str, int], list[Any]] = {}
        self._rlock = threading.Lock()
        self._t = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._t.start()

    def put(self, event: dict[str, Any]) -> None:
        self._q.put(event)

    def refused(self, source: str, detail: str) -> None:
        """Count an unauthenticated refusal (401) from ``source`` (a client address); the counts
        are written when their minute is over, or by :meth:`flush`. O(1), never blocks."""
        minute = int(time.time() // 60)
        with self._rlock:
            key = (source, minute)
            hit = self._refusals.get(key)
            if hit is None:
                if len(self._refusals) >= self.MAX_REFUSAL_SOURCES:
                    key = ("(other sources)", minute)
                    hit = self._refusals.setdefault(key, [0, detail])
                else:
                    hit = self._refusals[key] = [0, detail]
            hit[0] += 1

    def _queue_refusals(self, everything: bool) -> None:
        now = int(time.time() // 60)
        with self._rlock:
            done = [k for k in self._refusals if everything or k[1] < now]
            rows = [(k, self._refusals.pop(k)) for k in done]
        for (source, minute), (n, first) in rows:
            at = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%d %H:%M")
            audit(
                self,
                "auth",
                "refused",
                detail=f"{n} unauthenticated request(s) refused from {source} in the minute {at} UTC"
                f" (first: {first[:200]})",
            )

    def _drain(self) -> None:
        # one drainer at a time, so that flush() cannot return while another thread still holds
        # taken-but-uncommitted events
        with self._lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        while True:
            items: list[Any] = []
            try:
                while len(items) < self._batch:
                    items.append(self._q.get_nowait())
            except queue.Empty:
                pass
            if not items:
                return
            events = [i for i in items if isinstance(i, dict)]
            try:
                if events:
                    with self._sf.begin() as s:
                        s.add_all([db.AuditEvent(**e) for e in events])
            except Exception:  # retry one by one so that one bad event cannot sink the others
                for e in events:
                    try:
                        with self._sf.begin() as s:
                            s.add(db.AuditEvent(**e))
                    except Exception:  # keep serving; the lost event is logged
                        log.exception("could not write audit event %r", e)
            for i in items:
                if isinstance(i, threading.Event):
                    i.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self._interval)
            self._queue_refusals(everything=False)
            self._drain()
        self._queue_refusals(everything=True)
        self._drain()

    def flush(self, timeout: float = 10.0) -> None:
        """Write everything queued so far, including the refusal counts of the current minute
        (a later refusal in the same minute then starts a new row: rows stay bounded by the
        number of flushes, which only admin reads trigger)."""
        self._queue_refusals(everything=True)
        done = threading.Event()
        self._q.put(done)
        self._drain()  # write now from the calling thread rather than wait for the next tick
        done.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)


def audit(
    writer: AuditWriter,
    action: str,
    outcome: str,
    *,
    federation: str | None = None,
    silo: str | None = None,
    sha256: str | None = None,
    epsilon: float | None = None,
    detail: str = "",
) -> None:
    """Queue an event (non-blocking). Successful pushes are NOT written here: their event is
    part of the push's own transaction."""
    writer.put(
        {
            "federation": _clean(federation, 64),
            "silo": _clean(silo, 64),
            "action": action,
            "outcome": outcome,
            "sha256": sha256,
            "epsilon": epsilon,
            "detail": _clean(detail, 2000),
        }
    )


def audit_pull(writer: AuditWriter, fed: str, c: Caller, g: db.Generator, owner: str) -> None:
    """The one pull event, written alike by the route and by the fast lane."""
    audit(
        writer,
        "pull",
        "ok",
        federation=fed,
        silo=c.silo or "(admin)",
        sha256=g.weights_sha256,
        epsilon=g.epsilon,
        detail=f"generator {g.id} of {owner}",
    )
