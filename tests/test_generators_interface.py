"""The family interface: registry, composition rule, mixed pools, privacy claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.generators.base import (
    Generator,
    RandomStreams,
    UnknownFamilyError,
    check_output,
    get_family,
    make_card,
    resolve_kind,
    set_cost,
    streams,
)
from fedsynth.generators.pool import GeneratorPool
from fedsynth.generators.vae.train import VAEConfig
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyParameterError, PrivacyTarget

FAST = VAEConfig(hidden=(16,), latent_dim=2, epochs=2, min_steps=10, max_steps=20)


def _claim(eps: float) -> PrivacyClaim:
    return PrivacyClaim(
        "dp-sgd", eps, 1e-5, "rdp", noise_multiplier=1.0, sample_rate=0.1, steps=10, max_grad_norm=1.0
    )


class JointToy:
    """A joint model carrying the target itself (class_label None), drawing any class."""

    def __init__(self, schema, eps: float = 1.0) -> None:
        self.schema = schema
        self.card = make_card("toy/1", _Spec(), schema, None, _claim(eps), {"t": np.zeros(1, np.float32)})
        self.source = "toy"

    def sample(self, n, *, condition=None, seed=0):
        rng = streams(seed).numpy
        cls = condition or self.schema.classes[0]
        return pd.DataFrame(
            {
                "age": rng.integers(18, 90, n).astype(float),
                "income": rng.random(n) * 200,
                "color": rng.choice(["red", "green", "blue"], n),
                "label": cls,
            }
        )

    def tensors(self):
        return {"t": np.zeros(1, np.float32)}


class _Spec:
    def to_dict(self):
        return {"kind": "toy"}


def test_registry_names_and_unknown_family():
    assert resolve_kind("vae") == "dp-vae/1" and get_family("dp-vae/1") is get_family("vae")
    assert resolve_kind("dp-vae") == "dp-vae/1"  # the kind without its (only) version
    with pytest.raises(UnknownFamilyError, match=r"unknown generator family 'nope'.*dp-vae/1"):
        get_family("nope")
    get_family("pgm")  # a loaded built-in is listed once, not again from the cache
    with pytest.raises(UnknownFamilyError) as err:
        get_family("dp-vae/2")
    known = str(err.value).split("known: ")[1].split(" (")[0].split(", ")
    assert known.count("pgm/1") == 1 and len(known) == len(set(known)), known


def test_set_cost_parallel_for_disjoint_classes_sequential_otherwise(toy_schema):
    a = GeneratorCard("dp-vae/1", {}, "h", "no", _claim(0.5), "0" * 64)
    b = GeneratorCard("dp-vae/1", {}, "h", "yes", _claim(0.9), "0" * 64)
    j = GeneratorCard("pgm/1", {}, "h", None, _claim(0.7), "0" * 64)
    assert set_cost([a, b]) == (0.9, 1e-5)  # disjoint classes: max
    eps, dl = set_cost([a, b, j])  # a joint model saw every row: everything adds up
    assert eps == pytest.approx(2.1) and dl == pytest.approx(3e-5)
    assert set_cost([a, a.replace(family="dp-gan/1")])[0] == pytest.approx(1.0)


def test_privacy_target_and_claim_checks():
    with pytest.raises(PrivacyParameterError):
        PrivacyTarget(0.0)
    with pytest.raises(PrivacyParameterError):
        PrivacyTarget(1.0, 1.5)
    assert PrivacyTarget(1.0).delta_for(1000) == 1e-4
    with pytest.raises(PrivacyParameterError, match="needs"):
        PrivacyClaim("dp-sgd", 1.0, 1e-5, "rdp")
    # an under-stated claim is refused when re-derived
    from fedsynth.privacy.dpsgd import epsilon_spent

    true_eps = epsilon_spent(1.0, 0.1, 100, 1e-5)
    honest = PrivacyClaim(
        "dp-sgd", true_eps, 1e-5, "rdp", noise_multiplier=1.0, sample_rate=0.1, steps=100, max_grad_norm=1.0
    )
    assert honest.verify() == pytest.approx(true_eps)
    lie = PrivacyClaim(
        "dp-sgd",
        true_eps / 2,
        1e-5,
        "rdp",
        noise_multiplier=1.0,
        sample_rate=0.1,
        steps=100,
        max_grad_norm=1.0,
    )
    with pytest.raises(PrivacyParameterError, match="claimed"):
        lie.verify()
    # zCDP: ρ = m/(2σ²) + s·ε²/8, ε from the CKS conversion
    from fedsynth.privacy.zcdp import cdp_eps

    z = PrivacyClaim(
        "zcdp", 10.0, 1e-5, "zcdp", rho=0.1, sigma=10.0, measurements=20, selections=10, selection_epsilon=0.1
    )
    assert z.recompute_rho() == pytest.approx(20 / 200 + 10 * 0.01 / 8)
    assert z.recompute_epsilon() == pytest.approx(cdp_eps(z.recompute_rho(), 1e-5))
    with pytest.raises(PrivacyParameterError, match="ρ"):
        z.verify()  # claimed ρ = 0.1 < the parameters' 0.1125


def test_vae_family_fit_claims_are_rederivable(toy_frame, toy_schema):
    fam = get_family("vae")
    gs = fam.fit(toy_frame, toy_schema, PrivacyTarget(1.0), FAST, seed=0)
    assert {c.class_label for c in gs.cards} == {"no", "yes"}
    for c in gs.cards:
        assert c.family == "dp-vae/1" and c.privacy.mechanism == "dp-sgd"
        assert c.privacy.verify() <= 1.0 + 1e-9
    assert gs.epsilon == max(c.epsilon for c in gs.cards)
    for g in gs.generators:
        check_output(g, toy_schema)
        assert isinstance(g, Generator)


def test_mixed_family_pool_is_class_balanced_and_reproducible(toy_frame, toy_schema):
    vae = get_family("vae").fit(toy_frame, toy_schema, PrivacyTarget(1.0), FAST, seed=0).as_loaded("silo-a")
    joint = JointToy(toy_schema)
    pool = GeneratorPool(toy_schema, [*vae, joint])
    assert pool.families == ["dp-vae/1", "toy/1"] and pool.classes == ["no", "yes"]
    df = pool.sample(4000, seed=1)
    assert list(df.columns) == ["age", "income", "color", "label"]
    share = df["label"].value_counts(normalize=True)
    assert abs(share["yes"] - 0.5) < 0.03
    assert df.equals(pool.sample(4000, seed=1))
    assert not df.equals(pool.sample(4000, seed=2))
    with pytest.raises(ArtifactError, match="empty"):
        GeneratorPool(toy_schema, [])


def test_random_streams_are_shared():
    rs = RandomStreams(5)
    assert streams(rs) is rs
    a = rs.numpy.random()
    assert a == np.random.default_rng(5).random()
