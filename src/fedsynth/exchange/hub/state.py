"""Everything one hub process holds between requests, built once by ``create_app``."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from fedsynth.exchange import db
from fedsynth.exchange.hub.audit_log import AuditWriter
from fedsynth.exchange.hub.checker import ArtifactChecker
from fedsynth.exchange.hub.settings import FAULT_DELAY_ENV, Caller, HubSettings
from fedsynth.exchange.protocol import Requirements
from fedsynth.exchange.store import BlobCache, BlobStore


@dataclass
class HubState:
    """Per-process state. The caches hold immutable facts (a federation's requirements, a
    committed generator row), which never need invalidating, and a token's silo, which can be
    revoked or rotated: those entries expire after ``TOKEN_CACHE_TTL_S`` (another process's
    change is seen within that bound; this process forgets the silo at once). ``lock`` guards
    them because sync routes run on the threadpool."""

    settings: HubSettings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    audit: AuditWriter
    fault_delay: float = 0.0
    blobs: BlobCache = field(default_factory=lambda: BlobCache(max_bytes=256 * 1024 * 1024))
    tokens: dict[str, tuple[Caller, float]] = field(default_factory=dict)  # hash -> (silo, expiry)
    federations: dict[str, tuple[int, Requirements]] = field(default_factory=dict)
    generators: dict[tuple[int, int], tuple[db.Generator, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: pushed generators' output checks run in a worker process (torch stays out of this one)
    checker: ArtifactChecker = field(default_factory=ArtifactChecker)

    @classmethod
    def build(cls, settings: HubSettings) -> HubState:
        engine = db.make_engine(settings.db_url)
        sessions = db.sessions(engine)
        store = BlobStore(settings.store_dir)
        store.clean_tmp()
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            store=store,
            audit=AuditWriter(sessions),
            fault_delay=float(os.environ.get(FAULT_DELAY_ENV, "0") or 0),
        )

    def forget_silo(self, silo_id: int) -> None:
        """Drop this process's cached tokens of a silo (after a revoke or rotate)."""
        with self.lock:
            for th in [th for th, (c, _) in self.tokens.items() if c.silo_id == silo_id]:
                del self.tokens[th]

    def close(self) -> None:
        self.audit.close()  # graceful shutdown: write the queued audit events
        self.checker.close()
        self.engine.dispose()


def hub_of(conn: HTTPConnection) -> HubState:
    state: HubState = conn.app.state.hub
    return state
