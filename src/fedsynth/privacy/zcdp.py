"""ρ-zCDP ↔ (ε, δ)-DP conversions for the marginal-based (AIM family) mechanisms.

Uses the conversion of Canonne, Kamath & Steinke (2020, Prop. 12 / Cor. 13), which is tighter than
the classic ε = ρ + 2·sqrt(ρ·log(1/δ)) of Bun & Steinke (2016): a mechanism that is ρ-zCDP is
(ε, δ)-DP for

    δ(ρ, ε) = inf_{α>1}  exp((α−1)(αρ−ε)) / (α−1) · (1 − 1/α)^α .

Any α > 1 gives a valid δ, so an imprecise minimisation can only over-state δ (stay safe); the
inverse functions bisect on δ and return the side that keeps the guarantee (ε rounded up, ρ down).
The same formulas are used by Private-PGM's ``cdp2adp`` and by AIM.

This module is the one place for ρ arithmetic: the mechanisms' costs (Gaussian, exponential,
Skellam), AIM's fixed-T calibration, and the :class:`Budget` ledger every FLAIM spend goes through
(it refuses to exceed ρ). (ε, δ) pairs are validated by
:func:`fedsynth.privacy.target.check_epsilon_delta`, the project's single validator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fedsynth.privacy.target import PrivacyParameterError, check_epsilon_delta

_ITERS = 200


def _check_rho(rho: float) -> None:
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be a finite number >= 0, got {rho}")


def _log_delta_at(rho: float, eps: float, alpha: float) -> float:
    return (alpha - 1) * (alpha * rho - eps) + alpha * math.log1p(-1.0 / alpha) - math.log(alpha - 1)


def cdp_delta(rho: float, eps: float) -> float:
    """Smallest δ such that ρ-zCDP implies (ε, δ)-DP (CKS 2020)."""
    _check_rho(rho)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {eps}")
    if rho == 0:
        return 0.0
    # The objective is convex in α; its derivative (2α−1)ρ − ε + log(1 − 1/α) is increasing, so
    # bisect for its root. α ≥ 1.01 avoids the log blow-up near 1 (only matters when ε ≲ ρ, where
    # δ is large anyway); the upper end is where the derivative is surely positive.
    lo, hi = 1.01, max(1.02, (eps + 1) / (2 * rho) + 2)
    for _ in range(_ITERS):
        mid = (lo + hi) / 2
        if (2 * mid - 1) * rho - eps + math.log1p(-1.0 / mid) < 0:
            lo = mid
        else:
            hi = mid
    alpha = (lo + hi) / 2
    return min(1.0, math.exp(_log_delta_at(rho, eps, alpha)))


def cdp_eps(rho: float, delta: float) -> float:
    """Smallest ε (rounded up) such that ρ-zCDP implies (ε, δ)-DP."""
    _check_rho(rho)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if rho == 0:
        return 0.0
    lo, hi = 0.0, rho + 2 * math.sqrt(rho * math.log(1 / delta))  # Bun–Steinke bound: always valid
    for _ in range(_ITERS):
        mid = (lo + hi) / 2
        if cdp_delta(rho, mid) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def cdp_rho(eps: float, delta: float) -> float:
    """Largest ρ (rounded down) such that ρ-zCDP implies (ε, δ)-DP: the budget AIM may spend.

    Raises :class:`~fedsynth.privacy.target.PrivacyParameterError` (a ``ValueError``) on a bad pair."""
    if delta is None:
        raise PrivacyParameterError("delta must be in (0, 1), got None")
    check_epsilon_delta(eps, delta)
    lo, hi = 0.0, eps + 1.0  # cdp_delta(eps + 1, eps) > δ for any δ < 1
    for _ in range(_ITERS):
        mid = (lo + hi) / 2
        if cdp_delta(mid, eps) <= delta:
            lo = mid
        else:
            hi = mid
    return lo


def gaussian_rho(sigma: float, sensitivity: float = 1.0) -> float:
    """ρ of one Gaussian mechanism with L2 sensitivity Δ and noise N(0, σ²): Δ² / (2σ²)."""
    if not (sigma > 0 and sensitivity >= 0):
        raise ValueError("sigma must be > 0 and sensitivity >= 0")
    return sensitivity**2 / (2 * sigma**2)


def gaussian_sigma(rho: float, sensitivity: float = 1.0) -> float:
    """The σ at which one Gaussian mechanism with L2 sensitivity Δ costs exactly ρ: Δ / √(2ρ)."""
    if not (rho > 0 and sensitivity >= 0):
        raise ValueError("rho must be > 0 and sensitivity >= 0")
    return sensitivity / math.sqrt(2 * rho)


def exponential_rho(eps: float) -> float:
    """ρ of one exponential mechanism with parameter ε (probabilities ∝ exp(ε·u/(2Δ_u))): ε²/8.

    The bounded-range analysis of Cesar & Rogers (2021) gives ε²/8-zCDP for any score of
    sensitivity Δ_u (Δ_u is absorbed in the mechanism's scale, not in ρ).
    """
    return eps**2 / 8


def skellam_rho(sigma: float) -> float:
    """zCDP ρ bounding the Skellam mechanism with variance σ² and unit L1/L2 sensitivity.

    Distributed noise: each of m clients adds an integer Skellam share Sk(σ²/m) = Pois(σ²/(2m)) −
    Pois(σ²/(2m)); the shares sum to Sk(σ²). Agarwal, Kairouz & Liu (2021): for Δ₁ = Δ₂ = 1 it is
    (α, α/(2σ²) + min(((2α−1) + 6)/(4σ⁴), 3/(2σ²)))-RDP ≤ α·(1/(2σ²) + 7/(4σ⁴)) for α ≥ 1, i.e.
    ρ = 1/(2σ²) + 7/(4σ⁴)-zCDP.
    """
    return 1.0 / (2 * sigma**2) + 7.0 / (4 * sigma**4)


def skellam_sigma(rho: float) -> float:
    """The σ whose Skellam bound :func:`skellam_rho` equals ``rho`` (it decreases in σ; bisection)."""
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    lo, hi = math.sqrt(1 / (2 * rho)), math.sqrt(1 / (2 * rho)) + 10.0  # ρ_sk(lo) > ρ
    while skellam_rho(hi) > rho:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if skellam_rho(mid) > rho else (lo, mid)
    return hi


# ----------------------------------------------------------------------------- AIM calibration, ledger


class BudgetError(PrivacyParameterError):
    """A calibration parameter is invalid or a spend would exceed the ρ budget."""


@dataclass(frozen=True)
class Calibration:
    sigma: float
    epsilon_select: float


def fixed_t_calibration(rho: float, rounds: int, n_initial: int, alpha: float = 0.9) -> Calibration:
    """σ = √((T + d)/(2αρ)), ε_exp = √(8(1−α)ρ/T): spends exactly ρ over ``rounds`` rounds.

    Budget split α (fraction of ρ for measurements): T + d unit-sensitivity Gaussian measurements at
    σ cost (T + d)/(2σ²) = αρ, T exponential mechanisms at ε_exp cost T·ε_exp²/8 = (1 − α)ρ.
    ``n_initial`` (d) counts the extra Gaussian measurements charged at σ besides the T selected
    ones (the d one-way marginals in AIM; more in AugFLAIM (Private)). ``n_initial = 0`` with
    ``rounds = t`` is the per-round budget of adaptive AIM (t rounds' worth of ρ).
    """
    if rounds < 1:
        raise BudgetError(f"rounds must be >= 1, got {rounds}")
    if not 0 < alpha < 1:
        raise BudgetError(f"alpha must be in (0, 1), got {alpha}")
    if rho <= 0:
        raise BudgetError(f"rho must be > 0, got {rho}")
    sigma = math.sqrt((rounds + n_initial) / (2 * alpha * rho))
    eps = math.sqrt(8 * (1 - alpha) * rho / rounds)
    return Calibration(sigma, eps)


@dataclass
class Budget:
    """ρ-zCDP ledger. ``spend`` refuses anything that would push the total past ``rho``
    (zCDP composes additively: the ledger's total is the run's ρ)."""

    rho: float
    used: float = 0.0
    log: list[tuple[str, float]] = field(default_factory=list)
    slack: float = 1e-9  # relative tolerance for float round-off in exact calibrations

    @property
    def remaining(self) -> float:
        return max(self.rho - self.used, 0.0)

    def can_spend(self, amount: float) -> bool:
        return self.used + amount <= self.rho * (1 + self.slack)

    def spend(self, amount: float, what: str) -> None:
        if amount < 0:
            raise BudgetError(f"negative spend for {what}")
        if not self.can_spend(amount):
            raise BudgetError(
                f"{what} needs rho={amount:.4g} but only {self.remaining:.4g} of {self.rho:.4g} is left"
            )
        self.used += amount
        self.log.append((what, amount))

    def gaussian(self, sigma: float, what: str, sensitivity: float = 1.0) -> None:
        self.spend(gaussian_rho(sigma, sensitivity), what)

    def exponential(self, eps: float, what: str) -> None:
        self.spend(exponential_rho(eps), what)


__all__ = [
    "Budget",
    "BudgetError",
    "Calibration",
    "cdp_delta",
    "cdp_eps",
    "cdp_rho",
    "exponential_rho",
    "fixed_t_calibration",
    "gaussian_rho",
    "gaussian_sigma",
    "skellam_rho",
    "skellam_sigma",
]
