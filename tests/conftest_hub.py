"""Shared fixtures for the hub tests (imported explicitly: ``from tests.conftest_hub import ...``).

Real hub processes on 127.0.0.1, real databases: SQLite files, and PostgreSQL when
``FEDSYNTH_TEST_PG_URL`` is set (each test session gets its own throw-away database in it).
PostgreSQL is skipped only if that variable is unset AND ``FEDSYNTH_REQUIRE_PG`` is not set.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Column, Schema
from fedsynth.exchange.process import RunningHub, run_hub
from fedsynth.generators.base import GeneratorSet, make_card
from fedsynth.generators.vae.family import VAEGenerator, decoder_tensors
from fedsynth.generators.vae.nets import DecoderSpec, build_decoder
from fedsynth.generators.vae.train import VAEConfig
from fedsynth.privacy.claim import PrivacyClaim

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


def tiny_table(n: int, seed: int) -> pd.DataFrame:
    """``n`` rows of :func:`tiny_schema` where the class shifts age and colour."""
    rng = np.random.default_rng(seed)
    y = rng.choice(["no", "yes"], n)
    age = np.clip(rng.normal(np.where(y == "yes", 60, 35), 8), 0, 100)
    color = np.where(rng.random(n) < 0.7, np.where(y == "yes", "red", "blue"), "green")
    return pd.DataFrame({"age": age.round(1), "color": color, "y": y})


def tiny_spec(schema: Schema, hidden: tuple[int, ...] = (16,), latent: int = 4) -> DecoderSpec:
    return VAEConfig(latent_dim=latent, hidden=hidden).decoder_spec(TableEncoder(schema).layout())


def vae_fams(spec: DecoderSpec) -> dict[str, dict]:
    """A federation accepting the dp-vae family with ``spec``."""
    return {"dp-vae/1": spec.to_dict()}


@functools.lru_cache(maxsize=64)
def honest_claim(epsilon: float, delta: float) -> PrivacyClaim:
    """A DP-SGD claim of exactly ``epsilon`` whose parameters give at most that (the hub re-derives
    ε from them and accepts a claim that is an upper bound)."""
    from fedsynth.privacy.dpsgd import calibrate_noise, epsilon_spent

    q, steps = 0.1, 50
    # RDP's orders stop at 63, so it cannot certify ε below ≈ log(1/δ)/62: use PRV there
    acc = "rdp" if epsilon >= 0.5 else "prv"
    sigma = calibrate_noise(epsilon, delta, q, steps, acc)
    assert epsilon_spent(sigma, q, steps, delta, acc) <= epsilon
    return PrivacyClaim(
        "dp-sgd", epsilon, delta, acc, noise_multiplier=sigma, sample_rate=q, steps=steps, max_grad_norm=1.0
    )


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
    gens = []
    claim = honest_claim(epsilon, delta)
    for k, cls in enumerate(classes or schema.classes):
        torch.manual_seed(seed * 100 + k)
        dec = build_decoder(spec)
        card = make_card("dp-vae/1", spec, schema, cls, claim, decoder_tensors(dec))
        gens.append(VAEGenerator(card, dec, schema, "test"))
    return GeneratorSet(schema, "dp-vae/1", gens)


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
