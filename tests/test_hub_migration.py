"""Alembic 0001 → 0002: a hub database from before families keeps working (one way)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from fedsynth.exchange import db
from fedsynth.exchange.client import HubAdmin
from fedsynth.exchange.process import run_hub
from tests.conftest_hub import tiny_schema, tiny_spec


def _cfg(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def test_legacy_rows_migrate_and_serve(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    command.upgrade(_cfg(url), "0001")
    s = tiny_schema()
    spec = tiny_spec(s).to_dict()
    eng = sa.create_engine(url)
    with eng.begin() as c:
        meta = sa.MetaData()
        meta.reflect(c)
        assert "family" not in meta.tables["generators"].c
        now = sa.func.current_timestamp()
        c.execute(meta.tables["federations"].insert().values(
            id=1, name="old", schema_json=s.to_dict(), schema_hash=s.hash(), spec_json=spec, max_epsilon=1.5,
            max_delta=1e-5, silo_epsilon_budget=3.0, created=now))  # fmt: skip
        c.execute(meta.tables["silos"].insert().values(
            id=1, federation_id=1, name="s1", token_hash="a" * 64, epsilon_spent=1.0, delta_spent=1e-6,
            created=now))  # fmt: skip
        c.execute(meta.tables["pushes"].insert().values(
            id=1, federation_id=1, silo_id=1, content_hash="b" * 64, epsilon=1.0, delta=1e-6, n_generators=1,
            total_bytes=10, created=now))  # fmt: skip
        c.execute(meta.tables["generators"].insert().values(
            id=1, push_id=1, federation_id=1, silo_id=1, class_label="yes", epsilon=1.0, delta=1e-6,
            accountant="rdp", card_created="", weights_sha256="c" * 64, card_sha256="d" * 64, size=10,
            created=now))  # fmt: skip
    db.migrate(url)
    with eng.connect() as c:
        fam = c.execute(sa.text("SELECT family FROM generators")).scalar()
        spec_json = c.execute(
            sa.select(sa.table("federations", sa.column("spec_json", sa.JSON)).c.spec_json)
        ).scalar()
    assert fam == "dp-vae/1"
    assert spec_json == {"families": [{"kind": "dp-vae/1", "spec": spec}]}
    with run_hub(url, tmp_path / "store") as hub, HubAdmin(hub.url, hub.admin_token) as adm:
        (req,) = adm.federations()
        assert req.families == {"dp-vae/1": spec}
        (entry,) = adm.pool("old")
        assert (entry.family, entry.class_label, entry.epsilon) == ("dp-vae/1", "yes", 1.0)
    command.downgrade(_cfg(url), "0001")  # nothing but VAEs: the downgrade is allowed
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT spec_json FROM federations")).scalar() is not None
    eng.dispose()
