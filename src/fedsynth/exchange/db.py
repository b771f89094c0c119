"""The hub's relational store (SQLAlchemy 2): federations, silos, pushes, generators, audit log.

Everything the hub knows lives here except artifact bytes, which live in the content-addressed
:mod:`fedsynth.exchange.store`. A push commits its generator rows, its ledger charge and its
audit event in ONE transaction, after the artifact files are durably in the store — so a crash
at any point leaves either the whole push or none of it visible.

SQLite is the embedded default (WAL, busy timeout); PostgreSQL is the scale-out store for several
stateless hub processes. The schema is created by Alembic (:func:`migrate`), never by
``create_all`` in production paths.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Federation(Base):
    __tablename__ = "federations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    schema_json: Mapped[dict] = mapped_column(JSON, nullable=False)
    schema_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # {"families": [{"kind": "dp-vae/1", "spec": {...}}, ...]} (migration 0002 wrapped the bare
    # decoder specs of older hubs into this form)
    spec_json: Mapped[dict] = mapped_column(JSON, nullable=False)
    max_epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    max_delta: Mapped[float] = mapped_column(Float, nullable=False)
    silo_epsilon_budget: Mapped[float] = mapped_column(Float, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Silo(Base):
    __tablename__ = "silos"
    __table_args__ = (UniqueConstraint("federation_id", "name", name="uq_silo_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    # sha256 of the bearer token; the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    epsilon_spent: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    delta_spent: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Push(Base):
    __tablename__ = "pushes"
    # idempotency: the same silo pushing the same content twice gets the first push back
    __table_args__ = (UniqueConstraint("silo_id", "content_hash", name="uq_push_content"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"), nullable=False, index=True)
    silo_id: Mapped[int] = mapped_column(ForeignKey("silos.id"), nullable=False, index=True)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    delta: Mapped[float] = mapped_column(Float, nullable=False)
    n_generators: Mapped[int] = mapped_column(Integer, nullable=False)
    total_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Generator(Base):
    __tablename__ = "generators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    push_id: Mapped[int] = mapped_column(ForeignKey("pushes.id"), nullable=False, index=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"), nullable=False, index=True)
    silo_id: Mapped[int] = mapped_column(ForeignKey("silos.id"), nullable=False)
    family: Mapped[str] = mapped_column(String(64), nullable=False, default="dp-vae/1")
    # "" for a joint model (no class label on its card)
    class_label: Mapped[str] = mapped_column(String(256), nullable=False)
    epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    delta: Mapped[float] = mapped_column(Float, nullable=False)
    accountant: Mapped[str] = mapped_column(String(64), nullable=False)
    card_created: Mapped[str] = mapped_column(String(64), nullable=False)
    weights_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    card_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class AuditEvent(Base):
    """Append-only (a database trigger refuses UPDATE and DELETE; see the initial migration)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, nullable=False, index=True
    )
    federation: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    silo: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)  # ok | refused
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")


def make_engine(url: str) -> Engine:
    """Engine with settings that matter for a multi-threaded server."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=20
        )

        @event.listens_for(eng, "connect")
        def _pragmas(conn, _rec):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the single writer
            cur.execute("PRAGMA synchronous=FULL")  # a committed push survives power loss
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return eng
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> None:
    """Bring the database to the newest schema with Alembic (scripts shipped inside the package)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
