"""One-run canary audit of a family's DP training (Steinke, Nasr & Jagielski, NeurIPS 2023).

m canaries (random records from the schema's public domain, far from real data, all labelled with
one class c) are each added to the training table independently with probability ½; the family's
generators are trained once by the unchanged production path (``family.fit`` through a
:data:`~fedsynth.audit.training.Trainer`, same ε, δ and spec as the audited set). A per-class
family's class-c generator sees c's rows plus the included canaries; a joint model sees the whole
table plus the included canaries. The auditor sees only what is released — the generator that
draws class c — and scores every canary by its log-likelihood under it (the optional
:class:`~fedsynth.generators.base.LogLikelihood` capability; for ``dp-vae/1`` a Monte-Carlo over
the latent prior, log p(x) ≈ log (1/K) Σ_k p(x | z_k), z_k ~ N(0, I)),

minus the same score under a reference generator trained without any canary (removes how
"typical" a random canary happens to be; independent of the inclusion bits, so the test stays
valid). The k highest are guessed "in", the k lowest "out"; r = 2k guesses with v right reject
every ε with P[Binomial(r, e^ε/(1+e^ε)) ≥ v] < 0.05 (:func:`fedsynth.audit.stats.one_run_audit`).

Families without a log-likelihood cannot be audited this way (:class:`CanaryUnsupported`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.audit.stats import OneRunResult, one_run_audit
from fedsynth.audit.training import Trainer
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema, validate_frame
from fedsynth.generators.base import Generator, LogLikelihood, classes_of


class CanaryUnsupported(ValueError):
    """The canary audit needs generators with the ``LogLikelihood`` capability."""


def check_canary_support(g: Generator) -> None:
    """Refuse (before any training) a family whose generators have no log-likelihood."""
    if not isinstance(g, LogLikelihood):
        raise CanaryUnsupported(
            f"the canary audit is not supported for family {g.card.family!r}: its generators do not "
            "expose a log-likelihood (LogLikelihood capability); run it with 0 canaries"
        )


def random_canaries(schema: Schema, m: int, seed: int = 0, *, class_label: str | None = None) -> pd.DataFrame:
    """``m`` rows drawn uniformly from the public domain (categories, bounds) — nothing private.

    Drawn as encoded vectors (one uniform category per categorical block, a uniform value in
    [0, 1] per continuous slot) and decoded with :meth:`TableEncoder.inverse_transform` (integer
    columns rounded). ``class_label`` fills the target column (omitted when ``None``)."""
    enc = TableEncoder(schema)
    rng = np.random.default_rng(seed)
    x = np.zeros((m, enc.dim), dtype=np.float32)
    for b in enc.blocks:
        if b.kind == "categorical":
            x[np.arange(m), b.start + rng.integers(0, b.width, m)] = 1.0
        else:
            x[:, b.start] = rng.random(m)
    df = enc.inverse_transform(x, sample_categories=False)
    if class_label is not None:
        if class_label not in schema.classes:
            raise ValueError(f"class {class_label!r} is not a class of the schema")
        df[schema.target] = class_label
    return df


@dataclass(frozen=True)
class CanaryAudit:
    result: OneRunResult
    claimed_epsilon: float | None  # None: trained without DP (a control)
    claimed_delta: float | None
    class_label: str
    n_rows: int  # real rows of the class
    seconds: float
    family: str = ""

    @property
    def passed(self) -> bool:
        return self.claimed_epsilon is not None and self.result.eps_lower_bound <= self.claimed_epsilon

    def to_dict(self) -> dict[str, object]:
        return {
            **self.result.to_dict(),
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_delta": self.claimed_delta,
            "class_label": self.class_label,
            "n_rows": self.n_rows,
            "family": self.family,
            "seconds": self.seconds,
            "passed": bool(self.passed),
        }


def _drawing(gens: Sequence[Generator], class_label: str, schema: Schema) -> Generator:
    for g in gens:
        if class_label in classes_of(g, schema):
            return g
    raise ValueError(f"training produced no generator of class {class_label!r} (too few rows?)")


def canary_audit(
    train: pd.DataFrame,
    schema: Schema,
    trainer: Trainer,
    *,
    class_label: str,
    m: int = 1000,
    seed: int = 0,
) -> CanaryAudit:
    """Train with canaries of class ``class_label`` (production path) and audit in one run.

    ``trainer`` must be the audited set's (family, ε, δ, spec): see
    :func:`fedsynth.audit.training.trainer_for`. Raises :class:`CanaryUnsupported` for a family
    without a log-likelihood (after the first fit; check first with :func:`check_canary_support`).
    """
    if m < 2:
        raise ValueError("need at least 2 canaries")
    t0 = time.perf_counter()
    data = validate_frame(train, schema)
    rng = np.random.default_rng(seed)
    canaries = random_canaries(schema, m, seed=seed + 1, class_label=class_label)
    included = rng.random(m) < 0.5
    with_canaries = pd.concat([data, canaries[included]], ignore_index=True)
    with_canaries = with_canaries.iloc[rng.permutation(len(with_canaries))].reset_index(drop=True)
    g = _drawing(trainer(with_canaries, seed + 2), class_label, schema)
    check_canary_support(g)
    ref = _drawing(trainer(data, seed + 3), class_label, schema)
    assert isinstance(g, LogLikelihood) and isinstance(ref, LogLikelihood)
    scores = g.log_likelihood(canaries, seed=seed + 4) - ref.log_likelihood(canaries, seed=seed + 4)
    res = one_run_audit(np.asarray(scores, dtype=float), included)
    private = not math.isinf(g.card.epsilon)
    return CanaryAudit(
        result=res,
        claimed_epsilon=g.card.epsilon if private else None,
        claimed_delta=g.card.delta if private else None,
        class_label=class_label,
        n_rows=int((data[schema.target].astype(str) == class_label).sum()),
        seconds=time.perf_counter() - t0,
        family=g.card.family,
    )


__all__ = ["CanaryAudit", "CanaryUnsupported", "canary_audit", "check_canary_support", "random_canaries"]
