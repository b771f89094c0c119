"""Generator families: a family column on generators; federations list their accepted families.

Existing generators were all β-VAE decoders (family ``dp-vae/1``); an existing federation's bare
decoder spec becomes ``{"families": [{"kind": "dp-vae/1", "spec": <old spec>}]}``. One way: the
downgrade refuses once a non-VAE generator or federation exists.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_feds = sa.table("federations", sa.column("id", sa.Integer), sa.column("spec_json", sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table("generators") as b:
        b.add_column(sa.Column("family", sa.String(64), nullable=False, server_default="dp-vae/1"))
    conn = op.get_bind()
    for fid, spec in conn.execute(sa.select(_feds.c.id, _feds.c.spec_json)).all():
        if isinstance(spec, dict) and "families" not in spec:
            new = {"families": [{"kind": "dp-vae/1", "spec": spec}]}
            conn.execute(_feds.update().where(_feds.c.id == fid).values(spec_json=new))


def downgrade() -> None:
    conn = op.get_bind()
    n = conn.execute(sa.text("SELECT COUNT(*) FROM generators WHERE family != 'dp-vae/1'")).scalar()
    if n:
        raise RuntimeError(f"{n} non-VAE generators exist; cannot downgrade below the families schema")
    for fid, spec in conn.execute(sa.select(_feds.c.id, _feds.c.spec_json)).all():
        fams = spec.get("families") if isinstance(spec, dict) else None
        if fams is not None:
            if len(fams) != 1 or fams[0].get("kind") != "dp-vae/1":
                raise RuntimeError("a federation accepts non-VAE families; cannot downgrade")
            conn.execute(_feds.update().where(_feds.c.id == fid).values(spec_json=fams[0]["spec"]))
    with op.batch_alter_table("generators") as b:
        b.drop_column("family")
