"""The dp-gan/1 family: privacy accounting of the discriminator, the conditional generator, the
artifact path and pooling with other families."""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.artifacts.card import ArtifactError
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.data.encoders import TableEncoder, encode_target
from fedsynth.data.schema import validate_frame
from fedsynth.generators import io
from fedsynth.generators.base import SpecError, TooFewRowsError, check_output, get_family
from fedsynth.generators.gan.family import FAMILY, KIND, GANGenerator
from fedsynth.generators.gan.nets import MAX_PARAMS, GANSpec, build_generator, expected_tensors
from fedsynth.generators.gan.train import DPGANTrainer, GANConfig, d_row_losses, g_row_loss
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.dpsgd import calibrate_noise, epsilon_spent
from fedsynth.privacy.target import PrivacyTarget, default_delta
from tests.conftest import make_toy

FAST = GANConfig(noise_dim=8, hidden=(16,), d_steps=60)


@pytest.fixture(scope="module")
def fitted():
    from fedsynth.data.schema import Column, Schema

    schema = Schema(
        (
            Column("age", "continuous", lower=18, upper=90, integer=True),
            Column("income", "continuous", lower=0.0, upper=200.0),
            Column("color", "categorical", categories=("red", "green", "blue")),
            Column("label", "categorical", categories=("no", "yes")),
        ),
        target="label",
    )
    df = make_toy(600)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gs = FAMILY.fit(df, schema, PrivacyTarget(1.0), FAST, seed=3)
    return schema, df, gs, [str(w.message) for w in caught]


def _trainer(schema, df, cfg=FAST, epsilon=1.0, seed=0) -> DPGANTrainer:
    enc = TableEncoder(schema)
    x, y = enc.transform(df), encode_target(df[schema.target], schema)
    spec = FAMILY.spec_for(schema, cfg)
    return DPGANTrainer(x, y, spec, cfg, epsilon=epsilon, delta=1e-4, seed=seed)


def test_fit_claim_from_the_accountant(fitted):
    _, df, gs, caught = fitted
    (g,) = gs.generators
    card = g.card
    assert card.family == KIND and card.class_label is None  # one joint, class-conditioned generator
    p = card.privacy
    assert p.mechanism == "dp-sgd" and p.accountant == "rdp"
    n = len(df)
    assert p.delta == default_delta(n)
    assert math.isclose(p.sample_rate, FAST.batch_size / n)
    assert p.steps == FAST.d_steps  # discriminator steps only
    assert p.noise_multiplier == calibrate_noise(1.0, p.delta, p.sample_rate, p.steps)
    eps = p.verify()
    assert math.isclose(eps, p.epsilon, rel_tol=1e-9) and 0.9 <= p.epsilon <= 1.0
    assert gs.epsilon == p.epsilon  # a single generator: the silo's cost is its claim
    # no Opacus complaint (e.g. "returned privacy budget will be incorrect" for non-Poisson batches)
    assert not [m for m in caught if "incorrect" in m.lower() or "poisson" in m.lower()], caught


def test_generator_steps_are_not_charged_and_batches_are_poisson(toy_schema, toy_frame):
    cfg = replace(FAST, d_steps=80, n_critic=2)
    t = _trainer(toy_schema, toy_frame, cfg)
    _, rep = t.train()
    assert rep.d_steps == 80 and rep.g_steps == 40
    assert t.run is not None
    assert t.run is not None and t.run.accountant.history == [
        (t.run.sigma, t.q, 80)
    ]  # every D step, no G step
    a = rep.account
    assert a is not None and a.steps == 80
    assert epsilon_spent(t.run.sigma, t.q, 80 + 40, 1e-4) > a.epsilon  # counting G steps would differ
    sizes = np.array(rep.real_batch_sizes)
    n, q = len(toy_frame), t.q
    assert len(sizes) == 80 and sizes.std() > 0  # random sizes: Poisson, not fixed batches
    assert abs(sizes.mean() - q * n) < 4 * math.sqrt(n * q * (1 - q) / len(sizes))


