"""A silo's SGDE generator set: fit one DP β-VAE per class, sample class-balanced tables.

This is the transport-free core of Push and Pull:

* :func:`fit_generator_set` — one DP generator per class of the silo's table (parallel
  composition: disjoint class subsets, so the silo's ε is the max over its generators);
* :class:`GeneratorPool` — any collection of decoders (own, pulled from a hub, read from disk)
  sharing one schema; :meth:`GeneratorPool.sample` draws a class-balanced table, each class's
  rows spread uniformly over every generator of that class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fedsynth.artifacts.decoder import ArtifactError, GeneratorCard, LoadedGenerator, write_generator_set
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema, SchemaError, check_training_target, validate_frame
from fedsynth.generators.nets import Decoder, DecoderSpec
from fedsynth.generators.vae import TooFewRowsError, TrainReport, VAEConfig, make_card, train_class_vae
from fedsynth.privacy.dpsgd import check_epsilon_delta, default_delta

log = logging.getLogger(__name__)


@dataclass
class GeneratorSet:
    """The generators one silo trained, with their cards and local (never shipped) reports."""

    schema: Schema
    decoders: list[Decoder]
    cards: list[GeneratorCard]
    reports: list[TrainReport]
    skipped: list[str] = field(default_factory=list)  # messages for classes without a generator

    @property
    def epsilon(self) -> float:
        """Silo-level ε: max over per-class generators (disjoint data: parallel composition)."""
        return max((c.epsilon for c in self.cards), default=0.0)

    @property
    def delta(self) -> float:
        return max((c.delta for c in self.cards), default=0.0)

    def save(self, out_dir: str, **extra: object) -> None:
        write_generator_set(
            out_dir, self.schema, list(zip(self.decoders, self.cards, strict=True)), extra=extra
        )

    def as_loaded(self, source: str = "local") -> list[LoadedGenerator]:
        return [LoadedGenerator(c, d, source) for d, c in zip(self.decoders, self.cards, strict=True)]


def fit_generator_set(
    df: pd.DataFrame,
    schema: Schema,
    *,
    epsilon: float = 1.0,
    delta: float | None = None,
    config: VAEConfig | None = None,
    spec: DecoderSpec | None = None,
    seed: int = 0,
    on_class: Callable[[str, TrainReport], None] | None = None,
    strict: bool = False,
) -> GeneratorSet:
    """Train a DP generator for every class in ``df``.

    ``delta`` defaults to the SGDE rule δ ≤ 1/(10·|D_c|) per class. ``spec`` (e.g. the hub's
    required decoder spec) overrides the architecture in ``config``; its layout must match the
    schema. A class with fewer than ``config.min_rows`` rows is skipped with a warning (or, with
    ``strict``, refused with :class:`TooFewRowsError`).
    """
    cfg = config or VAEConfig()
    check_epsilon_delta(epsilon, delta)
    data = validate_frame(df, schema)
    check_training_target(data, schema)
    enc = TableEncoder(schema)
    spec = spec or cfg.decoder_spec(enc.layout())
    if [list(b) for b in spec.layout] != [[b["name"], b["kind"], b["width"]] for b in enc.layout()]:
        raise SchemaError("the decoder spec's output layout does not match this schema's encoding")
    if tuple(reversed(spec.hidden)) != cfg.hidden or spec.latent_dim != cfg.latent_dim:
        cfg = VAEConfig(
            **{**cfg.__dict__, "hidden": tuple(reversed(spec.hidden)), "latent_dim": spec.latent_dim}
        )
    x_all = enc.transform(data, validated=True)
    y = data[schema.target].to_numpy()
    decoders, cards, reports, skipped = [], [], [], []
    for k, cls in enumerate(schema.classes):
        rows = x_all[y == cls]
        if len(rows) == 0:
            continue
        d = delta if delta is not None else default_delta(len(rows))
        try:
            dec, rep = train_class_vae(
                rows, spec, cfg, class_label=cls, epsilon=epsilon, delta=d, seed=seed * 1000 + k
            )
        except TooFewRowsError as e:
            if strict:
                raise
            log.warning("%s; skipping this class", e)
            skipped.append(str(e))
            continue
        decoders.append(dec)
        cards.append(make_card(dec, rep, schema.hash()))
        reports.append(rep)
        if on_class:
            on_class(cls, rep)
    if not decoders:
        raise TooFewRowsError("no class had enough rows to train a generator: " + "; ".join(skipped))
    return GeneratorSet(schema, decoders, cards, reports, skipped)


class GeneratorPool:
    """A pool of decoders for one schema; sample class-balanced synthetic tables from it."""

    def __init__(self, schema: Schema, generators: Sequence[LoadedGenerator]) -> None:
        if not generators:
            raise ArtifactError("the generator pool is empty")
        enc = TableEncoder(schema)
        want = [(b["name"], b["kind"], b["width"]) for b in enc.layout()]
        for g in generators:
            if g.card.schema_hash != schema.hash():
                raise ArtifactError(f"generator from {g.source} was trained for a different schema")
            if [tuple(b) for b in g.decoder.spec.layout] != want:
                raise ArtifactError(
                    f"generator from {g.source} has an output layout that does not fit the schema"
                )
            if g.card.class_label not in schema.classes:
                raise ArtifactError(f"generator from {g.source} has unknown class {g.card.class_label!r}")
        self.schema = schema
        self.encoder = enc
        self.generators = list(generators)

    @property
    def classes(self) -> list[str]:
        present = {g.card.class_label for g in self.generators}
        return [c for c in self.schema.classes if c in present]

    def sample(self, n: int, *, seed: int = 0, class_weights: dict[str, float] | None = None) -> pd.DataFrame:
        """``n`` rows; classes balanced (or by ``class_weights``); each class spread uniformly
        over all generators of that class."""
        if n < 1:
            raise ValueError("number of rows must be >= 1")
        rng = np.random.default_rng(seed)
        tgen = torch.Generator().manual_seed(seed)
        classes = self.classes
        w = np.array([(class_weights or {}).get(c, 1.0) for c in classes], dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("class weights must be non-negative and not all zero")
        per_class = rng.multinomial(n, w / w.sum())
        frames = []
        for cls, m in zip(classes, per_class, strict=True):
            gens = [g for g in self.generators if g.card.class_label == cls]
            per_gen = rng.multinomial(m, np.full(len(gens), 1 / len(gens)))
            for g, k in zip(gens, per_gen, strict=True):
                if k == 0:
                    continue
                x = g.decoder.generate(int(k), generator=tgen).numpy()
                part = self.encoder.inverse_transform(x, rng=rng)
                part[self.schema.target] = cls
                frames.append(part)
        out = pd.concat(frames, ignore_index=True)
        return out.iloc[rng.permutation(len(out))].reset_index(drop=True)
