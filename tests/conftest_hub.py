"""Shared fixtures for the hub tests (imported explicitly: ``from tests.conftest_hub import ...``).

Real hub processes on 127.0.0.1, real databases: SQLite files, and PostgreSQL when
``FEDSYNTH_TEST_PG_URL`` is set (each test session gets its own throw-away database in it).
PostgreSQL is skipped only if that variable is unset AND ``FEDSYNTH_REQUIRE_PG`` is not set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedsynth.artifacts.decoder import GeneratorCard, decoder_to_bytes, sha256_bytes
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Column, Schema
from fedsynth.exchange.process import RunningHub, run_hub
from fedsynth.generators.nets import DecoderSpec, build_decoder
from fedsynth.generators.sgde import GeneratorSet
from fedsynth.generators.vae import VAEConfig

BACKENDS = ["sqlite", "postgres"]


def tiny_schema() -> Schema:
    return Schema(
        columns=(
            Column("age", "continuous", lower=0.0, upper=100.0),
            Column("color", "categorical", categories=("red", "green", "blue")),
            Column("y", "categorical", categories=("no", "yes")),
        ),
        target="y",
    )


def tiny_spec(schema: Schema, hidden: tuple[int, ...] = (16,), latent: int = 4) -> DecoderSpec:
    return VAEConfig(latent_dim=latent, hidden=hidden).decoder_spec(TableEncoder(schema).layout())


def make_set(
    schema: Schema,
    spec: DecoderSpec,
    *,
    epsilon: float = 1.0,
    delta: float = 1e-6,
    seed: int = 0,
    classes: tuple[str, ...] | None = None,
) -> GeneratorSet:
    """A generator set of randomly initialised decoders with honest cards (fast; no training)."""
    decs, cards = [], []
    for k, cls in enumerate(classes or schema.classes):
        torch.manual_seed(seed * 100 + k)
        dec = build_decoder(spec)
        cards.append(
            GeneratorCard(
                spec=spec.to_dict(),
                schema_hash=schema.hash(),
                class_label=cls,
                epsilon=epsilon,
                delta=delta,
                accountant="rdp",
                weights_sha256=sha256_bytes(decoder_to_bytes(dec)),
            )
        )
        decs.append(dec)
    return GeneratorSet(schema, decs, cards, [])


def pg_base_url() -> str | None:
    url = os.environ.get("FEDSYNTH_TEST_PG_URL")
    if not url:
        if os.environ.get("FEDSYNTH_REQUIRE_PG"):
            pytest.fail("FEDSYNTH_REQUIRE_PG is set but FEDSYNTH_TEST_PG_URL is not")
        pytest.skip("PostgreSQL not configured (set FEDSYNTH_TEST_PG_URL; scripts/pg_throwaway.sh)")
    return url


def fresh_pg_database(base_url: str) -> tuple[str, str]:
    """Create a new empty database on the test server; return (url, name)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(base_url)
    name = "hubtest_" + secrets.token_hex(6)
    conninfo = u.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return u.set(database=name).render_as_string(hide_password=False), name


def drop_pg_database(base_url: str, name: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def db_url_for(backend: str, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'hub.db'}"
        return
    base = pg_base_url()
    assert base
    url, name = fresh_pg_database(base)
    try:
        yield url
    finally:
        drop_pg_database(base, name)


def start_hub(backend: str, tmp: Path, **kw: object) -> Iterator[RunningHub]:
    for url in db_url_for(backend, tmp):
        with run_hub(url, tmp / "store", **kw) as hub:  # type: ignore[arg-type]
            yield hub
