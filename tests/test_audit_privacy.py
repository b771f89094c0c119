"""`fedsynth audit`: it must pass DP generators and clearly fail a memorising, non-private one."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.audit.report import run_audit, train_generators
from fedsynth.audit.stats import auc_null_band, eps_lower_bound, one_run_audit, one_run_eps_lower_bound
from fedsynth.data.schema import Column, Schema
from fedsynth.generators.vae.train import VAEConfig

K = 8
SCHEMA = Schema(
    (
        *(Column(f"c{j}", "categorical", categories=tuple("abcde")) for j in range(K)),
        Column("age", "continuous", lower=17, upper=90, integer=True),
        Column("y", "categorical", categories=("neg", "pos")),
    ),
    "y",
)


def toy(n: int, seed: int) -> pd.DataFrame:
    """Mostly-categorical rows with a latent cluster driving both features and label: every row is
    (almost surely) unique, so a generator that memorises shows it."""
    rng = np.random.default_rng(seed)
    lat = rng.integers(0, 3, n)
    cats = np.array(list("abcde"))
    d: dict[str, object] = {
        f"c{j}": np.where(rng.random(n) < 0.5, cats[lat], rng.choice(cats, n)) for j in range(K)
    }
    d["age"] = np.clip(np.round(rng.normal(40, 12, n)), 17, 90)
    df = pd.DataFrame(d)
    df["y"] = np.where((lat == 0) ^ (rng.random(n) < 0.2), "pos", "neg")
    return df


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize(("r", "v", "want"), [(100, 100, 3.49), (100, 90, 1.63), (1000, 800, 1.25)])
def test_one_run_bound_matches_paper_examples(r: int, v: int, want: float) -> None:
    assert one_run_eps_lower_bound(r, v) == pytest.approx(want, abs=0.01)


def test_one_run_bound_is_zero_for_chance() -> None:
    assert one_run_eps_lower_bound(100, 50) == 0.0
    rng = np.random.default_rng(0)
    inc = rng.random(1000) < 0.5
    assert one_run_audit(rng.random(1000), inc).eps_lower_bound < 0.3
    # A perfect guesser: scores equal to the bits.
    res = one_run_audit(inc.astype(float) + rng.random(1000) * 0.1, inc)
    assert res.eps_lower_bound > 3.0 and res.correct == res.guesses


def test_auc_null_band_matches_design_values() -> None:
    for n, half in [(100, 0.080), (500, 0.036), (1000, 0.025)]:
        lo, hi = auc_null_band(n, n)
        assert hi - 0.5 == pytest.approx(half, abs=1.5e-3) and 0.5 - lo == pytest.approx(half, abs=1.5e-3)


def test_eps_lower_bound_is_valid_under_the_null_and_detects_leaks() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(1000), np.zeros(1000)]
    # No signal: the bound must be (almost always) 0.
    assert eps_lower_bound(labels, rng.random(2000), 1e-5) == 0.0
    # Members score higher by a big margin: TPR ≫ e^1·FPR.
    scores = np.r_[rng.normal(3, 1, 1000), rng.normal(0, 1, 1000)]
    assert eps_lower_bound(labels, scores, 1e-5) > 1.5


# ------------------------------------------------------------------------------ end to end
def _cfg_dp() -> VAEConfig:
    return VAEConfig(hidden=(32,), latent_dim=4, epochs=5, batch_size=32, max_steps=150, min_steps=60)


def test_audit_passes_dp_generators_and_writes_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    train, holdout = toy(400, 1), toy(400, 2)
    gens = train_generators(train, SCHEMA, _cfg_dp(), epsilon=1.0, delta=1e-5, seed=0)
    rep = run_audit(SCHEMA, gens, train, holdout, config=_cfg_dp(), shadows=2, canaries=200, n_targets=40)
    assert rep.claimed_epsilon is not None and rep.claimed_epsilon <= 1.0
    assert rep.passed, rep.failures()
    names = [a.name for a in rep.membership.attacks]
    assert names == ["domias-knn", "domias-kde", "shadow-outliers"]
    assert rep.canary is not None and rep.canary.result.m == 200
    assert rep.canary.claimed_epsilon is not None and rep.canary.claimed_epsilon <= 1.0 + 1e-9
    d = rep.to_dict()
    json.dumps(d)  # serialisable
    assert d["passed"] is True and len(d["membership"]["attacks"][0]["roc"]["fpr"]) > 2
    png = rep.plot_roc(tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audit_fails_a_memorising_non_private_generator() -> None:
    train, holdout = toy(240, 3), toy(240, 4)
    cfg = VAEConfig(
        hidden=(96, 96),
        latent_dim=8,
        beta=0.1,
        epochs=10_000,
        batch_size=32,
        lr=3e-3,
        max_steps=1200,
        min_steps=1200,
    )
    gens = train_generators(train, SCHEMA, cfg, epsilon=None, delta=None, seed=0)
    rep = run_audit(SCHEMA, gens, train, holdout, config=cfg, shadows=0, canaries=0)
    assert rep.claimed_epsilon is None
    assert not rep.passed
    knn = rep.membership.attacks[0]
    # Well outside the null band, not just over its edge.
    assert knn.auc > knn.null_band[1] + 0.1, knn
    assert knn.eps_lower_bound > 0.2  # a 95 % lower bound: this leak is not compatible with ε ≈ 0
    assert rep.membership.dcr.share > rep.membership.dcr.band[1]
    assert any("above the null band" in f for f in rep.failures())
    assert math.isinf(max(g.card.epsilon for g in gens))
