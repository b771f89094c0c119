"""The hub's relational store (SQLAlchemy 2): federations, silos, pushes, generators, federation
rounds (and their members), audit log.

Everything the hub knows lives here except artifact bytes, which live in the content-addressed
:mod:`fedsynth.exchange.store`. A push commits its generator rows, its ledger charge and its
audit event in ONE transaction, after the artifact files are durably in the store — so a crash
at any point leaves either the whole push or none of it visible.

SQLite is the embedded default (WAL, busy timeout); PostgreSQL is the scale-out store for several
stateless hub processes. The schema is created by Alembic (:func:`migrate`), never by
``create_all`` in production paths.

A push (and each of its generators) belongs either to one silo (``silo_id``) or to one federation
round (``round_id``), never both (a CHECK constraint): a round's generator was fitted across
silos under secure aggregation and has no single owner. The round → result link is the unique
``pushes.round_id`` (one way, so the two tables do not reference each other in a cycle).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(t: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones; the hub stores UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def status_in(states: tuple[str, ...]) -> str:
    """SQL for a CHECK / partial-index condition on a fixed set of state names."""
    return "status IN (" + ", ".join(f"'{s}'" for s in states) + ")"


#: Round states (docs/hub.md "Federation rounds"): open → running → done; open → expired (fewer
#: than min_silos joined); open | running → aborted.
ROUND_STATES = ("open", "running", "done", "aborted", "expired")
ACTIVE_ROUND_STATES = ("open", "running")
MEMBER_STATES = ("joined", "withdrawn", "contributed", "dropped")
#: The one-round-at-a-time rule as a partial unique index (SQLite and PostgreSQL both have them):
#: at most one open or running round per federation, atomic across hub processes.
ACTIVE_ROUND_WHERE = status_in(ACTIVE_ROUND_STATES)


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
    # ε held by the open/running round this silo joined: not spent yet, but not spendable either
    # (a push needs spent + reserved + ε ≤ budget), so one budget cannot be spent twice
    epsilon_reserved: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Round(Base):
    """One federation-level fit of ONE generator across the silos that join it."""

    __tablename__ = "rounds"
    __table_args__ = (
        CheckConstraint(status_in(ROUND_STATES), name="ck_round_status"),
        Index(
            "uq_round_active",
            "federation_id",
            unique=True,
            sqlite_where=text(ACTIVE_ROUND_WHERE),
            postgresql_where=text(ACTIVE_ROUND_WHERE),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"), nullable=False, index=True)
    family: Mapped[str] = mapped_column(String(64), nullable=False)  # a resolved kind, e.g. "pgm/1"
    spec_json: Mapped[dict] = mapped_column(JSON, nullable=False)  # the family spec, normalised
    epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    delta: Mapped[float] = mapped_column(Float, nullable=False)
    min_silos: Mapped[int] = mapped_column(Integer, nullable=False)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)  # joins close
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # the runner's report (bytes per silo, realised noise, seconds), stored as given
    report_json: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class RoundMember(Base):
    __tablename__ = "round_members"
    __table_args__ = (
        UniqueConstraint("round_id", "partition_id", name="uq_member_partition"),
        CheckConstraint(status_in(MEMBER_STATES), name="ck_member_status"),
    )
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    silo_id: Mapped[int] = mapped_column(ForeignKey("silos.id"), primary_key=True, index=True)
    partition_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0..K-1, set at start
    joined: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="joined")
    # what this membership holds in silos.epsilon_reserved (0 once released or charged)
    epsilon_reserved: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


class Push(Base):
    __tablename__ = "pushes"
    __table_args__ = (
        # idempotency: the same silo pushing the same content twice gets the first push back
        # (NULL silo ids of round results never collide; a round has one result: uq_push_round)
        UniqueConstraint("silo_id", "content_hash", name="uq_push_content"),
        UniqueConstraint("round_id", name="uq_push_round"),
        CheckConstraint("(silo_id IS NULL) <> (round_id IS NULL)", name="ck_push_owner"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"), nullable=False, index=True)
    silo_id: Mapped[int | None] = mapped_column(ForeignKey("silos.id"), nullable=True, index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    delta: Mapped[float] = mapped_column(Float, nullable=False)
    n_generators: Mapped[int] = mapped_column(Integer, nullable=False)
    total_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Generator(Base):
    __tablename__ = "generators"
    __table_args__ = (CheckConstraint("(silo_id IS NULL) <> (round_id IS NULL)", name="ck_generator_owner"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    push_id: Mapped[int] = mapped_column(ForeignKey("pushes.id"), nullable=False, index=True)
    federation_id: Mapped[int] = mapped_column(ForeignKey("federations.id"), nullable=False, index=True)
    silo_id: Mapped[int | None] = mapped_column(ForeignKey("silos.id"), nullable=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
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
