"""The ``pgm/1`` family: one AIM marginal model per silo, joint over the features *and* the class.

* spec: :class:`~fedsynth.generators.pgm.spec.PGMSpec` (bins, workload, rounds T, α, model cap);
  the domain, workload and candidates are pure functions of (schema, spec);
* fit: continuous columns binned on the schema's public bounds, then AIM with fixed T
  (:func:`fedsynth.flaim.aim.run_aim`, numpy Private-PGM engine) on the silo's whole table;
* artifact: one float64 log-potential tensor ``potential.<i>`` per clique of the fitted model
  (shape = the clique's domain sizes); the card's ``structure`` lists the cliques and the domain;
  ``class_label = None`` (a joint model: it draws any class, ``sample(n, condition=c)`` draws rows
  of class c exactly by clamping the target at the junction tree's root, see :mod:`.sampler`);
* decoding: a continuous bin is drawn uniformly within its public edges (integer columns: a
  uniform integer of the bin), categoricals are their category;
* capability: :class:`~fedsynth.generators.base.LogLikelihood` — log P of the record's cell.

**Privacy argument.** Under add/remove-one-record neighbours a record changes one cell of every
marginal count vector by 1: L2 sensitivity 1. Fixed-T AIM at ρ = cdp_rho(ε, δ) measures the d
one-way marginals and T selected marginals, each with N(0, σ²) noise at
σ = √((T+d)/(2αρ)) — (T+d)/(2σ²) = αρ — and makes T exponential-mechanism selections at
ε_sel = √(8(1−α)ρ/T), each ε_sel²/8-zCDP — T·ε_sel²/8 = (1−α)ρ. The total N is estimated from
the noisy one-ways (post-processing, no extra budget); the selection scores, the model fit and
the sampled rows are post-processing too; the bins and domain come from the public schema and
spec. Nothing else reads the data. The claim (``zcdp``: ρ, σ, measurements = T + d,
selections = T, selection_epsilon) is read off the run's ledger, cross-checked against the
calibration, and ε = cdp_eps(ρ, δ) is what any reader recomputes (``claim.verify()``).
Noise comes from OS entropy unless ``PGMConfig.seeded_noise`` (tests, benchmarks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.artifacts.card import MAX_CARD_BYTES, ArtifactError, GeneratorCard
from fedsynth.artifacts.safetensors import Expected
from fedsynth.data.schema import Schema, check_training_target, validate_frame
from fedsynth.flaim.domain import FlaimDomain
from fedsynth.generators.base import (
    FitReport,
    GeneratorSet,
    RandomStreams,
    SpecError,
    TooFewRowsError,
    make_card,
    streams,
)
from fedsynth.generators.pgm.spec import (
    KIND,
    PGMSpec,
    candidates_of,
    check_structure,
    initial_of,
    structure_of,
    tensor_name,
)
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyTarget
from fedsynth.privacy.zcdp import cdp_eps, exponential_rho, fixed_t_calibration, gaussian_rho

#: a fitted log-potential is O(10); anything this large is hostile (overflow in the sums)
MAX_ABS_POTENTIAL = 1e6
#: ε is shaved by this relative amount so float round-off can never put the claim above the target
EPS_SHAVE = 1e-9


@dataclass(frozen=True)
class PGMConfig:
    """Spec parameters plus local choices that do not change the privacy claim."""

    bins: int = 8
    workload: str = "target"
    num_3way: int = 64
    workload_seed: int = 0
    rounds: int = 10
    alpha: float = 0.9
    max_model_mb: float = 16.0
    # every (target, a) measured before AIM's first round: at 25-1,600 rows per silo, AIM's one-way
    # start left most features untied to the class and the pooled model could invert it (breast
    # cancer, 20 silos: test AUC 2.3 with one-ways, 94.8 with target 2-ways; docs/benchmarks.md)
    init: str = "target-2way"
    iters: int = 300  # final Private-PGM fit
    round_iters: int = 100  # per-round warm-started refits
    min_rows: int = 20
    seeded_noise: bool = False  # True: mechanism noise from ``seed`` (reproducible, NOT private)

    def spec(self) -> PGMSpec:
        return PGMSpec(
            bins=self.bins,
            workload=self.workload,
            num_3way=self.num_3way,
            workload_seed=self.workload_seed,
            rounds=self.rounds,
            alpha=self.alpha,
            max_model_mb=self.max_model_mb,
            init=self.init,
        )


#: per-dataset presets, from SGDE-protocol screens on the public benchmark copies (bench/tune_family.py:
#: 20 silos of 5 %, ε = 1, one seed, LR on 5,000 pooled rows; test AUC; fresh mechanism noise, so
#: ± a few tenths between runs). With init=target-2way: adult T = 10: 87.7, T = 2: 88.1 (16 bins
#: 88.0); wine_quality T = 2: 98.6 (16 bins 98.6, 4 bins one-way 98.4); mushroom T = 5: 98.6;
#: titanic T = 10: 79.5; breast_cancer 4 bins, T = 5, 2-ways only, α = 0.95: 94.8. Before the
#: target-2way start (one-ways): adult 87.5, mushroom 95.9, titanic 80.9, wine 98.5, breast cancer 2.3.
PRESETS: dict[str, dict[str, Any]] = {
    "adult": {"rounds": 2},
    "wine_quality": {"rounds": 2},
    "mushroom": {"rounds": 5},
    "breast_cancer": {"bins": 4, "rounds": 5, "num_3way": 0, "alpha": 0.95},
    "breast_cancer_sklearn": {"bins": 4, "rounds": 5, "num_3way": 0, "alpha": 0.95},
}


def preset_for(dataset: str) -> PGMConfig:
    return PGMConfig(**PRESETS.get(dataset, {}))


def claim_from_ledger(
    log: list[tuple[str, float]], rho: float, rounds: int, d: int, alpha: float, delta: float
) -> PrivacyClaim:
    """The zCDP claim of a fixed-T AIM run, read off its budget ledger and checked against the
    calibration it must have used (a mismatch means something else touched the data)."""
    cal = fixed_t_calibration(rho, rounds, d, alpha)
    gauss = [a for w, a in log if w.startswith(("one-way ", "initial ", "measure round "))]
    sel = [a for w, a in log if w.startswith("select round ")]
    if len(gauss) + len(sel) != len(log) or len(gauss) != rounds + d or len(sel) != rounds:
        raise RuntimeError(f"AIM ledger does not match fixed-T AIM: {len(log)} entries")
    g1, e1 = gaussian_rho(cal.sigma), exponential_rho(cal.epsilon_select)
    if any(not math.isclose(a, g1, rel_tol=1e-12) for a in gauss) or any(
        not math.isclose(a, e1, rel_tol=1e-12) for a in sel
    ):
        raise RuntimeError("AIM ledger entries differ from the fixed-T calibration")
    spent = sum(gauss) + sum(sel)
    claim = PrivacyClaim(
        mechanism="zcdp",
        epsilon=1.0,
        delta=delta,
        accountant="zcdp",
        rho=1.0,
        sigma=cal.sigma,
        measurements=len(gauss),
        selections=len(sel),
        selection_epsilon=cal.epsilon_select,
    )
    rho_c = max(claim.recompute_rho(), spent)
    return replace(claim, rho=rho_c, epsilon=cdp_eps(rho_c, delta))


class PGMGenerator:
    """A released AIM model: the cliques' log-potentials over the public domain."""

    def __init__(
        self,
        card: GeneratorCard,
        schema: Schema,
        dom: FlaimDomain,
        potentials: dict[tuple[str, ...], np.ndarray],
        source: str = "",
    ) -> None:
        from fedsynth.flaim.model import PGM
        from fedsynth.flaim.sampling import TreeSampler

        if card.class_label is not None:
            raise ArtifactError("a pgm generator is a joint model: its card's class_label must be null")
        self.card, self.schema, self.dom, self.source = card, schema, dom, source
        self.cliques = list(potentials)
        self._pot = potentials
        with np.errstate(over="raise", invalid="raise"):
            try:
                self.model = PGM(dom.sizes, potentials, 1.0)
                self._sampler = TreeSampler(self.model, schema.target)
            except FloatingPointError as e:
                raise ArtifactError(f"the potentials do not define a distribution: {e}") from None
        self._t = dom.attrs.index(schema.target)

    def tensors(self) -> dict[str, np.ndarray]:
        return {tensor_name(i): self._pot[q] for i, q in enumerate(self.cliques)}

    def sample(self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0) -> pd.DataFrame:
        if n < 0:
            raise ValueError("number of rows must be >= 0")
        code = None
        if condition is not None:
            if condition not in self.schema.classes:
                raise ValueError(f"{condition!r} is not a class of the schema")
            code = self.schema.classes.index(condition)
        rng = streams(seed).numpy
        codes = self._sampler.sample(int(n), rng, code)
        return decode(codes, self.dom, self.schema, rng)

    def log_likelihood(self, df: pd.DataFrame, *, seed: int = 0) -> np.ndarray:
        """log P(cell of x) in nats (continuous values binned on the public edges)."""
        data = validate_frame(df, self.schema)
        return self.model.log_likelihood(self.dom.encode(data))


