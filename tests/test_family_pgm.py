"""The ``pgm/1`` family: AIM marginal model per silo, joint over features and class."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.artifacts.card import ArtifactError, GeneratorCard, sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.data.schema import validate_frame
from fedsynth.generators.base import SpecError, check_output, get_family
from fedsynth.generators.io import from_artifact, read_generator_set, to_artifact
from fedsynth.generators.pgm.family import PGMConfig
from fedsynth.generators.pgm.spec import PGMSpec, candidates_of
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget
from tests.conftest import make_toy

FAST = PGMConfig(bins=8, rounds=4, iters=200, round_iters=50, seeded_noise=True)
FAM = get_family("pgm")


@pytest.fixture(scope="module")
def schema():
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
    return FAM.fit(make_toy(800), schema, PrivacyTarget(1.0), FAST, seed=0)


def _artifact(g, **card_kw):
    card_b, w = to_artifact(g)
    card = GeneratorCard.from_json(card_b)
    return (card.replace(**card_kw) if card_kw else card), w


def test_fit_within_epsilon_and_claim_is_re_derivable(fitted, schema):
    assert len(fitted.generators) == 1 and fitted.family == "pgm/1"
    card = fitted.cards[0]
    assert card.class_label is None and card.family == "pgm/1"
    p = card.privacy
    assert p.mechanism == "zcdp" and p.delta == pytest.approx(1e-4)  # δ rule on 800 rows
    eps = p.verify()
    assert eps <= 1.0 and eps == pytest.approx(1.0, rel=1e-6)  # the whole budget, not more
    d = len(schema.columns)
    n_init = d if FAST.init == "oneway" else d - 1  # one-ways, or the (target, a) 2-ways
    assert p.measurements == FAST.rounds + n_init and p.selections == FAST.rounds
    # fixed-T calibration: σ = √((T+d)/(2αρ)), ε_sel = √(8(1−α)ρ/T)
    assert p.sigma == pytest.approx(np.sqrt((FAST.rounds + n_init) / (2 * FAST.alpha * p.rho)))
    assert p.selection_epsilon == pytest.approx(np.sqrt(8 * (1 - FAST.alpha) * p.rho / FAST.rounds))
    assert fitted.epsilon == p.epsilon  # one joint model
    bad = p.__class__(**{**p.to_dict(), "sigma": p.sigma / 2})
    with pytest.raises(ValueError, match="parameters give"):
        bad.verify()


def test_structure_lists_domain_and_cliques(fitted, schema):
    card = fitted.cards[0]
    dom = card.structure["domain"]
    assert [e["name"] for e in dom] == ["age", "income", "color", "label"]
    assert [e["size"] for e in dom] == [8, 8, 3, 2]
    assert dom[0] == {"name": "age", "size": 8, "binning": "equal-width", "lower": 18.0, "upper": 90.0}
    tensors = fitted.generators[0].tensors()
    assert len(tensors) == len(card.structure["cliques"])
    for i, q in enumerate(card.structure["cliques"]):
        assert tensors[f"potential.{i}"].shape == tuple(
            {"age": 8, "income": 8, "color": 3, "label": 2}[a] for a in q
        )


def test_target_aware_workload_holds_every_target_2way(schema):
    _, wl, cands = candidates_of(schema, PGMSpec())
    for a in ("age", "income", "color"):
        assert (a, "label") in wl and (a, "label") in cands
    _, wl3, _ = candidates_of(schema, PGMSpec(workload="random-3way", num_3way=2))
    assert all(len(q) == 3 for q in wl3) and len(wl3) == 2


def test_round_trip_gives_identical_samples(fitted, schema, tmp_path):
    g = fitted.generators[0]
    card_b, w = to_artifact(g)
    g2 = from_artifact(card_b, w, schema, check=True)
    for cond in (None, "yes", "no"):
        pd.testing.assert_frame_equal(
            g.sample(300, condition=cond, seed=5), g2.sample(300, condition=cond, seed=5)
        )
    fitted.save(str(tmp_path / "set"))
    _, loaded = read_generator_set(tmp_path / "set", schema=schema)
    pd.testing.assert_frame_equal(loaded[0].sample(200, seed=9), g.sample(200, seed=9))
    assert not g.sample(200, seed=9).equals(g.sample(200, seed=10))


def test_sample_shape_columns_and_condition(fitted, schema):
    g = fitted.generators[0]
    df = g.sample(2000, seed=1)
    assert list(df.columns) == ["age", "income", "color", "label"] and len(df) == 2000
    validate_frame(df, schema)
    assert set(df["label"]) == {"no", "yes"}  # a joint model draws both classes
    assert (df["age"] == df["age"].round()).all()  # integer column stays integer
    for c in ("no", "yes"):
        part = g.sample(500, condition=c, seed=2)
        assert (part["label"] == c).all() and len(part) == 500
    with pytest.raises(ValueError, match="not a class"):
        g.sample(5, condition="maybe")
    check_output(g, schema)
    assert len(g.sample(0)) == 0


def test_conditioning_is_exact_not_approximate(fitted):
    """Rows drawn given the class follow the model's P(x | class): compare the color-given-class
    frequencies of 40,000 conditional draws with the model's own conditional marginal."""
    g = fitted.generators[0]
    p = g.model.probability(("color", "label"))  # (3, 2)
    for k, c in enumerate(("no", "yes")):
        want = p[:, k] / p[:, k].sum()
        got = g.sample(40_000, condition=c, seed=3)["color"].value_counts(normalize=True)
        got = np.array([got.get(x, 0.0) for x in ("red", "green", "blue")])
        assert np.abs(got - want).max() < 0.015, (c, got, want)
    # and the class frequencies of unconditional draws follow the model's class marginal
    pt = g.model.probability(("label",))
    share = (g.sample(40_000, seed=4)["label"] == "yes").mean()
    assert abs(share - pt[1]) < 0.015


