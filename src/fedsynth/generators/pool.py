"""A pool of generators for one schema (own, pulled from a hub, read from disk; families may mix)
and class-balanced sampling from it.

:meth:`GeneratorPool.sample` draws the class counts from a multinomial over the classes present
(uniform, or ``class_weights``), then spreads each class's rows uniformly over every generator
that can draw that class (a per-class generator of that class, or a joint model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedsynth.artifacts.card import ArtifactError
from fedsynth.data.schema import Schema
from fedsynth.generators.base import Generator, RandomStreams, classes_of


class GeneratorPool:
    def __init__(self, schema: Schema, generators: Sequence[Generator]) -> None:
        if not generators:
            raise ArtifactError("the generator pool is empty")
        for g in generators:
            if g.card.schema_hash != schema.hash():
                raise ArtifactError(f"generator from {g.source} was trained for a different schema")
            if g.card.class_label is not None and g.card.class_label not in schema.classes:
                raise ArtifactError(f"generator from {g.source} has unknown class {g.card.class_label!r}")
        self.schema = schema
        self.generators = list(generators)

    @property
    def classes(self) -> list[str]:
        present = {c for g in self.generators for c in classes_of(g, self.schema)}
        return [c for c in self.schema.classes if c in present]

    @property
    def families(self) -> list[str]:
        return sorted({g.card.family for g in self.generators})

    def sample(self, n: int, *, seed: int = 0, class_weights: dict[str, float] | None = None) -> pd.DataFrame:
        """``n`` rows; classes balanced (or by ``class_weights``); each class spread uniformly
        over all generators that can draw it."""
        if n < 1:
            raise ValueError("number of rows must be >= 1")
        rs = RandomStreams(seed)
        rng = rs.numpy
        classes = self.classes
        w = np.array([(class_weights or {}).get(c, 1.0) for c in classes], dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("class weights must be non-negative and not all zero")
        per_class = rng.multinomial(n, w / w.sum())
        frames = []
        for cls, m in zip(classes, per_class, strict=True):
            gens = [g for g in self.generators if cls in classes_of(g, self.schema)]
            per_gen = rng.multinomial(m, np.full(len(gens), 1 / len(gens)))
            for g, k in zip(gens, per_gen, strict=True):
                if k == 0:
                    continue
                frames.append(g.sample(int(k), condition=cls, seed=rs))
        cols = [*(c.name for c in self.schema.features), self.schema.target]
        out = pd.concat(frames, ignore_index=True)[cols]
        return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


__all__ = ["GeneratorPool"]
