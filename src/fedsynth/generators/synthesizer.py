"""One obvious entry point, in the SDV / smartnoise spirit, on top of the families::

    from fedsynth import Synthesizer

    syn = Synthesizer.create("pgm", epsilon=1.0).fit(df, schema)   # schema: Schema, dict or path
    synthetic = syn.sample(10_000)                                  # a class-balanced DataFrame
    syn.privacy                                                     # (ε, δ) and every claim behind it
    syn.save("gens/")                                               # safetensors + JSON cards

Parameters are validated once, here; everything else is the family's ``fit`` and the pool's
``sample``. Without a schema, one is inferred from the data with a loud warning: its bounds and
category lists then come from the private table and ship with the generators.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth.data.schema import Schema, infer_schema, load_schema
from fedsynth.generators import DEFAULT_FAMILY
from fedsynth.generators.base import Generator, GeneratorSet, get_family, set_cost
from fedsynth.generators.io import read_generator_set
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyTarget


class PrivateSchemaWarning(UserWarning):
    """The schema was inferred from the private data (bounds and categories leak)."""


@dataclass(frozen=True)
class PrivacySpent:
    epsilon: float
    delta: float
    claims: tuple[PrivacyClaim, ...]

    def verify(self) -> float:
        """Re-derive every claim from its parameters; the max recomputed ε."""
        return max(c.verify() for c in self.claims)


class Synthesizer:
    """A DP generator set with fit / sample; see the module docstring."""

    def __init__(
        self,
        family: str,
        target: PrivacyTarget,
        config: Any = None,
        *,
        seed: int = 0,
        dataset: str | None = None,
    ) -> None:
        self.family = get_family(family)
        self.target = target
        self.seed = seed
        self.config = config if config is not None else self.family.default_config(dataset)
        self._set: GeneratorSet | None = None
        self._generators: list[Generator] = []
        self.schema: Schema | None = None

    @classmethod
    def create(
        cls,
        family: str = DEFAULT_FAMILY,
        *,
        epsilon: float = 1.0,
        delta: float | None = None,
        seed: int = 0,
        dataset: str | None = None,
        **config: Any,
    ) -> Synthesizer:
        """``family``: vae, gan, pgm, diffusion (or a kind); ``dataset`` picks a public preset;
        keyword arguments override fields of the family's config (e.g. ``epochs=20``)."""
        fam = get_family(family)
        base = fam.default_config(dataset)
        if config:
            known = {f.name for f in dataclasses.fields(base)}
            bad = sorted(set(config) - known)
            if bad:
                raise TypeError(f"unknown {fam.kind} setting(s) {bad}; known: {sorted(known)}")
            base = dataclasses.replace(base, **config)
        return cls(fam.kind, PrivacyTarget(epsilon, delta), base, seed=seed)

    def fit(
        self, df: pd.DataFrame, schema: Schema | dict | str | Path | None = None, *, target: str | None = None
    ) -> Synthesizer:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"fit needs a pandas DataFrame, got {type(df).__name__}")
        if schema is None:
            if target is None:
                raise ValueError("without a schema, name the class column: fit(df, target='label')")
            warnings.warn(
                "no schema given: column bounds and category lists are INFERRED FROM THE PRIVATE DATA and "
                "will ship with the generators (a privacy leak unless they are public knowledge); pass a "
                "declared schema, or estimate one with fedsynth.data.dp_schema.dp_schema",
                PrivateSchemaWarning,
                stacklevel=2,
            )
            schema = infer_schema(df, target)
        elif isinstance(schema, str | Path):
            schema = load_schema(schema)
        elif isinstance(schema, dict):
            schema = Schema.from_dict(schema)
        self.schema = schema
        self._set = self.family.fit(df, schema, self.target, self.config, seed=self.seed)
        self._generators = self._set.as_loaded("local")
        return self

    @property
    def generators(self) -> list[Generator]:
        if not self._generators:
            raise RuntimeError("call fit() (or Synthesizer.load) first")
        return self._generators

    @property
    def privacy(self) -> PrivacySpent:
        cards = [g.card for g in self.generators]
        eps, dl = set_cost(cards)
        return PrivacySpent(eps, dl, tuple(c.privacy for c in cards))

    def sample(
        self, n: int, *, seed: int | None = None, class_weights: dict[str, float] | None = None
    ) -> pd.DataFrame:
        gens = self.generators  # raises if nothing was fitted or loaded
        assert self.schema is not None
        pool = GeneratorPool(self.schema, gens)
        return pool.sample(n, seed=self.seed if seed is None else seed, class_weights=class_weights)

    def save(self, path: str | Path) -> None:
        if self._set is None:
            raise RuntimeError("only a fitted synthesizer can be saved")
        self._set.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> Synthesizer:
        """A synthesizer over a saved generator set (sample only; its privacy is on the cards)."""
        schema, gens = read_generator_set(path)
        kinds = {g.card.family for g in gens}
        syn = cls(sorted(kinds)[0], PrivacyTarget(max(g.card.epsilon for g in gens)))
        syn.schema, syn._generators = schema, gens
        return syn


__all__ = ["DEFAULT_FAMILY", "PrivacySpent", "PrivateSchemaWarning", "Synthesizer"]
