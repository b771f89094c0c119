"""The image SGDE experiment: the small CNN, its FedAvg through Flower, the scenarios, the grid.

A tiny hand-built image benchmark (12×12, three classes with class-dependent bar patterns) and a
test-only per-class generator family (class mean image + noise, a "legacy" privacy claim) keep
everything on CPU and fast."""

from __future__ import annotations

import contextlib
import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsynth.artifacts.card import GeneratorCard
from fedsynth.data.images import ImageData, image_schema, to_frame, to_images
from fedsynth.data.schema import Schema
from fedsynth.evaluation import image_experiment as ie
from fedsynth.evaluation.cnn import (
    CNNConfig,
    init_params,
    predict_proba_cnn,
    run_cnn_fedavg,
    score_cnn,
    train_cnn,
)
from fedsynth.evaluation.image_plots import grid_size, sample_grid
from fedsynth.evaluation.metrics import METRICS
from fedsynth.evaluation.sgde_experiment import aggregate as tab_aggregate
from fedsynth.generators.base import (
    GeneratorSet,
    RandomStreams,
    class_codes,
    get_family,
    is_federation_family,
    make_card,
    register,
    streams,
)
from fedsynth.generators.federation import FederationReport
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyTarget, default_delta

SHAPE = (1, 12, 12)
CLASSES = ("0", "1", "2")
TINY = CNNConfig(epochs=6, batch_size=32, lr=5e-3, channels=(4, 8), hidden=16, device="cpu", threads=1)


def _images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 3, size=n)
    x = rng.normal(40, 25, size=(n, *SHAPE))
    for i, c in enumerate(y):
        k = int(rng.integers(2, 10))
        if c == 0:
            x[i, 0, k, :] += 180  # horizontal bar
        elif c == 1:
            x[i, 0, :, k] += 180  # vertical bar
        else:
            x[i, 0, np.arange(12), np.arange(12)] += 180  # diagonal
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def tiny_data(n_train: int = 480, n_test: int = 300, seed: int = 0) -> ImageData:
    rng = np.random.default_rng(seed)
    schema = image_schema(SHAPE, CLASSES)
    tx, ty = _images(n_train, rng)
    vx, vy = _images(n_test, rng)
    return ImageData("tiny", schema, tx, ty, vx, vy, ("horizontal", "vertical", "diagonal"))


# ---------------------------------------------------------------------------- a test-only family


@dataclass
class _Spec:
    noise: float = 30.0

    def to_dict(self) -> dict[str, Any]:
        return {"noise": self.noise}


class MeanImageGenerator:
    """Class mean image + Gaussian noise (not DP: a stand-in for the tests only)."""

    def __init__(self, card: GeneratorCard, mean: np.ndarray, schema: Schema, noise: float) -> None:
        self.card, self.mean, self.schema, self.noise = card, mean, schema, noise
        self.source = "local"

    def sample(self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0) -> pd.DataFrame:
        rng = streams(seed).numpy
        x = self.mean[None] + rng.normal(0, self.noise, size=(n, *self.mean.shape))
        img = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return to_frame(img, [self.card.class_label] * n, self.schema)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.astype(np.float32)}


class MeanImageFamily:
    kind = "test-mean-image/1"
    name = "test-mean-image"
    fits = 0

    def default_config(self, dataset: str | None = None) -> Any:
        return _Spec()

    def spec_for(self, schema: Schema, config: Any) -> _Spec:
        return config or _Spec()

    def spec_from_dict(self, d: Any, schema: Schema) -> _Spec:
        return _Spec(float(d["noise"]))

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Any:
        raise NotImplementedError

    def fit(
        self,
        df: pd.DataFrame,
        schema: Schema,
        target: PrivacyTarget,
        config: Any = None,
        *,
        seed: int = 0,
        spec: Any = None,
        on_fit: Any = None,
        strict: bool = False,
    ) -> GeneratorSet:
        type(self).fits += 1
        spec = spec or self.spec_for(schema, config)
        x, labels = to_images(df, schema)
        gens = []
        for c in schema.classes:
            sel = x[labels == c]
            if len(sel) == 0:
                continue
            mean = sel.astype(np.float64).mean(axis=0)
            t = {"mean": mean.astype(np.float32)}
            claim = PrivacyClaim("legacy", target.epsilon, target.delta or 1e-5, "none")
            card = make_card(self.kind, spec, schema, c, claim, t)
            gens.append(MeanImageGenerator(card, mean, schema, spec.noise))
        return GeneratorSet(schema, self.kind, gens)  # type: ignore[arg-type]

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> Any:
        raise NotImplementedError