def test_discriminator_loss_decreases_under_dp(toy_schema, toy_frame):
    """The discriminator minimises its loss: on held-out real rows vs fresh fakes it must fall
    below its starting value (≈ 2·log 2 per pair for the NS loss) — a wrong sign makes it rise."""
    cfg = replace(FAST, d_steps=200, aux_weight=0.0, d_hidden=(16,), lr_d=1e-2)
    train, held = toy_frame.iloc[:500], make_toy(400, seed=9)
    t = _trainer(toy_schema, train, cfg, epsilon=4.0)
    enc = TableEncoder(toy_schema)
    xh, yh = enc.transform(held), encode_target(held[toy_schema.target], toy_schema)
    loss0, _ = t.evaluate_d(xh, yh)
    for _ in range(60):  # discriminator steps only: the generator stays at its initialisation
        t.d_step()
    loss1, acc1 = t.evaluate_d(xh, yh)
    assert loss1 < loss0 - 0.05, (loss0, loss1)
    assert acc1 > 0.7
    # the loss functions themselves: confident-and-right is cheap, confident-and-wrong is costly
    hi, lo = torch.tensor([5.0]), torch.tensor([-5.0])
    assert sum(v.item() for v in d_row_losses("ns", hi, lo)) < 0.02
    assert sum(v.item() for v in d_row_losses("ns", lo, hi)) > 9.0
    assert g_row_loss("ns", hi).item() < g_row_loss("ns", lo).item()


def test_conditions_are_public_uniform(toy_schema):
    df = make_toy(600)
    df = pd.concat([df[df.label == "no"], df[df.label == "yes"].iloc[:40]], ignore_index=True)
    t = _trainer(toy_schema, df, replace(FAST, d_steps=40))
    _, rep = t.train()
    counts = np.array(rep.fake_class_counts)
    assert abs(counts[0] / counts.sum() - 0.5) < 0.05  # not the private 90/10 mix
    gs = FAMILY.fit(df, toy_schema, PrivacyTarget(1.0), replace(FAST, d_steps=20), seed=0)
    s = gs.generators[0].sample(4000, seed=1)  # no condition: uniform over the schema's classes
    assert abs((s.label == "yes").mean() - 0.5) < 0.04


def test_sample_columns_classes_and_validity(fitted):
    schema, _, gs, _ = fitted
    g = gs.generators[0]
    for c in schema.classes:
        s = g.sample(300, condition=c, seed=2)
        assert list(s.columns) == [*(col.name for col in schema.features), schema.target]
        assert len(s) == 300 and (s[schema.target] == c).all()
        validate_frame(s, schema)
        assert not s.isna().any().any()
    pd.testing.assert_frame_equal(g.sample(50, condition="no", seed=5), g.sample(50, condition="no", seed=5))
    with pytest.raises(ValueError):
        g.sample(5, condition="maybe")
    check_output(g, schema)


def test_learns_the_class_direction(toy_schema, toy_frame):
    gs = FAMILY.fit(toy_frame, toy_schema, PrivacyTarget(8.0), replace(FAST, d_steps=300), seed=0)
    g = gs.generators[0]
    no, yes = g.sample(2000, condition="no", seed=0), g.sample(2000, condition="yes", seed=0)
    assert yes.income.mean() > no.income.mean() + 10  # real: 120 vs 50
    assert yes.age.mean() > no.age.mean()


def test_artifact_round_trip(fitted, tmp_path):
    schema, _, gs, _ = fitted
    g = gs.generators[0]
    card_b, w = io.to_artifact(g)
    h = io.from_artifact(card_b, w, schema, check=True, required={KIND: g.card.spec})
    assert isinstance(h, GANGenerator)
    for c in schema.classes:
        pd.testing.assert_frame_equal(h.sample(200, condition=c, seed=7), g.sample(200, condition=c, seed=7))
    gs.save(str(tmp_path / "set"))
    s2, (r,) = io.read_generator_set(tmp_path / "set")
    assert s2.hash() == schema.hash() and r.card == g.card
    pd.testing.assert_frame_equal(
        r.sample(100, condition="yes", seed=1), g.sample(100, condition="yes", seed=1)
    )
    assert len(w) == len(tensors_to_bytes(g.tensors(), KIND))


