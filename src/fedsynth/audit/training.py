"""How the audits train generators: shadow sets, canary runs and the non-private control.

Everything the audits train goes through the audited generators' own family
(:meth:`~fedsynth.generators.base.GeneratorFamily.fit`, the production path) with the same
(ε, δ) and the same spec (architecture / structure) as the generators under audit, so a shadow
model or a canary run leaks exactly as much as the audited training procedure would.

The one exception is the **non-private control** (``epsilon=None``): a generator trained without
DP, which an audit must clearly fail. The family interface has no non-private mode (every family
fit is within a :class:`~fedsynth.privacy.target.PrivacyTarget`), so the control exists for the
``dp-vae/1`` family only, trained by the same ``train_class_vae`` with DP switched off. Its
in-memory card says ε = ∞ (:class:`NonPrivateClaim`) and carries an all-zero sha256, so
:func:`fedsynth.generators.io.to_artifact` refuses to ship it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fedsynth.artifacts.card import GeneratorCard
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema, validate_frame
from fedsynth.generators.base import FamilySpec, Generator, get_family
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyTarget

#: Trains a generator set on a table by the audited code path (shadow models, canary runs):
#: ``trainer(table, seed) -> generators``.
Trainer = Callable[[pd.DataFrame, int], Sequence[Generator]]

VAE_KIND = "dp-vae/1"


@dataclass(frozen=True)
class NonPrivateClaim(PrivacyClaim):
    """The in-memory claim of a non-private control: ε = ∞, δ = 0, accountant ``"none"``.

    Skips :class:`PrivacyClaim`'s (ε, δ) validation on purpose; never serialised (the control's
    card has a zero sha256, so no artifact of it can be written)."""

    def __post_init__(self) -> None:
        pass

    def recompute_epsilon(self) -> float:
        return math.inf


NON_PRIVATE = NonPrivateClaim(mechanism="none", epsilon=math.inf, delta=0.0, accountant="none")


def is_private(g: Generator) -> bool:
    return not math.isinf(g.card.epsilon)


def train_generators(
    df: pd.DataFrame,
    schema: Schema,
    config: Any = None,
    *,
    epsilon: float | None,
    delta: float | None,
    seed: int,
    family: str = "vae",
    spec: FamilySpec | None = None,
) -> list[Generator]:
    """A generator set by the production path: ``family.fit`` within (``epsilon``, ``delta``)
    (``delta=None``: the family's δ rule). ``spec`` fixes the architecture (e.g. the audited
    generators'); ``config`` the other hyper-parameters (the family's default when ``None``).

    ``epsilon=None`` trains the non-private control (``dp-vae/1`` only; see the module docstring).
    """
    fam = get_family(family)
    if epsilon is None:
        if fam.kind != VAE_KIND:
            raise ValueError(
                f"a non-private control can only be trained for the vae family, not {fam.kind!r} "
                "(the family interface trains within a privacy target)"
            )
        return _fit_non_private_vae(df, schema, config, seed=seed, spec=spec)
    target = PrivacyTarget(epsilon, delta)
    return fam.fit(df, schema, target, config, seed=seed, spec=spec).as_loaded()


def trainer_for(
    schema: Schema,
    family: str,
    config: Any,
    *,
    epsilon: float | None,
    delta: float | None,
    spec: FamilySpec | None = None,
) -> Trainer:
    """A :data:`Trainer` with the audited generators' family, (ε, δ), spec and config."""

    def train(df: pd.DataFrame, seed: int) -> list[Generator]:
        return train_generators(
            df, schema, config, epsilon=epsilon, delta=delta, seed=seed, family=family, spec=spec
        )

    return train


def config_for(generators: Sequence[Generator], base: Any = None, *, schema: Schema) -> Any:
    """The training config for shadows and canary runs: ``base`` (or the family's default).

    The architecture itself travels as the family spec (:func:`spec_of`), which overrides the
    config in ``family.fit``. For ``dp-vae/1`` the config also carries the architecture (the
    discarded encoder mirrors the decoder's hidden sizes), so it is aligned with the spec here."""
    fam = get_family(generators[0].card.family)
    cfg = base if base is not None else fam.default_config()
    if fam.kind == VAE_KIND:
        spec = spec_of(generators, schema)
        arch = {
            "hidden": tuple(reversed(spec.hidden)),  # type: ignore[attr-defined]
            "latent_dim": spec.latent_dim,  # type: ignore[attr-defined]
            "continuous": spec.continuous,  # type: ignore[attr-defined]  # part of the architecture
        }
        cfg = dataclasses.replace(cfg, **arch)
    return cfg


def spec_of(generators: Sequence[Generator], schema: Schema) -> FamilySpec:
    """The (parsed, checked) spec of the audited generators; they must share family and spec."""
    kinds = {g.card.family for g in generators}
    if len(kinds) != 1:
        raise ValueError(f"audit one family at a time; got {sorted(kinds)}")
    fam = get_family(generators[0].card.family)
    spec = fam.spec_from_dict(generators[0].card.spec, schema)
    if any(fam.spec_from_dict(g.card.spec, schema).to_dict() != spec.to_dict() for g in generators[1:]):
        raise ValueError("the audited generators have different specs; audit one set at a time")
    return spec


def _fit_non_private_vae(
    df: pd.DataFrame, schema: Schema, config: Any, *, seed: int, spec: Any = None
) -> list[Generator]:
    """One β-VAE per class with DP switched off (same seeds and code as ``VAEFamily.fit``)."""
    from fedsynth.generators.vae.family import KIND, VAEGenerator
    from fedsynth.generators.vae.train import VAEConfig, train_class_vae

    cfg: VAEConfig = config or VAEConfig()
    enc = TableEncoder(schema)
    data = validate_frame(df, schema)
    spec = spec or cfg.decoder_spec(enc.layout())
    if tuple(reversed(spec.hidden)) != cfg.hidden or spec.latent_dim != cfg.latent_dim:
        cfg = VAEConfig(
            **{**cfg.__dict__, "hidden": tuple(reversed(spec.hidden)), "latent_dim": spec.latent_dim}
        )
    x = enc.transform(data, validated=True)
    y = data[schema.target].astype(str).to_numpy()
    out: list[Generator] = []
    for k, cls in enumerate(schema.classes):
        rows = x[y == cls]
        if len(rows) < cfg.min_rows:
            continue
        dec, _ = train_class_vae(
            rows, spec, cfg, class_label=cls, epsilon=None, delta=None, seed=seed * 1000 + k
        )
        card = GeneratorCard(
            family=KIND,
            spec=spec.to_dict(),
            schema_hash=schema.hash(),
            class_label=cls,
            privacy=NON_PRIVATE,
            weights_sha256="0" * 64,  # never matches: the control cannot be written as an artifact
        )
        out.append(VAEGenerator(card, dec, schema, "non-private control"))
    return out


__all__ = [
    "NON_PRIVATE",
    "NonPrivateClaim",
    "Trainer",
    "config_for",
    "is_private",
    "spec_of",
    "train_generators",
    "trainer_for",
]
