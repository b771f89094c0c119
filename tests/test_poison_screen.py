"""Pull-time screening of a generator pool: poisoned generators are dropped with a reason, honest
ones are kept."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.artifacts.card import ArtifactError, sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.audit import attacks
from fedsynth.audit.poison import PoolScreener, sample_generator, screen_pool
from fedsynth.audit.report import train_generators
from fedsynth.data.schema import Column, Schema
from fedsynth.generators.base import Generator, check_output
from fedsynth.generators.io import from_artifact, to_artifact
from fedsynth.generators.pool import GeneratorPool
from fedsynth.generators.vae.train import VAEConfig

CATS = ("a", "b", "c", "d", "r")  # "r" is rare in real data: where a trigger can hide
SCHEMA = Schema(
    (
        *(Column(f"c{j}", "categorical", categories=CATS) for j in range(4)),
        Column("x1", "continuous", lower=0.0, upper=1.0),
        Column("x2", "continuous", lower=0.0, upper=1.0),
        Column("x3", "continuous", lower=0.0, upper=1.0),
        Column("y", "categorical", categories=("neg", "pos")),
    ),
    "y",
)
N_SILOS = 6


def toy(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    p_pos, p_neg = [0.55, 0.2, 0.15, 0.098, 0.002], [0.1, 0.2, 0.25, 0.448, 0.002]
    d: dict[str, object] = {}
    for j in range(4):
        d[f"c{j}"] = np.where(y, rng.choice(CATS, n, p=p_pos), rng.choice(CATS, n, p=p_neg))
    # Three continuous columns with clearly different shapes (a swapped mapping is visible).
    d["x1"] = np.clip(rng.normal(np.where(y, 0.15, 0.25), 0.05), 0, 1)
    d["x2"] = np.clip(rng.normal(0.5, 0.05, n), 0, 1)
    d["x3"] = np.clip(rng.beta(16, 3, n), 0, 1)
    df = pd.DataFrame(d)
    df["y"] = np.where(y, "pos", "neg")
    return df


CFG = VAEConfig(hidden=(32,), latent_dim=4, epochs=30, batch_size=32, max_steps=250, min_steps=100, lr=5e-3)


@pytest.fixture(scope="module")
def pool() -> list[list[Generator]]:
    torch.set_num_threads(1)
    return [
        train_generators(toy(300, 10 + s), SCHEMA, CFG, epsilon=4.0, delta=1e-5, seed=s)
        for s in range(N_SILOS)
    ]


@pytest.fixture(scope="module")
def validation() -> pd.DataFrame:
    return toy(600, 99)


def _flat(sets: list[list[Generator]]) -> list[Generator]:
    return [g for s in sets for g in s]


def test_clean_pool_keeps_every_generator(pool, validation) -> None:  # type: ignore[no-untyped-def]
    res = screen_pool(_flat(pool), SCHEMA, validation, n_samples=800)
    assert res.flagged == [], [s.reasons for s in res.scores if s.flagged]
    assert len(res.kept) == 2 * N_SILOS and not res.dropped
    d = res.to_dict()
    assert d["n_dropped"] == 0 and len(d["generators"]) == 2 * N_SILOS


def _poisoned(pool: list[list[Generator]], attack: str) -> tuple[list[Generator], list[bool]]:
    gens, bad = [], []
    trigger = {"c0": "r", "c1": "r"}
    for i, s in enumerate(pool):
        for g in s:
            if i == 0:  # silo 0 is malicious
                other = "neg" if g.card.class_label == "pos" else "pos"
                if attack == "label_flip":
                    g = attacks.label_flip(g, other)
                elif attack == "noise":
                    g = attacks.noise_decoder(g, seed=1)
                elif attack == "permuted":
                    g = attacks.permuted_columns(g, seed=3)
                elif attack == "backdoor" and g.card.class_label == "pos":
                    g = attacks.backdoor(g, SCHEMA, trigger, rate=0.08, steps=300)
                else:
                    gens.append(g)
                    bad.append(False)
                    continue
                gens.append(g)
                bad.append(True)
            else:
                gens.append(g)
                bad.append(False)
    return gens, bad


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("label_flip", "label consistency"),
        ("noise", "marginals far"),
        ("permuted", "matches own"),
        ("backdoor", "rare pattern c0=r & c1=r"),
    ],
)
def test_poisoned_generators_are_dropped_with_reason(pool, validation, attack: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    gens, bad = _poisoned(pool, attack)
    res = screen_pool(gens, SCHEMA, validation, n_samples=800)
    flagged = np.array([s.flagged for s in res.scores])
    assert flagged[np.array(bad)].all(), [s.reasons for s in res.scores]
    assert not flagged[~np.array(bad)].any(), [(s.index, s.reasons) for s in res.scores if s.flagged]
    assert all(any(reason in r for r in s.reasons) for s, b in zip(res.scores, bad, strict=True) if b)
    assert len(res.kept) == len(gens) - sum(bad)
    assert all(g not in res.kept for g, b in zip(gens, bad, strict=True) if b)


def test_attacked_artifacts_are_still_valid_decoders(pool) -> None:  # type: ignore[no-untyped-def]
    g = pool[0][1]
    for bad in (attacks.noise_decoder(g), attacks.permuted_columns(g), attacks.label_flip(g, "neg")):
        card, w = to_artifact(bad)  # refuses a card whose sha256 is not of these tensors
        assert from_artifact(card, w, SCHEMA).card == bad.card
        assert bad.decoder.spec == g.decoder.spec  # type: ignore[attr-defined]
    bd = attacks.backdoor(g, SCHEMA, {"c0": "r", "c1": "r"}, rate=0.08, steps=300)
    rows = sample_generator(bd, SCHEMA, 4000, seed=5)
    rate = attacks.has_trigger(rows, {"c0": "r", "c1": "r"}).mean()
    # Planted in z₀ > Φ⁻¹(0.92) (8 %); a 32-unit decoder makes the edge soft, so allow some spill.
    assert 0.04 <= rate <= 0.25, rate
    with pytest.raises(ValueError, match="trigger"):
        attacks.backdoor(g, SCHEMA, {"x1": "r"})


def test_screener_hook_filters_a_pool(pool, validation) -> None:  # type: ignore[no-untyped-def]
    gens, bad = _poisoned(pool, "noise")
    hook = PoolScreener(validation, SCHEMA, n_samples=800)
    kept = hook(gens)
    assert hook.last is not None and len(kept) == len(gens) - sum(bad)
    df = GeneratorPool(SCHEMA, kept).sample(200, seed=0)
    assert len(df) == 200
    assert "DROP" in str([c for c in hook.last.table().columns][-1]._cells)


def test_screen_rejects_bad_input(pool, validation) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="empty"):
        screen_pool([], SCHEMA, validation)
    with pytest.raises(ValueError, match="two classes"):
        screen_pool(_flat(pool), SCHEMA, validation[validation.y == "pos"])
    with pytest.raises(ValueError, match="n_samples"):
        screen_pool(_flat(pool), SCHEMA, validation, n_samples=10)


def test_a_generator_that_decodes_to_nan_is_flagged_not_fatal(pool, validation) -> None:  # type: ignore[no-untyped-def]
    """Finite ±1e30 weights overflow to inf − inf = NaN: the screen flags it with the reason."""
    g = copy.deepcopy(pool[0][1])
    with torch.no_grad():
        for p in g.decoder.parameters():
            sign = torch.where(torch.arange(p.numel()) % 2 == 0, 1.0, -1.0).reshape(p.shape)
            p.copy_(sign * 1e30)
    g.card = g.card.replace(weights_sha256=_sha(g))
    card, w = to_artifact(g)
    bad = from_artifact(card, w, SCHEMA, source="nan-weights")  # finite weights: verification passes
    with pytest.raises(ArtifactError, match="not finite"):
        check_output(bad, SCHEMA)
    gens = [*_flat(pool), bad]
    res = screen_pool(gens, SCHEMA, validation, n_samples=800)
    assert res.flagged == [len(gens) - 1] and res.dropped == [bad]
    assert "not finite" in res.scores[-1].reasons[0] and np.isnan(res.scores[-1].pool_distance)
    assert len(res.kept) == 2 * N_SILOS


def _sha(g: Generator) -> str:
    return sha256_bytes(tensors_to_bytes(g.tensors(), g.card.family))
