"""The pool screen on ordinary pools (issue 12, defects 3 and 4): schemas without categorical
features, never silently losing a class, and NaN-decoding generators refused at push."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.artifacts.card import sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.audit import attacks
from fedsynth.audit.poison import PoolScreener, screen_pool
from fedsynth.audit.training import train_generators
from fedsynth.cli.hub import print_screen
from fedsynth.cli.tables import make_console
from fedsynth.data.schema import Column, Schema
from fedsynth.generators.base import Generator
from fedsynth.generators.vae.train import VAEConfig

CONT = Schema(
    (
        Column("x1", "continuous", lower=0.0, upper=1.0),
        Column("x2", "continuous", lower=0.0, upper=1.0),
        Column("x3", "continuous", lower=0.0, upper=1.0),
        Column("y", "categorical", categories=("neg", "pos")),
    ),
    "y",
)
CFG = VAEConfig(hidden=(32,), latent_dim=4, epochs=30, batch_size=32, max_steps=200, min_steps=100, lr=5e-3)


def toy(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    return pd.DataFrame(
        {
            "x1": np.clip(rng.normal(np.where(y, 0.3, 0.6), 0.08), 0, 1),
            "x2": np.clip(rng.normal(0.5, 0.05, n), 0, 1),
            "x3": np.clip(rng.beta(16, 3, n), 0, 1),
            "y": np.where(y, "pos", "neg"),
        }
    )


@pytest.fixture(scope="module")
def pool() -> list[Generator]:
    torch.set_num_threads(1)
    return [
        g
        for s in range(4)
        for g in train_generators(toy(300, 10 + s), CONT, CFG, epsilon=4.0, delta=1e-5, seed=s)
    ]


def _nan_decoder(g: Generator) -> Generator:
    """Finite ±1e30 weights: inf − inf = NaN rows; the card is re-hashed so it verifies."""
    bad = copy.deepcopy(g)
    with torch.no_grad():
        for p in bad.decoder.parameters():  # type: ignore[attr-defined]
            sign = torch.where(torch.arange(p.numel()) % 2 == 0, 1.0, -1.0).reshape(p.shape)
            p.copy_(sign * 1e30)
    bad.card = bad.card.replace(weights_sha256=sha256_bytes(tensors_to_bytes(bad.tensors(), bad.card.family)))
    return bad


def _all_nan(g: Generator) -> Generator:
    """All-NaN samples (what ±1e30 weights give where softmax outputs meet inf − inf; this
    continuous-only decoder saturates to finite bounds instead, so the output is set directly)."""
    bad = copy.deepcopy(g)

    def sample(n: int, condition: str | None = None, seed: int = 0) -> pd.DataFrame:
        df = g.sample(n, condition=condition, seed=seed)
        df["x1"] = np.nan
        return df

    bad.sample = sample  # type: ignore[method-assign]
    return bad


def test_a_schema_without_categorical_features_is_screened(pool) -> None:  # type: ignore[no-untyped-def]
    """Breast cancer is all continuous: the rare-cell check has no cells (was an IndexError)."""
    res = screen_pool(pool, CONT, toy(400, 99), n_samples=400)
    assert res.flagged == [], [s.reasons for s in res.scores if s.flagged]
    assert len(res.kept) == len(pool) and not res.warnings
    assert all(s.spike_cell == "" and s.cell_spike == 0.0 for s in res.scores)
    noisy = [*pool, attacks.noise_decoder(pool[1], seed=2)]
    res = screen_pool(noisy, CONT, toy(400, 99), n_samples=400)
    assert res.flagged == [len(pool)]


def _pos_only_flagged(pool: list[Generator]) -> list[Generator]:
    """Honest neg generators; the two pos ones replaced by noise decoders (both flagged)."""
    neg = [g for g in pool if g.card.class_label == "neg"]
    pos = [g for g in pool if g.card.class_label == "pos"]
    return [*neg, attacks.noise_decoder(pos[0], seed=1), attacks.noise_decoder(pos[1], seed=2, scale=3.0)]


def test_a_class_is_never_silently_removed(pool) -> None:  # type: ignore[no-untyped-def]
    gens = _pos_only_flagged(pool)
    res = screen_pool(gens, CONT, toy(400, 99), n_samples=400)
    flagged = sorted({s.index for s in res.scores if s.flagged})
    assert flagged == [4, 5]  # both pos generators are suspicious ...
    assert len(res.kept_for_class) == 1  # ... but the least suspicious one is kept, with why
    (i, why) = next(iter(res.kept_for_class.items()))
    assert i in (4, 5) and "class 'pos'" in why and "least suspicious" in why
    assert gens[i] in res.kept and res.flagged == [9 - i]
    assert {g.card.class_label for g in res.kept} == {"neg", "pos"}
    assert res.warnings and "generator #" in res.warnings[0]
    d = res.to_dict()
    assert d["kept_for_class"] == {str(i): why} and d["warnings"] == res.warnings
    assert res.generator_flags == [j == 9 - i for j in range(len(gens))]
    # printed: the verdict says KEEP! and the warning is there, whole
    buf = io.StringIO()
    print_screen(res, make_console(buf))
    text = buf.getvalue()
    assert "KEEP!" in text and "kept although flagged" in text and "warning:" in text
    assert "class 'pos' were flagged" in text.replace("\n", " ")


def test_a_class_no_generator_can_sample_is_reported_missing(pool) -> None:  # type: ignore[no-untyped-def]
    neg = [g for g in pool if g.card.class_label == "neg"]
    pos = [g for g in pool if g.card.class_label == "pos"]
    gens = [*neg, _all_nan(pos[0])]
    res = screen_pool(gens, CONT, toy(400, 99), n_samples=400)
    assert res.flagged == [len(neg)] and not res.kept_for_class  # a NaN generator is never kept
    assert res.missing_classes == ["pos"]
    assert any("class 'pos'" in w and "lacks the class" in w for w in res.warnings)
    assert "non-finite" in res.scores[-1].reasons[0]
    hook = PoolScreener(toy(400, 99), CONT, n_samples=400)
    assert hook(gens) == neg and hook.last is not None and hook.last.missing_classes == ["pos"]


def test_a_nan_decoder_is_refused_at_push_with_the_reason_in_the_audit_log(tmp_path: Path) -> None:
    from fedsynth.exchange.client import HubAdmin, HubClient, HubError
    from tests.conftest_hub import make_set, start_hub, tiny_schema, tiny_spec, vae_fams

    s = tiny_schema()
    spec = tiny_spec(s)
    for hub in start_hub("sqlite", tmp_path):
        adm = HubAdmin(hub.url, hub.admin_token)
        adm.create_federation(
            "f", s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0
        )
        client = HubClient(hub.url, adm.add_silo("f", "silo0"))
        gset = make_set(s, spec, epsilon=0.5, seed=1)
        gset.generators[1] = _nan_decoder(gset.generators[1])
        with pytest.raises(HubError) as e:
            client.push(gset)
        assert e.value.status == 422 and "finite" in e.value.detail
        assert client.list_pool() == [] and client.subscribe() and client.epsilon_spent == 0.0
        refused = [a for a in adm.audit("f") if a["action"] == "push" and a["outcome"] != "ok"]
        assert refused and "finite" in str(refused[0]["detail"])


def test_pull_screen_keeps_every_class_and_warns(tmp_path: Path) -> None:
    """`fedsynth pull --screen-data` on a pool whose only generators are all suspicious (random,
    untrained decoders of one silo): the table keeps both classes and the CLI says why, loudly."""
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.exchange.client import HubAdmin, HubClient
    from tests.conftest_hub import make_set, start_hub, tiny_schema, tiny_spec, vae_fams

    s = tiny_schema()
    spec = tiny_spec(s)
    rng = np.random.default_rng(0)
    y = rng.choice(["no", "yes"], 300)
    own = pd.DataFrame(
        {
            "age": np.clip(rng.normal(np.where(y == "yes", 60, 35), 8), 0, 100).round(1),
            "color": np.where(rng.random(300) < 0.7, np.where(y == "yes", "red", "blue"), "green"),
            "y": y,
        }
    )
    data = tmp_path / "own.csv"
    own.to_csv(data, index=False)
    for hub in start_hub("sqlite", tmp_path):
        adm = HubAdmin(hub.url, hub.admin_token)
        fams = vae_fams(spec)
        adm.create_federation("f", s, fams, max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0)
        token = adm.add_silo("f", "silo0")
        HubClient(hub.url, token).push(make_set(s, spec, epsilon=0.5, seed=3))
        out_csv = tmp_path / "screened.csv"
        args = ["pull", "--hub", hub.url, "--token", token, "--rows", "60", "--out", str(out_csv)]
        res = CliRunner().invoke(app, [*args, "--screen-data", str(data)])
        assert res.exit_code == 0, res.output
        text = " ".join(res.output.split())
        assert "KEEP!" in text and "warning:" in text and "kept although flagged" in text
        assert set(pd.read_csv(out_csv)["y"]) == {"no", "yes"}
