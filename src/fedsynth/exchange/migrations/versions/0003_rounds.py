"""Federation rounds: ``rounds``, ``round_members``, reserved ε per silo, round-owned pushes.

A round fits ONE generator across a federation's silos under secure aggregation, so its result
has no single silo. Design: ``pushes.silo_id`` and ``generators.silo_id`` become nullable and both
tables get a nullable ``round_id`` (FK ``rounds.id``); a CHECK constraint says exactly one of the
two is set, so every generator still has exactly one owner and every existing per-silo query
keeps its meaning. The link is one way (``pushes.round_id``, unique: a round has one result), so
``rounds`` and ``pushes`` do not reference each other in a cycle.

``silos.epsilon_reserved`` (default 0) holds the ε of the round a silo joined until the round
charges it (result) or releases it (withdraw, expiry, abort, not among the contributors); the
push budget rule becomes spent + reserved + ε ≤ budget. A partial unique index on
``rounds(federation_id) WHERE status IN ('open', 'running')`` is the one-round-at-a-time rule,
atomic across hub processes.

SQLite cannot drop NOT NULL in place: batch mode rebuilds ``pushes`` and ``generators`` (copy,
drop, rename). ``generators`` references ``pushes``, so on SQLite foreign-key enforcement is
switched off around the rebuild (as SQLite's documented table-rebuild procedure does) and the
references are checked with ``PRAGMA foreign_key_check`` before the migration ends.

One way in practice: the downgrade refuses once any round exists.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ROUND_STATES = "status IN ('open', 'running', 'done', 'aborted', 'expired')"
MEMBER_STATES = "status IN ('joined', 'withdrawn', 'contributed', 'dropped')"
ACTIVE = "status IN ('open', 'running')"
OWNER = "(silo_id IS NULL) <> (round_id IS NULL)"


def _foreign_keys(on: bool) -> None:
    """SQLite: a rebuild drops ``pushes`` while ``generators`` rows reference it; with enforcement
    on, that implicit DELETE fails. (PRAGMA foreign_keys is a no-op inside a transaction, so
    ``defer_foreign_keys`` covers the case where the upgrade already began one.)"""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    op.execute(f"PRAGMA defer_foreign_keys={'OFF' if on else 'ON'}")


def _check_foreign_keys() -> None:
    if op.get_bind().dialect.name == "sqlite":
        bad = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise RuntimeError(f"foreign keys broken by the rounds migration: {bad[:5]}")


def upgrade() -> None:
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("federation_id", sa.Integer, sa.ForeignKey("federations.id"), nullable=False, index=True),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("spec_json", sa.JSON, nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("min_silos", sa.Integer, nullable=False),
        sa.Column("deadline", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.Column("started", TS, nullable=True),
        sa.Column("finished", TS, nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("report_json", sa.JSON, nullable=True),
        sa.CheckConstraint(ROUND_STATES, name="ck_round_status"),
    )
    op.create_index(
        "uq_round_active",
        "rounds",
        ["federation_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )
    op.create_table(
        "round_members",
        sa.Column("round_id", sa.Integer, sa.ForeignKey("rounds.id"), primary_key=True),
        sa.Column("silo_id", sa.Integer, sa.ForeignKey("silos.id"), primary_key=True, index=True),
        sa.Column("partition_id", sa.Integer, nullable=True),
        sa.Column("joined", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("epsilon_reserved", sa.Float, nullable=False),
        sa.UniqueConstraint("round_id", "partition_id", name="uq_member_partition"),
        sa.CheckConstraint(MEMBER_STATES, name="ck_member_status"),
    )
    with op.batch_alter_table("silos") as b:  # a plain ADD COLUMN, no rebuild
        b.add_column(sa.Column("epsilon_reserved", sa.Float, nullable=False, server_default="0"))
    _foreign_keys(False)
    with op.batch_alter_table("pushes") as b:
        b.alter_column("silo_id", existing_type=sa.Integer, nullable=True)
        b.add_column(sa.Column("round_id", sa.Integer, nullable=True))
        b.create_foreign_key("fk_pushes_round_id", "rounds", ["round_id"], ["id"])
        b.create_unique_constraint("uq_push_round", ["round_id"])
        b.create_check_constraint("ck_push_owner", sa.text(OWNER))
    with op.batch_alter_table("generators") as b:
        b.alter_column("silo_id", existing_type=sa.Integer, nullable=True)
        b.add_column(sa.Column("round_id", sa.Integer, nullable=True))
        b.create_foreign_key("fk_generators_round_id", "rounds", ["round_id"], ["id"])
        b.create_check_constraint("ck_generator_owner", sa.text(OWNER))
    _check_foreign_keys()
    _foreign_keys(True)


def downgrade() -> None:
    conn = op.get_bind()
    n = conn.execute(sa.text("SELECT COUNT(*) FROM rounds")).scalar()
    if n:
        raise RuntimeError(f"{n} federation rounds exist; cannot downgrade below the rounds schema")
    _foreign_keys(False)
    with op.batch_alter_table("generators") as b:
        b.drop_constraint("ck_generator_owner", type_="check")
        b.drop_constraint("fk_generators_round_id", type_="foreignkey")
        b.drop_column("round_id")
        b.alter_column("silo_id", existing_type=sa.Integer, nullable=False)
    with op.batch_alter_table("pushes") as b:
        b.drop_constraint("ck_push_owner", type_="check")
        b.drop_constraint("uq_push_round", type_="unique")
        b.drop_constraint("fk_pushes_round_id", type_="foreignkey")
        b.drop_column("round_id")
        b.alter_column("silo_id", existing_type=sa.Integer, nullable=False)
    _check_foreign_keys()
    _foreign_keys(True)
    with op.batch_alter_table("silos") as b:
        b.drop_column("epsilon_reserved")
    op.drop_table("round_members")
    op.drop_index("uq_round_active", table_name="rounds")
    op.drop_table("rounds")