def test_log_likelihood_is_a_distribution_over_cells(fitted, schema):
    g = fitted.generators[0]
    mids = {n: (np.arange(8) + 0.5) / 8 for n in ("age", "income")}
    rows = itertools.product(
        18 + 72 * mids["age"], 200 * mids["income"], ("red", "green", "blue"), ("no", "yes")
    )
    grid = pd.DataFrame(list(rows), columns=["age", "income", "color", "label"])
    ll = g.log_likelihood(grid)
    assert ll.shape == (len(grid),) and np.isfinite(ll).all()
    assert np.exp(ll).sum() == pytest.approx(1.0, rel=1e-6)
    real = g.log_likelihood(make_toy(300, seed=7))
    assert real.mean() > ll.mean()  # real rows sit in likelier cells than the uniform grid


def test_noise_is_fresh_unless_seeded(schema):
    df = make_toy(300, seed=2)
    unseeded = PGMConfig(bins=8, rounds=2, iters=50, round_iters=20)
    a = FAM.fit(df, schema, PrivacyTarget(1.0), unseeded, seed=0).cards[0].weights_sha256
    b = FAM.fit(df, schema, PrivacyTarget(1.0), unseeded, seed=0).cards[0].weights_sha256
    assert a != b
    seeded = PGMConfig(bins=8, rounds=2, iters=50, round_iters=20, seeded_noise=True)
    c = FAM.fit(df, schema, PrivacyTarget(1.0), seeded, seed=0).cards[0].weights_sha256
    d = FAM.fit(df, schema, PrivacyTarget(1.0), seeded, seed=0).cards[0].weights_sha256
    assert c == d


def test_mismatched_tensors_are_refused(fitted, schema):
    g = fitted.generators[0]
    card, _ = _artifact(g)
    t = g.tensors()
    cases = {
        "shape": {**t, "potential.0": np.zeros((2, 2))},
        "names": {**t, "potential.99": np.zeros(3)},
        "missing": {k: v for k, v in t.items() if k != "potential.0"},
        "dtype": {k: v.astype(np.float32) for k, v in t.items()},
    }
    for bad in cases.values():
        w = tensors_to_bytes(bad, "pgm/1")
        with pytest.raises(ArtifactError):
            from_artifact(card.replace(weights_sha256=sha256_bytes(w)), w, schema)
    huge = {k: np.full_like(v, 1e300) for k, v in t.items()}
    w = tensors_to_bytes(huge, "pgm/1")
    with pytest.raises(ArtifactError, match="beyond"):
        from_artifact(card.replace(weights_sha256=sha256_bytes(w)), w, schema)