def decode(codes: np.ndarray, dom: FlaimDomain, schema: Schema, rng: np.random.Generator) -> pd.DataFrame:
    """Codes → a frame in the schema's columns (features, then the target)."""
    out: dict[str, Any] = {}
    for k, (c, coder) in enumerate(zip(schema.columns, dom.coders, strict=True)):
        v = codes[:, k]
        if c.kind == "categorical":
            out[c.name] = np.asarray(c.categories, dtype=object)[v]
            continue
        e = np.asarray(coder.edges)
        lo, hi = e[v], e[v + 1]
        u = rng.random(len(v))
        if c.integer:  # a uniform integer among those the bin holds (the last bin is closed)
            first = np.ceil(lo)
            last = np.where(v == coder.size - 1, np.floor(hi), np.ceil(hi) - 1)
            count = last - first + 1
            x = np.where(count >= 1, first + np.floor(u * np.maximum(count, 1)), np.round((lo + hi) / 2))
        else:
            x = lo + u * (hi - lo)
        out[c.name] = np.clip(x, c.lower, c.upper)
    cols = [*(c.name for c in schema.features), schema.target]
    return pd.DataFrame(out)[cols]


class PGMFamily:
    kind = KIND
    name = "pgm"

    def default_config(self, dataset: str | None = None) -> PGMConfig:
        return preset_for(dataset) if dataset else PGMConfig()

    def spec_for(self, schema: Schema, config: Any = None) -> PGMSpec:
        spec = (config or PGMConfig()).spec()
        candidates_of(schema, spec)  # raises SpecError if it does not fit the schema
        return spec

    def spec_from_dict(self, d: Any, schema: Schema) -> PGMSpec:
        spec = PGMSpec.from_dict(d)
        candidates_of(schema, spec)
        return spec

    def _checked(self, card: GeneratorCard, schema: Schema) -> tuple[PGMSpec, FlaimDomain, list]:
        if card.class_label is not None:
            raise ArtifactError("a pgm generator is a joint model: its card's class_label must be null")
        try:
            spec = self.spec_from_dict(card.spec, schema)
        except SpecError as e:
            raise ArtifactError(f"invalid pgm spec: {e}") from None
        dom, cliques = check_structure(card.structure, schema, spec)
        return spec, dom, cliques

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Expected:
        _, dom, cliques = self._checked(card, schema)
        return {tensor_name(i): (tuple(dom.sizes[a] for a in q), "F64") for i, q in enumerate(cliques)}

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> PGMGenerator:
        _, dom, cliques = self._checked(card, schema)
        pots: dict[tuple[str, ...], np.ndarray] = {}
        for i, q in enumerate(cliques):
            t = tensors.get(tensor_name(i))
            shape = tuple(dom.sizes[a] for a in q)
            if t is None or tuple(t.shape) != shape:
                raise ArtifactError(f"tensor {tensor_name(i)} is missing or not shaped {shape}")
            t = np.ascontiguousarray(t, dtype=np.float64)
            if not np.isfinite(t).all() or np.abs(t).max() > MAX_ABS_POTENTIAL:
                raise ArtifactError(f"tensor {tensor_name(i)} is non-finite or beyond ±{MAX_ABS_POTENTIAL:g}")
            pots[q] = t
        if len(tensors) != len(cliques):
            raise ArtifactError("the artifact holds tensors its card does not name")
        return PGMGenerator(card, schema, dom, pots)

    def fit(
        self,
        df: pd.DataFrame,
        schema: Schema,
        target: PrivacyTarget,
        config: Any = None,
        *,
        seed: int = 0,
        spec: Any = None,
        on_fit: Callable[[FitReport], None] | None = None,
        strict: bool = False,
    ) -> GeneratorSet:
        """One joint DP model on the whole table (``strict`` is moot: there is one model)."""
        from fedsynth.flaim.aim import run_aim

        cfg: PGMConfig = config or PGMConfig()
        spec = self.spec_from_dict((spec or cfg.spec()).to_dict(), schema)
        t0 = time.perf_counter()
        data = validate_frame(df, schema)
        check_training_target(data, schema)
        n = len(data)
        if n < cfg.min_rows:
            raise TooFewRowsError(f"{n} rows are too few for a DP marginal model (min {cfg.min_rows})")
        delta = target.delta_for(n)
        dom, workload, cands = candidates_of(schema, spec)
        initial = initial_of(schema, spec, dom)
        codes = dom.encode(data)
        eps = target.epsilon * (1 - EPS_SHAVE)
        res = run_aim(
            codes, dom.sizes, workload, epsilon=eps, delta=delta, rounds=spec.rounds, alpha=spec.alpha,
            max_model_mb=spec.max_model_mb, iters=cfg.iters, round_iters=cfg.round_iters,
            seed=seed if cfg.seeded_noise else None, engine="numpy", candidates=cands, initial=initial,
        )  # fmt: skip
        n_init = len(dom.attrs) if initial is None else len(initial)
        claim = claim_from_ledger(res.budget.log, res.budget.rho, spec.rounds, n_init, spec.alpha, delta)
        if claim.epsilon > target.epsilon:
            raise RuntimeError(f"claim ε = {claim.epsilon} exceeds the target {target.epsilon}")
        pos = {a: i for i, a in enumerate(dom.attrs)}
        cliques = sorted(res.model.potentials, key=lambda q: [pos[a] for a in q])
        pots = {q: np.ascontiguousarray(res.model.potentials[q], dtype=np.float64) for q in cliques}
        tensors = {tensor_name(i): pots[q] for i, q in enumerate(cliques)}
        card = make_card(
            self.kind, spec, schema, None, claim, tensors, structure=structure_of(dom, schema, cliques)
        )
        if len(card.to_json()) > MAX_CARD_BYTES:
            raise SpecError(f"the card would exceed {MAX_CARD_BYTES} bytes: use fewer rounds or columns")
        gen = self.load(card, tensors, schema)  # the silo's generator is exactly what a reader loads
        gen.source = "local"
        rep = FitReport(None, n, time.perf_counter() - t0, claim)
        if on_fit:
            on_fit(rep)
        return GeneratorSet(schema, self.kind, [gen], [rep])


FAMILY = PGMFamily()

__all__ = ["FAMILY", "KIND", "PRESETS", "PGMConfig", "PGMFamily", "PGMGenerator", "claim_from_ledger"]
