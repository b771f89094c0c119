"""fed-merf/1: DP-MERF across silos — feature map, sensitivity, Skellam accounting, dropout, utility."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.data.encoders import TableEncoder, encode_target
from fedsynth.data.schema import Column, Schema, validate_frame
from fedsynth.generators.base import SpecError, check_output, get_family
from fedsynth.generators.fed_merf.family import (
    EPS_SHAVE,
    FAMILY,
    FedMerfConfig,
    feature_map,
    threshold,
)
from fedsynth.generators.fed_merf.features import (
    FeatureMap,
    class_sums,
    count_units,
    record_contributions,
    sensitivity,
)
from fedsynth.generators.fed_merf.nets import MerfSpec
from fedsynth.generators.federation import fit_federation, run_fit
from fedsynth.generators.io import from_artifact, to_artifact
from fedsynth.privacy.skellam import skellam_rho_general, skellam_variance
from fedsynth.privacy.target import PrivacyTarget
from fedsynth.privacy.zcdp import cdp_eps, cdp_rho, skellam_rho
from fedsynth.secagg.secure_sum import SecAggPlusSum, SecureSumAborted

TARGET = PrivacyTarget(1.0, 1e-5)
SILOS = 4
#: small and quick: 4 silos, t = 3 (one dropout tolerated), a short generator fit
CFG = FedMerfConfig(
    features=200, lengthscale=1.0, marginal_weight=0.5, tolerated_dropout=0.25,
    steps=300, batch_size=128, hidden=(64, 64), seeded_noise=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema(
        (
            Column("x1", "continuous", lower=0.0, upper=10.0),
            Column("x2", "continuous", lower=0.0, upper=1.0),
            Column("c1", "categorical", categories=("a", "b", "c")),
            Column("c2", "categorical", categories=("u", "v")),
            Column("label", "categorical", categories=("neg", "pos")),
        ),
        target="label",
    )


def make_table(n: int, seed: int) -> pd.DataFrame:
    """The class depends strongly on x1 (and a little on c1); x2 and c2 are noise."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, 10, n)
    y = (x1 + rng.normal(0, 1.0, n)) > 5
    c1 = np.where(y, rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]), rng.choice(["a", "b", "c"], n))
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": rng.uniform(0, 1, n),
            "c1": c1,
            "c2": rng.choice(["u", "v"], n),
            "label": np.where(y, "pos", "neg"),
        }
    )


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    df = make_table(2000, seed=1)
    return [df.iloc[k::SILOS].reset_index(drop=True) for k in range(SILOS)]


@pytest.fixture(scope="module")
def fitted(schema, frames):
    return fit_federation(FAMILY, frames, schema, TARGET, CFG, seed=0, secure_sum=SecAggPlusSum(threshold=3))


# ----------------------------------------------------------------------------- feature map, sensitivity

LAYOUT = (("continuous", 1), ("categorical", 3), ("categorical", 7), ("continuous", 1), ("categorical", 2))