def test_bad_structures_are_refused(fitted, schema):
    g = fitted.generators[0]
    card, w = _artifact(g)
    s = card.structure
    cl = s["cliques"]
    dom = s["domain"]
    bad = {
        "unknown attributes": {**s, "cliques": [["age", "zip"], *cl[1:]]},
        "repeats an attribute": {**s, "cliques": [["age", "age"], *cl[1:]]},
        "domain order": {
            **s,
            "cliques": [list(reversed(cl[0])) if len(cl[0]) > 1 else ["label", "age"], *cl[1:]],
        },
        "repeats a clique": {**s, "cliques": [*cl, cl[0]]},
        "in no clique": {**s, "cliques": [["age"]]},
        "disagrees": {**s, "domain": [{**dom[0], "size": 9}, *dom[1:]]},
        "exactly": {**s, "extra": 1},
    }
    for why, st in bad.items():
        with pytest.raises(ArtifactError, match=why):
            FAM.expected_tensors(card.replace(structure=st), schema)
    small = card.replace(spec={**card.spec, "max_model_mb": 0.0001})  # 13 cells
    with pytest.raises(ArtifactError, match="cap"):
        FAM.expected_tensors(
            small.replace(structure={**s, "cliques": [["age", "income", "color", "label"]]}), schema
        )
    with pytest.raises(ArtifactError, match="joint model"):
        from_artifact(card.replace(class_label="yes"), w, schema)


def test_other_family_spec_and_hostile_specs_are_refused(fitted, schema):
    card, w = _artifact(fitted.generators[0])
    from fedsynth.data.encoders import TableEncoder
    from fedsynth.generators.vae.train import VAEConfig

    vae_spec = VAEConfig(hidden=(8,), latent_dim=3).decoder_spec(TableEncoder(schema).layout()).to_dict()
    with pytest.raises(ArtifactError, match="spec"):
        from_artifact(card.replace(spec=vae_spec), w, schema)
    base = PGMSpec().to_dict()
    hostile = [("bins", 10**6), ("bins", True), ("rounds", 10**5), ("max_model_mb", 1e9), ("alpha", 1.5)]
    hostile += [("num_3way", 10**4), ("workload", "everything"), ("model", "other"), ("extra", 1)]
    for k, v in hostile:
        with pytest.raises(SpecError):
            FAM.spec_from_dict({**base, k: v}, schema)
    with pytest.raises(SpecError, match="missing"):
        FAM.spec_from_dict({"bins": 8}, schema)
    with pytest.raises(SpecError, match="cells"):  # the one-ways do not fit the cap
        FAM.spec_from_dict({**base, "bins": 128, "max_model_mb": 0.001}, schema)
    spec = FAM.spec_from_dict(json.loads(json.dumps(card.spec)), schema)
    assert spec.to_dict() == card.spec


def test_mixed_pool_with_vae_generators_is_class_balanced(fitted, schema):
    from fedsynth.generators.vae.train import VAEConfig

    vset = get_family("vae").fit(
        make_toy(200, seed=1), schema, PrivacyTarget(1.0), VAEConfig(min_steps=5, max_steps=5), seed=0
    )
    pool = GeneratorPool(schema, [*fitted.as_loaded("a"), *vset.as_loaded("b")])
    assert pool.families == ["dp-vae/1", "pgm/1"]
    df = pool.sample(2000, seed=4)
    assert len(df) == 2000 and list(df.columns) == ["age", "income", "color", "label"]
    validate_frame(df, schema)
    assert 0.45 < (df["label"] == "yes").mean() < 0.55
