"""AIM (McKenna et al. 2022): select – measure – generate, central and as reusable server pieces.

Round t of AIM on data D with current model M̂:

1. candidates: the workload's downward closure, minus those that would push the junction tree
   over the size cap  (max_model_mb · ρ_used/ρ)  unless already covered by the model;
2. select q with the exponential mechanism (parameter ε_exp, sensitivity max_q w_q) on
   u(q) = w_q · (‖M_q(D) − M̂_q‖₁ − √(2/π)·σ·|Ω_q|);
3. measure y = M_q(D) + N(0, σ²I) and refit Private-PGM warm-started on all measurements.

Initialisation measures every one-way marginal at σ. Fixed-T mode uses the calibration of
:func:`~fedsynth.privacy.zcdp.fixed_t_calibration`; adaptive mode (AIM's own) starts with
T₀ = 16d, halves σ and doubles ε_exp when the measured marginal moved the model by less than its
expected noise √(2/π)·σ·|Ω_q|, and spends exactly what is left in its last round. Every spend
goes through :class:`~fedsynth.privacy.zcdp.Budget`, which refuses to exceed ρ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsynth.flaim import model as pgm
from fedsynth.flaim.measure import marginal_counts
from fedsynth.flaim.workload import Clique, candidate_weights
from fedsynth.privacy.target import check_epsilon_delta
from fedsynth.privacy.zcdp import Budget, cdp_rho, exponential_rho, fixed_t_calibration, gaussian_rho


def exponential_mechanism(
    scores: np.ndarray, eps: float, sensitivity: float, rng: np.random.Generator
) -> int:
    """Sample index i with probability ∝ exp(ε·u_i/(2Δ)) (Gumbel-max, numerically stable)."""
    logits = eps * np.asarray(scores, dtype=float) / (2.0 * sensitivity)
    return int(np.argmax(logits + rng.gumbel(size=len(logits))))


def bias(sigma: float, cells: int) -> float:
    """Expected L1 norm of N(0,σ²) noise on ``cells`` cells: √(2/π)·σ·cells."""
    return math.sqrt(2 / math.pi) * sigma * cells


class CandidateFilter:
    """Size-cap filter with memoised junction-tree sizes (cheap per round)."""

    def __init__(self, sizes: dict[str, int], candidates: list[Clique]):
        self.sizes = sizes
        self.candidates = candidates
        self._memo: dict[tuple[tuple[Clique, ...], Clique], float] = {}

    def feasible(self, model: pgm.PGM, limit_mb: float) -> list[Clique]:
        base = tuple(sorted(model.cliques))
        out = []
        for q in self.candidates:
            if any(set(q) <= set(C) for C in model.max_cliques):
                out.append(q)  # free: the model already contains it
                continue
            key = (base, q)
            if key not in self._memo:
                self._memo[key] = pgm.model_size_mb(self.sizes, [*model.cliques, q])
            if self._memo[key] <= limit_mb:
                out.append(q)
        return out


@dataclass
class AIMResult:
    model: pgm.PGM
    measurements: list[pgm.Measurement]
    selected: list[Clique]
    budget: Budget
    sigma_history: list[float] = field(default_factory=list)
    total_estimate: float = 0.0


def check_domain_fits(sizes: dict[str, int], max_model_mb: float) -> None:
    """The one-way model (and the largest single 1-way table) must fit under the size cap."""
    need = sum(sizes.values()) * 8 / 2**20
    if need > max_model_mb:
        raise pgm.ModelSizeError(
            f"the domain needs {need:.1f} MB for its one-way marginals alone, over the model-size cap of "
            f"{max_model_mb} MB; coarsen the binning or raise the cap"
        )


def estimate_total(measurements: list[pgm.Measurement]) -> float:
    """Inverse-variance weighted mean of the noisy totals: N is not treated as public."""
    num = den = 0.0
    for m in measurements:
        var = m.sigma**2 * len(m.y)
        num += float(np.sum(m.y)) / var
        den += 1.0 / var
    return max(num / den, 1.0)


def run_aim(
    codes: np.ndarray,
    sizes: dict[str, int],
    workload: list[Clique],
    *,
    epsilon: float,
    delta: float = 1e-5,
    rounds: int | None = 10,
    alpha: float = 0.9,
    max_model_mb: float = 80.0,
    iters: int = 1000,
    round_iters: int = 200,
    seed: int | None = 0,
    engine: str = "numpy",
    candidates: list[Clique] | None = None,
    initial: list[Clique] | None = None,
) -> AIMResult:
    """Central AIM on the records ``codes``; ``rounds=None`` runs AIM's adaptive schedule."""
    attrs = tuple(sizes)
    pool = candidates if candidates is not None else list(candidate_weights(workload, attrs))
    first = initial if initial is not None else [(a,) for a in attrs]
    answers = {q: marginal_counts(codes, sizes, q, attrs) for q in {*pool, *((a,) for a in attrs), *first}}
    return aim_on_answers(
        answers,
        sizes,
        workload,
        epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        alpha=alpha,
        max_model_mb=max_model_mb,
        iters=iters,
        round_iters=round_iters,
        seed=seed,
        engine=engine,
        candidates=candidates,
        initial=initial,
    )


