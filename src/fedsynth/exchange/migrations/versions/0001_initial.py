"""Initial hub schema: federations, silos, pushes, generators, append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "federations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("schema_json", sa.JSON, nullable=False),
        sa.Column("schema_hash", sa.String(64), nullable=False),
        sa.Column("spec_json", sa.JSON, nullable=False),
        sa.Column("max_epsilon", sa.Float, nullable=False),
        sa.Column("max_delta", sa.Float, nullable=False),
        sa.Column("silo_epsilon_budget", sa.Float, nullable=False),
        sa.Column("created", TS, nullable=False),
    )
    op.create_table(
        "silos",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("federation_id", sa.Integer, sa.ForeignKey("federations.id"), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("epsilon_spent", sa.Float, nullable=False, server_default="0"),
        sa.Column("delta_spent", sa.Float, nullable=False, server_default="0"),
        sa.Column("created", TS, nullable=False),
        sa.UniqueConstraint("federation_id", "name", name="uq_silo_name"),
    )
    op.create_table(
        "pushes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("federation_id", sa.Integer, sa.ForeignKey("federations.id"), nullable=False, index=True),
        sa.Column("silo_id", sa.Integer, sa.ForeignKey("silos.id"), nullable=False, index=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("n_generators", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.Integer, nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.UniqueConstraint("silo_id", "content_hash", name="uq_push_content"),
    )
    op.create_table(
        "generators",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("push_id", sa.Integer, sa.ForeignKey("pushes.id"), nullable=False, index=True),
        sa.Column("federation_id", sa.Integer, sa.ForeignKey("federations.id"), nullable=False, index=True),
        sa.Column("silo_id", sa.Integer, sa.ForeignKey("silos.id"), nullable=False),
        sa.Column("class_label", sa.String(256), nullable=False),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("delta", sa.Float, nullable=False),
        sa.Column("accountant", sa.String(64), nullable=False),
        sa.Column("card_created", sa.String(64), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("card_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created", TS, nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("time", TS, nullable=False, index=True),
        sa.Column("federation", sa.String(64), nullable=True, index=True),
        sa.Column("silo", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("epsilon", sa.Float, nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
    )
    # The audit log is append-only at the database level, not just by convention in the app.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_no_{verb.lower()} BEFORE {verb} ON audit_events "
                "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    for t in ("audit_events", "generators", "pushes", "silos", "federations"):
        op.drop_table(t)