class JointMeanGenerator:
    """A joint model (card without a class label): the class means of every class, one card."""

    def __init__(self, card: GeneratorCard, means: np.ndarray, schema: Schema, noise: float) -> None:
        self.card, self.means, self.schema, self.noise = card, means, schema, noise
        self.source = "local"

    def sample(self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0) -> pd.DataFrame:
        rng = streams(seed).numpy
        codes = class_codes(self.schema, n, condition, rng)
        x = self.means[codes] + rng.normal(0, self.noise, size=(n, *self.means.shape[1:]))
        img = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return to_frame(img, np.asarray(self.schema.classes)[codes], self.schema)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"means": self.means.astype(np.float32)}


class FedMeanImageFamily(MeanImageFamily):
    """A federation-level stand-in: one joint generator over all silos' images (fitted by the
    monkeypatched ``fit_federation`` below, not by a secure-sum run)."""

    kind = "test-fed-mean-image/1"
    name = "test-fed-mean-image"
    scope = "federation"

    def joint(self, frames: list[pd.DataFrame], schema: Schema, target: PrivacyTarget) -> GeneratorSet:
        x, labels = to_images(pd.concat(frames, ignore_index=True), schema)
        means = np.stack([x[labels == c].astype(np.float64).mean(axis=0) for c in schema.classes])
        t = {"means": means.astype(np.float32)}
        assert target.delta is not None
        claim = PrivacyClaim("legacy", target.epsilon, target.delta, "none")
        card = make_card(self.kind, _Spec(), schema, None, claim, t, scope="federation")
        return GeneratorSet(schema, self.kind, [JointMeanGenerator(card, means, schema, 30.0)])  # type: ignore[list-item]


FAMILY = MeanImageFamily()
FED_FAMILY = FedMeanImageFamily()
with contextlib.suppress(ValueError):  # already registered (module imported twice)
    register(FAMILY)  # type: ignore[arg-type]
with contextlib.suppress(ValueError):
    register(FED_FAMILY)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- CNN