def aim_on_answers(
    answers: dict[Clique, np.ndarray],
    sizes: dict[str, int],
    workload: list[Clique],
    *,
    epsilon: float,
    delta: float = 1e-5,
    rounds: int | None = 10,
    alpha: float = 0.9,
    max_model_mb: float = 80.0,
    iters: int = 1000,
    round_iters: int = 200,
    seed: int | None = 0,
    engine: str = "numpy",
    candidates: list[Clique] | None = None,
    initial: list[Clique] | None = None,
) -> AIMResult:
    """AIM whose only access to the data is ``answers``: the exact count vector M_q(D) of every
    one-way and every candidate q (flattened in domain order). ``candidates`` restricts the
    selection to a subset of the workload's downward closure (weights still come from the whole
    workload); ``None`` = the whole closure. The privacy guarantee is AIM's, for the dataset D the
    answers were counted on. ``seed=None`` draws the mechanisms' noise from OS entropy.

    ``initial``: the marginals measured before the first round (default: every one-way, AIM's
    choice). They must cover every attribute; with fixed T the calibration charges
    len(initial) + T unit-sensitivity measurements at σ, so e.g. the d − 1 two-ways (t, a) with a
    target t cost less than the d one-ways they imply (each record is in every marginal once:
    L2 sensitivity 1 per marginal, as for the one-ways)."""
    check_epsilon_delta(epsilon, delta)
    check_domain_fits(sizes, max_model_mb)
    attrs = tuple(sizes)
    rng = np.random.default_rng(seed)
    rho = cdp_rho(epsilon, delta)
    budget = Budget(rho)
    all_weights = candidate_weights(workload, attrs)
    if candidates is None:
        weights = all_weights
    else:
        unknown = [q for q in candidates if q not in all_weights]
        if unknown:
            raise ValueError(f"candidates {unknown[:3]} are not in the workload's downward closure")
        weights = {q: all_weights[q] for q in candidates}
    if not weights:
        raise ValueError("no candidate marginals to select from")
    first = initial if initial is not None else [(a,) for a in attrs]
    uncovered = set(attrs) - {a for q in first for a in q}
    if uncovered:
        raise ValueError(f"the initial marginals leave attributes {sorted(uncovered)[:3]} unmeasured")
    missing = [q for q in [*weights, *((a,) for a in attrs), *first] if q not in answers]
    if missing:
        raise ValueError(f"answers are missing for {missing[:3]}")
    cands = list(weights)
    wmax = max(weights.values())
    d = len(attrs)
    # adaptive: start as if ρ were spread over T₀ = 16d rounds of one measurement + one selection
    if rounds is None:
        cal = fixed_t_calibration(rho, 16 * d, 0, alpha)
    else:
        cal = fixed_t_calibration(rho, rounds, len(first), alpha)
    sigma, eps = cal.sigma, cal.epsilon_select
    meas = []
    for q0 in first:
        budget.gaussian(sigma, f"one-way {q0[0]}" if len(q0) == 1 else f"initial {'/'.join(q0)}")
        x = answers[q0]
        meas.append(pgm.Measurement(q0, x + rng.normal(0, sigma, len(x)), sigma))
    total = estimate_total(meas)
    model = pgm.fit(sizes, meas, total, iters=round_iters, engine=engine)
    filt = CandidateFilter(sizes, cands)
    selected: list[Clique] = []
    sig_hist = [sigma]
    t = 0
    while True:
        t += 1
        last = False
        if rounds is None:
            step = gaussian_rho(sigma) + exponential_rho(eps)
            if budget.remaining < 2 * step:  # spend exactly what is left, then stop
                last_cal = fixed_t_calibration(budget.remaining, 1, 0, alpha)  # one round's worth
                sigma, eps = last_cal.sigma, last_cal.epsilon_select
                last = True
        else:
            last = t == rounds
        budget.exponential(eps, f"select round {t}")
        budget.gaussian(sigma, f"measure round {t}")
        limit = max_model_mb * budget.used / budget.rho
        feas = filt.feasible(model, limit)
        if not feas:
            raise pgm.ModelSizeError(f"no candidate marginal fits under the {limit:.2f} MB model-size cap")
        scores = np.array(
            [
                weights[q] * (np.abs(answers[q] - model.counts(q)).sum() - bias(sigma, len(answers[q])))
                for q in feas
            ]
        )
        q = feas[exponential_mechanism(scores, eps, wmax, rng)]
        selected.append(q)
        y = answers[q] + rng.normal(0, sigma, len(answers[q]))
        meas.append(pgm.Measurement(q, y, sigma))
        before = model.counts(q)
        model = pgm.fit(sizes, meas, total, iters=round_iters, warm=model, engine=engine)
        sig_hist.append(sigma)
        if rounds is None and not last and np.abs(model.counts(q) - before).sum() <= bias(sigma, len(y)):
            sigma /= 2
            eps *= 2
        if last:
            break
    model = pgm.fit(sizes, meas, total, iters=iters, warm=model, engine=engine)
    return AIMResult(model, meas, selected, budget, sig_hist, total)