def test_tensors_that_do_not_match_the_spec_are_refused(fitted):
    schema, _, gs, _ = fitted
    g = gs.generators[0]
    card_b, _ = io.to_artifact(g)
    good = g.tensors()
    bad_shape = {**good, "net.0.bias": np.zeros(3, np.float32)}
    missing = {k: v for k, v in good.items() if k != "net.0.bias"}
    extra = {**good, "disc.0.weight": np.zeros((2, 2), np.float32)}
    nan = {**good, "net.0.bias": np.full_like(good["net.0.bias"], np.nan)}
    for t in (bad_shape, missing, extra, nan):
        w = tensors_to_bytes(t, KIND)
        card = g.card.replace(weights_sha256=hashlib.sha256(w).hexdigest())
        with pytest.raises(ArtifactError):
            io.from_artifact(card, w, schema)
    with pytest.raises(ArtifactError):  # a per-class card is not a dp-gan card
        FAMILY.expected_tensors(g.card.replace(class_label="yes"), schema)
    with pytest.raises(ArtifactError):
        io.from_artifact(card_b, tensors_to_bytes(good, KIND), schema, required={"dp-vae/1": {}})


def test_cards_with_another_familys_spec_are_refused(fitted, toy_frame):
    schema, _, gs, _ = fitted
    g = gs.generators[0]
    _, w = io.to_artifact(g)
    vae = get_family("vae")
    vae_spec = vae.spec_for(schema).to_dict()
    with pytest.raises(ArtifactError):
        io.from_artifact(g.card.replace(spec=vae_spec), w, schema)
    with pytest.raises(ArtifactError):  # and a dp-vae card carrying a dp-gan spec
        io.from_artifact(g.card.replace(family="dp-vae/1", class_label="yes"), w, schema)


def test_spec_validation(toy_schema):
    spec = FAMILY.spec_for(toy_schema, FAST)
    d = spec.to_dict()
    assert FAMILY.spec_from_dict(d, toy_schema) == spec
    built = {k: tuple(v.shape) for k, v in build_generator(spec).state_dict().items()}
    assert built == expected_tensors(spec)
    bad = [
        {**d, "n_classes": 3},
        {**d, "layout": d["layout"][:-1]},
        {**d, "layout": [*d["layout"][:-1], {"name": "color", "kind": "categorical", "width": 4}]},
        {**d, "noise_dim": 0},
        {**d, "noise_dim": 5000},
        {**d, "hidden": [8] * 9},
        {**d, "hidden": [4096, 4096]},  # 16.8 M parameters
        {**d, "kind": "mlp-decoder"},
        {**d, "negative_slope": float("nan")},
        {k: v for k, v in d.items() if k != "hidden"},
        {**d, "hidden": "64"},
        [1, 2],
    ]
    for b in bad:
        with pytest.raises(SpecError):
            FAMILY.spec_from_dict(b, toy_schema)
    assert GANSpec.from_dict({**d, "hidden": [2048, 2048]}).n_params <= MAX_PARAMS


def test_too_few_rows(toy_schema):
    df = make_toy(8)
    df.loc[0, "label"], df.loc[1, "label"] = "no", "yes"
    with pytest.raises(TooFewRowsError):
        FAMILY.fit(df, toy_schema, PrivacyTarget(1.0), FAST)


def test_mixed_pool_is_class_balanced(fitted):
    from fedsynth.generators.vae.train import VAEConfig

    schema, df, gs, _ = fitted
    vae_cfg = VAEConfig(hidden=(16,), latent_dim=4, epochs=2, max_steps=40, min_steps=10)
    vs = get_family("vae").fit(df, schema, PrivacyTarget(1.0), vae_cfg, seed=0)
    pool = GeneratorPool(schema, [*gs.as_loaded(), *vs.as_loaded()])
    assert pool.families == ["dp-gan/1", "dp-vae/1"]
    s = pool.sample(2000, seed=4)
    validate_frame(s, schema)
    frac = (s[schema.target] == "yes").mean()
    assert abs(frac - 0.5) < 0.05
    pd.testing.assert_frame_equal(s, pool.sample(2000, seed=4))