def test_cnn_learns_and_is_deterministic() -> None:
    d = tiny_data()
    p1 = train_cnn(d.train_x, d.train_y, 3, TINY, seed=3)
    p2 = train_cnn(d.train_x, d.train_y, 3, TINY, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(p1, p2, strict=True))
    assert all(a.dtype == np.float32 for a in p1)
    m = score_cnn(p1, d.test_x, d.test_y, 3)
    assert m["accuracy"] > 85.0  # chance is 33 %
    proba = predict_proba_cnn(p1, d.test_x)
    assert proba.shape == (len(d.test_x), 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # a different seed gives a different model; init= continues from given parameters
    p3 = train_cnn(d.train_x, d.train_y, 3, TINY, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(p1, p3, strict=True))
    p4 = train_cnn(
        d.train_x[:50], d.train_y[:50], 3, CNNConfig(**{**TINY.__dict__, "epochs": 1}), seed=0, init=p1
    )
    assert score_cnn(p4, d.test_x, d.test_y, 3)["accuracy"] > 70.0
    # the global torch stream is untouched
    import torch

    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    train_cnn(d.train_x[:20], d.train_y[:20], 3, TINY, seed=1)
    assert torch.equal(a, torch.rand(1))


def test_cnn_refuses_bad_input() -> None:
    d = tiny_data(60, 10)
    with pytest.raises(ValueError):
        train_cnn(d.train_x.astype(np.float32), d.train_y, 3, TINY)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        train_cnn(d.train_x, d.train_y + 5, 3, TINY)
    p = init_params(SHAPE, 3, TINY)
    with pytest.raises(ValueError):
        predict_proba_cnn(p, np.zeros((2, 1, 16, 16), dtype=np.uint8))


def test_fedavg_through_flower_improves_and_stops() -> None:
    d = tiny_data(600, 300)
    parts = np.array_split(np.arange(600), 5)
    silos = [(d.train_x[p], d.train_y[p]) for p in parts]
    cfg = TINY
    res = run_cnn_fedavg(silos, 3, cfg, local_epochs=2, max_rounds=12, patience=2, seed=0)
    assert 1 <= res.best_round <= res.rounds <= 12
    assert res.history[res.best_round - 1] == max(res.history)
    assert max(res.history) > res.history[0] + 10  # rounds improve the global model
    assert res.rounds == 12 or res.rounds - res.best_round == 2  # stopped by patience
    n_params = sum(p.size for p in init_params(SHAPE, 3, cfg))
    assert res.bytes_per_client_per_round == 2 * 4 * n_params
    assert len(res.seconds_per_round) == res.rounds
    assert score_cnn(res.params, d.test_x, d.test_y, 3)["accuracy"] > 80.0


# ---------------------------------------------------------------------------- the experiment


def _cfg(**kw: Any) -> ie.ImageSGDEConfig:
    base: dict[str, Any] = dict(
        silos=4,
        fraction=0.25,
        generator=FAMILY.kind,
        synthetic_per_class=40,
        eval_silos=2,
        cnn=TINY,
        device="cpu",
        pooled_epochs=3,
        fedavg_max_rounds=4,
        fedavg_patience=2,
    )
    base.update(kw)
    return ie.ImageSGDEConfig(**base)


def test_run_image_seed_every_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    d = tiny_data()
    calls: list[int] = []
    real = ie.train_cnn

    def counting(x: np.ndarray, *a: Any, **k: Any) -> list[np.ndarray]:
        calls.append(id(x))
        return real(x, *a, **k)

    monkeypatch.setattr(ie, "train_cnn", counting)
    sampled: list[int] = []
    syn_ids: list[int] = []
    real_sample = ie.sample_synthetic

    def counting_sample(*a: Any, **k: Any) -> tuple[np.ndarray, np.ndarray]:
        out = real_sample(*a, **k)
        sampled.append(len(out[0]))
        syn_ids.append(id(out[0]))
        return out

    monkeypatch.setattr(ie, "sample_synthetic", counting_sample)
    before = FAMILY.fits
    progress: list[tuple[str, int, int]] = []
    res = ie.run_image_seed(d, _cfg(), seed=0, progress=lambda s, i, n: progress.append((s, i, n)))
    assert FAMILY.fits - before == 4  # every silo trains generators
    assert sampled == [3 * 40]  # one synthetic sample per seed, exactly per_class per class
    assert res["synthetic_images"] == 120 and res["synthetic_trained_once"]
    assert calls.count(syn_ids[0]) == 1  # the synthetic-only CNN is trained once for both silos
    assert set(res["scenarios"]) == set(ie.SCENARIOS)
    for sc, ev in res["scenarios"].items():
        assert set(ev) == set(ie.EVALS), sc
        for e in ie.EVALS:
            assert set(ev[e]) == set(METRICS)
            assert all(math.isfinite(v) and 0 <= v <= 100 for v in ev[e].values()), (sc, e, ev[e])
    te = res["scenarios"]
    assert te["pooled_real"]["test_eval"]["accuracy"] > 80.0
    assert te["synthetic"]["test_eval"]["accuracy"] > 60.0  # mean images of bars: learnable
    assert res["eval_silos"] == 2 and res["silos"] == 4
    assert res["generators"] == 4 * 3 and res["family"] == FAMILY.kind and res["scope"] == "silo"
    assert res["epsilon_spent_max"] == pytest.approx(1.5)
    assert res["artifact_bytes_per_silo"] > 0
    assert len(res["lps_recipes"]) == 2 and set(res["lps_recipes"]) <= set(ie.RECIPES)
    assert all(set(v) == set(ie.RECIPES) for v in res["lps_validation"])
    assert 1 <= res["fedavg_rounds"] <= 4 and res["fedavg_bytes_per_client_per_round"] > 0
    t = res["timing"]
    for k in ("generators_total_s", "generators_per_silo_s", "fedavg_s", "evaluation_s", "pooled_s"):
        assert t[k] >= 0
    assert len(t["generators_silo_s"]) == 4
    assert {s for s, _, _ in progress} >= {"generators", "synthetic", "evaluation"}
    json.dumps(res, allow_nan=False)  # plain JSON


def test_run_image_seed_test_eval_only_and_one_recipe() -> None:
    d = tiny_data(240, 120)
    res = ie.run_image_seed(d, _cfg(local_eval=False, lps_recipes=("finetune",), eval_silos=1), seed=1)
    for sc in ie.SCENARIOS:
        assert set(res["scenarios"][sc]) == {"test_eval"}
    assert res["lps_recipes"] == ["finetune"]
    means, _sds = ie.aggregate([res])
    assert set(means["local"]) == {"test_eval"}


def test_run_image_seed_federation_family(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A federation-level family: one fit over every silo's frame (δ from the total), one joint
    generator in the pool, the round report in the result; its sample grid draws every class."""
    seen: dict[str, Any] = {}

    def fake_fit_federation(
        family: Any, frames: Any, schema: Schema, target: PrivacyTarget, config: Any = None, *, seed: int = 0
    ) -> tuple[GeneratorSet, FederationReport]:
        seen["silos"], seen["delta"] = len(frames), target.delta
        return family.joint(list(frames), schema, target), FederationReport(
            len(frames), list(range(len(frames))), 0.0
        )

    monkeypatch.setattr(ie, "fit_federation", fake_fit_federation)
    assert is_federation_family(FED_FAMILY)  # type: ignore[arg-type]
    d = tiny_data(240, 120)
    cfg = _cfg(generator=FED_FAMILY.kind, local_eval=False, eval_silos=1, lps_recipes=("finetune",))
    res = ie.run_image_seed(d, cfg, seed=0)
    assert seen == {"silos": 4, "delta": default_delta(240)}
    assert res["scope"] == "federation" and res["generators"] == 1 and res["round"]["silos"] == 4
    assert "generators_silo_s" not in res["timing"]
    assert all(math.isfinite(v) for v in res["scenarios"]["synthetic"]["test_eval"].values())
    gset = FED_FAMILY.joint([d.frame()], d.schema, PrivacyTarget(1.0, 1e-5))
    out = sample_grid(gset, d.schema, tmp_path / "fed.png", "federation", per_class=4)
    assert _png_size(out) == grid_size(d.schema, 3, 4)


def test_aggregate_layout_matches_tabular() -> None:
    def run(v: float) -> dict[str, Any]:
        return {"scenarios": {sc: {e: dict.fromkeys(METRICS, v) for e in ie.EVALS} for sc in ie.SCENARIOS}}

    runs = [run(50.0), run(70.0)]
    means, sds = ie.aggregate(runs)
    assert means["local"]["test_eval"]["accuracy"] == pytest.approx(60.0)
    assert sds["local"]["test_eval"]["accuracy"] == pytest.approx(math.sqrt(200.0))
    # the same layout as the tabular experiment's aggregate (on its own scenario names)
    from fedsynth.evaluation.sgde_experiment import SCENARIOS as TAB

    tab_runs = [{"scenarios": {sc: r["scenarios"]["local"] for sc in TAB}} for r in runs]
    tm, ts = tab_aggregate(tab_runs)
    assert tm["local"] == means["local"] and ts["local"] == sds["local"]
    # and sgde_bars reads it
    from fedsynth.evaluation.plots import sgde_summary

    names, summary, seeds = sgde_summary({"scenarios": means, "scenarios_sd": sds, "seeds": 2})
    assert names == list(ie.SCENARIOS) and seeds == 2
    assert summary["pooled_real"]["auc"] == (pytest.approx(60.0), pytest.approx(math.sqrt(200.0)))


# ---------------------------------------------------------------------------- the sample grid


def _png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    assert raw[12:16] == b"IHDR" and zlib.crc32(raw[12:29]) == struct.unpack(">I", raw[29:33])[0]
    w, h = struct.unpack(">II", raw[16:24])
    return int(w), int(h)


def test_sample_grid_png(tmp_path: Path) -> None:
    d = tiny_data(120, 10)
    gset = FAMILY.fit(d.frame(), d.schema, PrivacyTarget(1.0))
    out = sample_grid(
        gset, d.schema, tmp_path / "grid.png", "tiny: one silo", per_class=5, class_names=d.class_names
    )
    assert out == tmp_path / "grid.png" and out.exists()
    assert _png_size(out) == grid_size(d.schema, 3, 5)
    # a pool (or a plain generator list, e.g. a federation-level set) works the same
    pool = GeneratorPool(d.schema, gset.generators[:2])
    out2 = sample_grid(pool, d.schema, tmp_path / "sub" / "pool.png", "two classes", per_class=3)
    assert _png_size(out2) == grid_size(d.schema, 2, 3)
    sample_grid(gset.generators, d.schema, tmp_path / "list.png", "list")
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError):
        sample_grid(gset, d.schema, tmp_path / "x.png", "bad", class_names=["a"])


def test_registered_family_resolves() -> None:
    assert get_family(FAMILY.kind) is FAMILY
