"""DP β-VAE training: accounting, clipping and the generator set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsynth.data.encoders import TableEncoder
from fedsynth.generators.base import TooFewRowsError, get_family
from fedsynth.generators.pool import GeneratorPool
from fedsynth.generators.vae.train import VAE, VAEConfig, train_class_vae
from fedsynth.privacy.clipping import GhostClipper
from fedsynth.privacy.dpsgd import PrivacyParameterError, calibrate_noise, default_delta, epsilon_spent
from fedsynth.privacy.target import PrivacyTarget

FAST = VAEConfig(hidden=(16,), latent_dim=4, epochs=2, max_steps=40, min_steps=10)


def test_reported_epsilon_comes_from_accountant(toy_schema, toy_frame):
    enc = TableEncoder(toy_schema)
    x = enc.transform(toy_frame[toy_frame.label == "no"])
    spec = FAST.decoder_spec(enc.layout())
    _, rep = train_class_vae(x, spec, FAST, class_label="no", epsilon=1.0, delta=1e-5, seed=1)
    a = rep.account
    assert a is not None
    assert math.isclose(
        a.epsilon, epsilon_spent(a.noise_multiplier, a.sample_rate, a.steps, a.delta), rel_tol=1e-9
    )
    assert 0.9 <= a.epsilon <= 1.0  # calibrated to the target, never over it
    assert math.isclose(a.sample_rate, FAST.batch_size / len(x))
    # a different σ gives a different ε: the figure is not a constant
    assert epsilon_spent(a.noise_multiplier * 2, a.sample_rate, a.steps, a.delta) < a.epsilon / 1.5


def test_calibration_inverts_accounting():
    sigma = calibrate_noise(2.0, 1e-5, 0.01, 1000)
    assert 1.9 < epsilon_spent(sigma, 0.01, 1000, 1e-5) <= 2.0
    with pytest.raises(PrivacyParameterError):
        calibrate_noise(0.0, 1e-5, 0.01, 10)
    with pytest.raises(PrivacyParameterError):
        calibrate_noise(1.0, 1.0, 0.01, 10)


def test_default_delta_rule():
    assert default_delta(1228) == 8e-05
    assert default_delta(400) <= 1 / 4000


def test_one_pass_clipping_matches_opacus_per_sample_clipping(toy_schema, toy_frame):
    """The clipped gradient sum equals Opacus' own per-sample (hooks) computation."""
    from opacus import GradSampleModule

    enc = TableEncoder(toy_schema)
    x = torch.from_numpy(enc.transform(toy_frame.iloc[:32]))
    spec = FAST.decoder_spec(enc.layout())
    torch.manual_seed(0)
    a = VAE(spec, FAST.hidden)
    b = VAE(spec, FAST.hidden)
    b.load_state_dict(a.state_dict())
    noise = torch.randn(32, spec.latent_dim)
    clip = GhostClipper(a, max_grad_norm=0.5)
    norms = clip.clip_and_sum(a(x, noise))
    gsm = GradSampleModule(b, loss_reduction="sum")
    gsm(x, noise).sum().backward()
    per = {n: p.grad_sample.reshape(32, -1) for n, p in b.named_parameters()}
    ref_norms = torch.cat(list(per.values()), dim=1).norm(dim=1)
    assert torch.allclose(norms, ref_norms, rtol=1e-4)
    assert (ref_norms > 0.5).any()  # clipping is actually exercised
    coef = (0.5 / (ref_norms + 1e-6)).clamp(max=1.0)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        ref = torch.einsum("i,i...->...", coef, q.grad_sample)
        assert torch.allclose(p.grad, ref, atol=1e-5), n


def test_generator_set_and_pool(toy_schema, toy_frame):
    gs = get_family("vae").fit(toy_frame, toy_schema, PrivacyTarget(1.0), FAST, seed=0)
    assert [c.class_label for c in gs.cards] == ["no", "yes"]
    assert gs.epsilon <= 1.0 and all(
        c.delta <= 1 / (10 * n) for c, n in zip(gs.cards, [r.n_rows for r in gs.reports], strict=True)
    )
    df = GeneratorPool(toy_schema, gs.as_loaded()).sample(400, seed=0)
    assert len(df) == 400 and set(df.columns) == {"age", "income", "color", "label"}
    assert abs((df.label == "yes").mean() - 0.5) < 0.1  # class-balanced
    assert df["age"].between(18, 90).all() and set(df["color"]) <= {"red", "green", "blue"}


def test_too_few_rows_skip_or_refuse(toy_schema, toy_frame):
    small = toy_frame[toy_frame.label == "no"].iloc[:200]
    tiny = toy_frame[toy_frame.label == "yes"].iloc[:3]
    import pandas as pd

    df = pd.concat([small, tiny])
    gs = get_family("vae").fit(df, toy_schema, PrivacyTarget(1.0), FAST)
    assert [c.class_label for c in gs.cards] == ["no"] and "'yes' has 3 rows" in gs.skipped[0]
    with pytest.raises(TooFewRowsError, match="'yes' has 3 rows"):
        get_family("vae").fit(df, toy_schema, PrivacyTarget(1.0), FAST, strict=True)


def test_dp_learns_something(toy_schema):
    """With ε=1 on 2,000 rows the classes' generators must differ in the right direction."""
    from tests.conftest import make_toy

    df = make_toy(2000, seed=5)
    cfg = VAEConfig(hidden=(32,), latent_dim=4, epochs=10, max_steps=300)
    gs = get_family("vae").fit(df, toy_schema, PrivacyTarget(1.0), cfg, seed=0)
    syn = GeneratorPool(toy_schema, gs.as_loaded()).sample(2000, seed=1)
    m = syn.groupby("label")["income"].mean()
    assert m["yes"] > m["no"] + 20, m
    assert np.isfinite(syn["income"]).all()
