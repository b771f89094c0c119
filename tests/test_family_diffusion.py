"""The dp-diffusion/1 family: DP fit within ε, artifact round trips, conditioning, refusals,
per-record clipping of grouped rows, and a pool mixed with dp-vae generators."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.artifacts.card import ArtifactError
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.data.schema import validate_frame
from fedsynth.generators import io
from fedsynth.generators.base import SpecError, check_output, get_family, make_card
from fedsynth.generators.diffusion.nets import DenoiserSpec, build_denoiser, expected_tensors
from fedsynth.generators.diffusion.train import DiffusionConfig, GroupGhostClipper, row_losses
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget
from tests.conftest import make_toy

FAST = DiffusionConfig(hidden=(32, 32), epochs=1, min_steps=40, max_steps=40, batch_size=64, t_per_record=2)


@pytest.fixture(scope="module")
def schema():  # the toy schema, module-scoped so the fit below runs once
    from fedsynth.data.schema import Column, Schema

    return Schema(
        (
            Column("age", "continuous", lower=18, upper=90, integer=True),
            Column("income", "continuous", lower=0.0, upper=200.0),
            Column("color", "categorical", categories=("red", "green", "blue")),
            Column("label", "categorical", categories=("no", "yes")),
        ),
        target="label",
    )


@pytest.fixture(scope="module")
def fitted(schema):
    torch.set_num_threads(1)
    return get_family("diffusion").fit(make_toy(300), schema, PrivacyTarget(1.0), FAST, seed=3)


def test_registered_under_kind_and_short_name():
    fam = get_family("diffusion")
    assert fam is get_family("dp-diffusion/1")
    assert fam.kind == "dp-diffusion/1" and fam.name == "diffusion"


def test_fit_within_epsilon_with_a_rederivable_claim(fitted):
    assert len(fitted.generators) == 1
    card = fitted.generators[0].card
    assert card.class_label is None and card.family == "dp-diffusion/1"
    p = card.privacy
    assert p.mechanism == "dp-sgd" and p.noise_multiplier > 0 and p.steps == 40
    assert p.sample_rate == pytest.approx(64 / 300)
    assert p.delta == pytest.approx(3e-4)  # SGDE rule on the whole table (300 rows)
    eps = p.verify()
    assert eps <= 1.0 and eps == pytest.approx(p.epsilon, rel=1e-6) and eps > 0.9
    assert fitted.epsilon == pytest.approx(p.epsilon)
    rep = fitted.reports[0]
    assert rep.class_label is None and rep.n_rows == 300 and np.isfinite(rep.final_loss)


def test_sample_columns_classes_and_condition(fitted, schema):
    g = fitted.generators[0]
    for c in schema.classes:
        df = g.sample(64, condition=c, seed=1)
        assert list(df.columns) == ["age", "income", "color", "label"]
        assert len(df) == 64 and (df["label"] == c).all()
        validate_frame(df, schema)
        assert not df.isna().any().any()
    both = g.sample(400, seed=2)
    assert set(both["label"]) == set(schema.classes)
    with pytest.raises(ValueError):
        g.sample(4, condition="maybe")
    check_output(g, schema)


def test_same_seed_same_rows_other_seed_other_rows(fitted):
    g = fitted.generators[0]
    a, b, c = g.sample(50, seed=7), g.sample(50, seed=7), g.sample(50, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_sampling_5000_rows_is_fast(fitted):
    g = fitted.generators[0]
    t0 = time.perf_counter()
    df = g.sample(5000, seed=0)
    assert len(df) == 5000
    assert time.perf_counter() - t0 < 5.0


def test_artifact_round_trip_and_set_on_disk(fitted, schema, tmp_path):
    g = fitted.generators[0]
    card_b, w = io.to_artifact(g)
    back = io.from_artifact(card_b, w, schema, check=True, source="peer")
    pd.testing.assert_frame_equal(
        back.sample(80, condition="yes", seed=5), g.sample(80, condition="yes", seed=5)
    )
    fitted.save(str(tmp_path / "set"))
    set_schema, loaded = io.read_generator_set(tmp_path / "set", schema=schema)
    assert set_schema.hash() == schema.hash() and len(loaded) == 1
    pd.testing.assert_frame_equal(loaded[0].sample(80, seed=9), g.sample(80, seed=9))
    required = {"dp-diffusion/1": io.normalise_spec("dp-diffusion/1", g.card.spec, schema)}
    io.from_artifact(card_b, w, schema, required=required)
    other = get_family("diffusion").spec_for(schema, DiffusionConfig(hidden=(16,))).to_dict()
    with pytest.raises(ArtifactError, match="differs"):
        io.from_artifact(card_b, w, schema, required={"dp-diffusion/1": other})


def _reissue(g, schema, tensors, spec=None):
    fam = get_family("diffusion")
    spec = spec if spec is not None else fam.spec_from_dict(g.card.spec, schema)
    card = make_card("dp-diffusion/1", spec, schema, None, g.card.privacy, tensors)
    return card, tensors_to_bytes(tensors, "dp-diffusion/1")


def test_tensors_that_do_not_fit_the_spec_are_refused(fitted, schema):
    g = fitted.generators[0]
    t = g.tensors()
    bad_shape = {**t, "net.0.weight": np.zeros((t["net.0.weight"].shape[0], 3), np.float32)}
    missing = {k: v for k, v in t.items() if k != "net.2.bias"}
    extra = {**t, "net.9.weight": np.zeros((2, 2), np.float32)}
    for tensors in (bad_shape, missing, extra):
        card, w = _reissue(g, schema, tensors)
        with pytest.raises(ArtifactError):
            io.from_artifact(card, w, schema)
    card_b, w = io.to_artifact(g)  # the genuine card with tampered bytes
    with pytest.raises(ArtifactError):
        io.from_artifact(card_b, tensors_to_bytes(bad_shape, "dp-diffusion/1"), schema)


def test_a_card_with_another_familys_spec_or_a_class_label_is_refused(fitted, schema):
    g = fitted.generators[0]
    vae_spec = get_family("vae").spec_for(schema, None)
    card = make_card("dp-diffusion/1", vae_spec, schema, None, g.card.privacy, g.tensors())
    with pytest.raises(ArtifactError):
        io.from_artifact(card.to_json().encode(), tensors_to_bytes(g.tensors(), "x"), schema)
    labelled = g.card.replace(class_label="yes")
    with pytest.raises(ArtifactError, match="class_label"):
        io.from_artifact(labelled, io.to_artifact(g)[1], schema)


def test_weights_that_decode_to_non_finite_output_are_refused(fitted, schema):
    g = fitted.generators[0]
    huge = {k: np.full_like(v, 1e30) for k, v in g.tensors().items()}
    card, w = _reissue(g, schema, huge)
    loaded = io.from_artifact(card, w, schema)
    with pytest.raises(ArtifactError):
        loaded.sample(8, condition="no")
    with pytest.raises(ArtifactError):
        io.from_artifact(card, w, schema, check=True)


def test_spec_is_checked_against_the_schema_and_bounded(schema):
    fam = get_family("diffusion")
    d = fam.spec_for(schema, None).to_dict()
    assert fam.spec_from_dict(d, schema).to_dict() == d
    for bad in (
        {**d, "n_classes": 3},
        {**d, "layout": d["layout"][:-1]},
        {**d, "hidden": [10**6]},
        {**d, "schedule": "quadratic"},
        {**d, "sample_steps": d["timesteps"] + 1},
        {**d, "timesteps": "many"},
        {k: v for k, v in d.items() if k != "timesteps"},
        [1, 2],
    ):
        with pytest.raises(SpecError):
            fam.spec_from_dict(bad, schema)


def test_expected_tensors_is_the_state_dict_without_building_it(schema):
    spec = get_family("diffusion").spec_for(schema, DiffusionConfig(hidden=(8, 16, 4)))
    assert expected_tensors(spec) == {k: tuple(v.shape) for k, v in build_denoiser(spec).state_dict().items()}


def test_group_clipping_matches_per_record_gradients():
    spec = DenoiserSpec(hidden=(8, 8), layout=(("a", "continuous", 1), ("b", "categorical", 3)), n_classes=2)
    model = build_denoiser(spec)
    gen = torch.Generator().manual_seed(0)
    b, k, c_max = 5, 3, 0.5
    x0 = torch.tensor(
        [[0.3, 1, -1, -1], [-0.8, -1, 1, -1], [0.1, -1, -1, 1], [0.9, 1, -1, -1], [0.0, -1, 1, -1]]
    )
    c = torch.tensor([0, 1, 1, 0, 1])
    sel = torch.arange(b).repeat_interleave(k)
    t = torch.randint(1, spec.timesteps + 1, (b * k,), generator=gen)
    eps = torch.randn(b * k, 4, generator=gen)
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    norms = []
    for i in range(b):  # brute force: one record at a time
        rows = sel == i
        model.zero_grad()
        row_losses(model, x0[sel][rows], c[sel][rows], t[rows], eps[rows]).mean().backward()
        g = {n: p.grad.clone() for n, p in model.named_parameters()}
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        norms.append(float(norm))
        for n in want:
            want[n] += g[n] * min(1.0, c_max / (float(norm) + 1e-6))
    clipper = GroupGhostClipper(model, c_max)
    per_record = row_losses(model, x0[sel], c[sel], t, eps).view(b, k).mean(1)
    got_norms = clipper.clip_and_sum(per_record, k)
    clipper.remove()
    assert np.allclose(got_norms.numpy(), norms, rtol=1e-4)
    assert max(norms) > c_max  # clipping was active for some record
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, want[n], atol=1e-5), n


def test_mixed_pool_with_vae_generators_is_class_balanced(fitted, schema):
    vae = get_family("vae")
    from fedsynth.generators.vae.train import VAEConfig

    vset = vae.fit(
        make_toy(200, seed=1), schema, PrivacyTarget(1.0), VAEConfig(min_steps=5, max_steps=5), seed=0
    )
    pool = GeneratorPool(schema, [*fitted.as_loaded("a"), *vset.as_loaded("b")])
    assert pool.families == ["dp-diffusion/1", "dp-vae/1"]
    df = pool.sample(2000, seed=4)
    assert len(df) == 2000 and list(df.columns) == ["age", "income", "color", "label"]
    validate_frame(df, schema)
    share = (df["label"] == "yes").mean()
    assert 0.45 < share < 0.55