def random_rows(rng: np.random.Generator, n: int, layout=LAYOUT) -> np.ndarray:
    """Encoded rows as the TableEncoder makes them: one-hot blocks, continuous values in [0, 1]."""
    parts = []
    for kind, w in layout:
        if kind == "continuous":
            parts.append(rng.uniform(0, 1, (n, 1)))
        else:
            parts.append(np.eye(w)[rng.integers(0, w, n)])
    return np.concatenate(parts, axis=1)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    a=st.sampled_from([0.0, 0.3, 1.0]),
    features=st.sampled_from([2, 64, 500]),
    ell=st.floats(0.05, 20.0),
)
def test_feature_map_has_unit_norm(seed, a, features, ell):
    fm = FeatureMap(LAYOUT, features=features, lengthscale=ell, seed=seed, marginal_weight=a)
    phi = fm.embed(random_rows(np.random.default_rng(seed), 50))
    assert phi.shape == (50, fm.dim)
    assert np.allclose(np.linalg.norm(phi, axis=1), 1.0, atol=1e-12)
    # the torch copy the generator is trained with is the same map
    import torch

    x = torch.from_numpy(random_rows(np.random.default_rng(seed + 1), 5).astype(np.float32))
    assert np.allclose(fm.torch_embed(x).numpy(), fm.embed(x.numpy()), atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    gamma=st.sampled_from([1.0, 3.7, 64.0, 4096.0]),
    count_scale=st.sampled_from([0.1, 1.0, 2.5]),
    a=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_quantised_contribution_is_within_the_sensitivity_bound(seed, gamma, count_scale, a):
    rng = np.random.default_rng(seed)
    ell = float(rng.uniform(0.1, 5))
    fm = FeatureMap(LAYOUT, features=100, lengthscale=ell, seed=seed, marginal_weight=a)
    x = random_rows(rng, 200)
    y = rng.integers(0, 3, 200)
    gn = count_units(gamma, count_scale)
    q = record_contributions(fm.embed(x), y, 3, gamma, gn)
    l1, l2 = sensitivity(fm.dim, gamma, count_scale)
    assert (np.abs(q).sum(axis=1) <= l1).all()
    assert (np.sqrt((q.astype(float) ** 2).sum(axis=1)) <= l2).all()
    # the silo's blockwise sum is exactly the sum of the per-record vectors
    assert np.array_equal(class_sums(x, y, fm, 3, gamma, gn), q.sum(axis=0))


def test_skellam_bound_reduces_to_the_unit_case_and_is_monotone():
    for sigma in (1.1, 2.0, 7.5, 300.0):
        assert math.isclose(skellam_rho_general(sigma**2, 1.0, 1.0), skellam_rho(sigma), rel_tol=1e-12)
    assert skellam_rho_general(0.5, 1.0, 1.0) <= skellam_rho(math.sqrt(0.5))  # the 3Δ₁/(2μ) branch
    mus = np.geomspace(0.1, 1e9, 50)
    rhos = [skellam_rho_general(m, 3e4, 4.1e3) for m in mus]
    assert all(a > b for a, b in itertools.pairwise(rhos))
    mu = skellam_variance(0.02, 3e4, 4.1e3)
    assert skellam_rho_general(mu, 3e4, 4.1e3) <= 0.02 < skellam_rho_general(mu * (1 - 1e-9), 3e4, 4.1e3)


def test_dropout_threshold_rule():
    assert threshold(20, 0.1, 2) == 18  # ⌈0.9·20⌉, not 19 from float round-off
    assert threshold(4, 0.25, 2) == 3
    assert threshold(4, 0.9, 2) == 2  # min_silos floors it
    assert threshold(5, 0.0, 2) == 5
    assert threshold(1, 0.5, 2) == 1  # the central run


# ----------------------------------------------------------------------------- the federation run


def test_claim_is_re_derivable_from_the_card(fitted, schema):
    gset, rep = fitted
    card = gset.generators[0].card
    assert card.family == "fed-merf/1" and card.scope == "federation" and card.class_label is None
    assert card.privacy.accountant == "skellam-zcdp"
    eps = card.privacy.verify()
    assert eps <= TARGET.epsilon and math.isclose(eps, card.epsilon, rel_tol=1e-6)
    # recompute from the spec, K and t alone: Δ from the spec and schema, μ from (ε, δ)
    spec = FAMILY.spec_from_dict(card.spec, schema)
    dim = feature_map(spec, schema).dim
    l1, l2 = sensitivity(dim, spec.gamma, spec.count_scale)
    K, t = card.structure["silos"], card.structure["threshold"]
    assert (K, t) == (SILOS, threshold(SILOS, spec.tolerated_dropout, 2)) == (4, 3)
    mu = skellam_variance(cdp_rho(TARGET.epsilon * (1 - EPS_SHAVE), TARGET.delta), l1, l2)
    assert math.isclose(card.structure["noise_variance"], mu, rel_tol=1e-12)
    rho = skellam_rho_general(mu, l1, l2)
    assert math.isclose(card.privacy.rho, rho, rel_tol=1e-12)
    assert math.isclose(card.epsilon, cdp_eps(rho, TARGET.delta), rel_tol=1e-9)
    assert rep.detail["noise_variance"] == card.structure["noise_variance"]
    assert rep.detail["realised_variance"] == pytest.approx(SILOS * mu / t)


def test_samples_are_finite_in_domain_and_class_conditional(fitted, schema):
    g = fitted[0].generators[0]
    check_output(g, schema)  # finite, in the schema's domain, class-conditional
    for c in schema.classes:
        df = g.sample(300, condition=c, seed=3)
        assert (df["label"] == c).all()
        validate_frame(df, schema)
    mixed = g.sample(400, seed=4)
    assert set(mixed["label"]) == set(schema.classes)  # no condition: uniform over the classes
    assert list(mixed.columns) == [c.name for c in schema.columns]
    with pytest.raises(ValueError, match="not a class"):
        g.sample(5, condition="maybe")


def test_round_trip_gives_identical_samples(fitted, schema):
    g = fitted[0].generators[0]
    card_bytes, weights = to_artifact(g)
    g2 = from_artifact(card_bytes, weights, schema, check=True)
    pd.testing.assert_frame_equal(g.sample(200, seed=9), g2.sample(200, seed=9))
    a, b = g.sample(50, condition="pos", seed=2), g2.sample(50, condition="pos", seed=2)
    pd.testing.assert_frame_equal(a, b)


def test_a_card_that_claims_less_than_its_noise_supports_is_refused(fitted, schema):
    g = fitted[0].generators[0]
    card_bytes, weights = to_artifact(g)
    d = GeneratorCard.from_json(card_bytes)
    less = replace(d, structure={**d.structure, "noise_variance": d.structure["noise_variance"] / 2})
    with pytest.raises(ArtifactError, match="does not support"):
        from_artifact(less, weights, schema)
    low_t = replace(d, structure={**d.structure, "threshold": 1})
    with pytest.raises(ArtifactError, match="dropout rule"):
        from_artifact(low_t, weights, schema)
    with pytest.raises(ArtifactError):
        from_artifact(replace(d, class_label="pos"), weights, schema)


def test_hostile_specs_are_refused(schema):
    base = MerfSpec().to_dict()
    for bad in (
        {"features": 101},
        {"features": 10**6},
        {"lengthscale": 0.0},
        {"gamma": 0.5},
        {"tolerated_dropout": 1.0},
        {"marginal_weight": 1.5},
        {"hidden": [10**6]},
        {"bogus": 1},
        {"features": True},
    ):
        with pytest.raises(SpecError):
            FAMILY.spec_from_dict({**base, **bad}, schema)
    assert FAMILY.spec_from_dict(base, schema) == MerfSpec()


def test_sum_bound_covers_every_client_vector(schema, frames):
    fit = FAMILY.federation_fit(schema, TARGET, SILOS, CFG, seed=0)
    plan = fit.method.plan(fit.method.init_state(), list(range(SILOS)))
    assert plan.senders == list(range(SILOS)) and plan.step == "embed"
    bound = fit.sum_bound(plan, max(len(f) for f in frames))
    for k, f in enumerate(frames):
        out = fit.method.client_step(k, fit.encode(f), plan)
        assert set(out) == {"emb", "silos"} and out["emb"].dtype == np.int64
        assert int(np.abs(out["emb"]).max()) <= bound and out["silos"].tolist() == [1]
    assert fit.method.plan(replace(fit.method.init_state(), done=True), []) is None


def test_noise_shares_are_fresh_unless_seeded(schema, frames):
    def share(cfg: FedMerfConfig) -> np.ndarray:
        fit = FAMILY.federation_fit(schema, TARGET, SILOS, cfg, seed=0)
        plan = fit.method.plan(fit.method.init_state(), list(range(SILOS)))
        return fit.method.client_step(0, fit.encode(frames[0]), plan)["emb"]

    assert np.array_equal(share(CFG), share(CFG))
    fresh = replace(CFG, seeded_noise=False)
    assert not np.array_equal(share(fresh), share(fresh))


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize(
    "secure_sum, dropped",
    [
        (SecAggPlusSum(threshold=3, drop_before_keys={1}), 1),
        (SecAggPlusSum(threshold=3, drop_after_keys={2}), 2),
    ],
    ids=["before-keys", "after-keys"],
)
def test_a_tolerated_dropout_still_releases_with_at_least_the_calibrated_noise(
    schema, frames, secure_sum, dropped
):
    cfg = replace(CFG, steps=20)
    gset, rep = fit_federation(FAMILY, frames, schema, TARGET, cfg, seed=0, secure_sum=secure_sum)
    assert rep.contributors == [k for k in range(SILOS) if k != dropped]
    d = rep.detail
    assert d["silos_contributing"] == 3 and d["threshold"] == 3
    assert d["realised_variance"] == pytest.approx(3 * d["noise_variance"] / 3)
    assert d["realised_variance"] >= d["noise_variance"] * (1 - 1e-12)
    check_output(gset.generators[0], schema)


def test_more_dropouts_than_tolerated_release_nothing(schema, frames):
    cfg = replace(CFG, steps=20)
    # the secure sum run with threshold t refuses to unmask
    with pytest.raises(SecureSumAborted):
        two_gone = SecAggPlusSum(threshold=3, drop_before_keys={1, 2})
        fit_federation(FAMILY, frames, schema, TARGET, cfg, secure_sum=two_gone)
    # the default secure sum takes the fit's threshold (t = 3 of 4): two lost silos abort it
    with pytest.raises(SecureSumAborted):
        fit = FAMILY.federation_fit(schema, TARGET, len(frames), cfg)
        run_fit(
            fit,
            [fit.encode(f) for f in frames],
            SecAggPlusSum(threshold=fit.min_survivors, drop_after_keys={0, 3}),
        )
    # a secure sum with a lower threshold could unmask an under-noised sum: refused before anything runs
    with pytest.raises(ValueError, match="below the fit's"):
        low = SecAggPlusSum(threshold=2, drop_after_keys={0, 3})
        fit_federation(FAMILY, frames, schema, TARGET, cfg, secure_sum=low)
    # and the server itself refuses a sum from fewer than t silos (defence in depth)
    fit = FAMILY.federation_fit(schema, TARGET, len(frames), cfg)
    fit.min_survivors = None
    with pytest.raises(ValueError, match="only 2 silos contributed"):
        run_fit(fit, [fit.encode(f) for f in frames], SecAggPlusSum(threshold=2, drop_after_keys={0, 3}))


def test_federation_needs_an_explicit_delta_and_enough_silos(schema):
    with pytest.raises(ValueError, match="explicit"):
        FAMILY.federation_fit(schema, PrivacyTarget(1.0), SILOS, CFG)
    with pytest.raises(ValueError, match="at least"):
        FAMILY.federation_fit(schema, TARGET, 1, CFG)


# ----------------------------------------------------------------------------- central run, utility


def test_central_fit_is_the_same_mechanism_with_one_party(schema, frames):
    gset = get_family("fed-merf").fit(pd.concat(frames), schema, TARGET, replace(CFG, steps=20), seed=0)
    card = gset.generators[0].card
    assert card.structure["silos"] == card.structure["threshold"] == 1
    assert card.privacy.verify() <= TARGET.epsilon
    assert gset.reports[0].n_rows == 2000
    check_output(gset.generators[0], schema)


def test_logistic_regression_on_samples_beats_chance_on_real_rows(fitted, schema):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    g = fitted[0].generators[0]
    enc = TableEncoder(schema)
    syn = pd.concat([g.sample(1000, condition=c, seed=5) for c in schema.classes])
    clf = LogisticRegression(max_iter=1000).fit(enc.transform(syn), encode_target(syn["label"], schema))
    test = make_table(1000, seed=99)
    auc = roc_auc_score(encode_target(test["label"], schema), clf.predict_proba(enc.transform(test))[:, 1])
    assert auc > 0.8, auc  # LR on the real training rows reaches 0.98 here; chance is 0.5


def test_a_silo_holding_a_single_class_still_contributes(schema, frames):
    # label skew: silo 0 holds only "neg"; its rows still enter the sums (no per-silo class check)
    skewed = [frames[0][frames[0]["label"] == "neg"].reset_index(drop=True), *frames[1:]]
    gset, rep = fit_federation(
        FAMILY, skewed, schema, TARGET, replace(CFG, steps=50), seed=0, secure_sum=SecAggPlusSum(threshold=3)
    )
    assert rep.contributors == [0, 1, 2, 3]
    assert set(gset.generators[0].sample(200, seed=0)["label"]) == {"neg", "pos"}
