"""zCDP accounting for AIM-style mechanisms.

* (ε, δ) → ρ: the exact conversion used by AIM / Private-PGM (Canonne, Kamath, Steinke 2020,
  Prop. 12): δ(ρ, ε) = min_{α>1} exp((α−1)(αρ−ε) + α·log(1−1/α)) / (α−1); ρ is the largest value
  with δ(ρ, ε) ≤ δ (bisection).
* Gaussian mechanism with L2 sensitivity Δ and noise σ: ρ = Δ²/(2σ²).
* Exponential mechanism with parameter ε (score sensitivity Δ_u, probabilities ∝ exp(ε·u/(2Δ_u))):
  ρ = ε²/8 (bounded range; Cesar & Rogers 2021).
* Fixed-T calibration with budget split α (fraction of ρ for measurements), d one-way marginals
  measured first and T selected ones:  σ = √((T + d)/(2αρ)),  ε_exp = √(8(1−α)ρ/T).

:class:`Budget` is the ledger: every spend goes through it and it refuses to exceed ρ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class BudgetError(ValueError):
    """A privacy parameter is invalid or a spend would exceed the budget."""


def cdp_delta(rho: float, eps: float) -> float:
    """Smallest δ such that ρ-zCDP implies (ε, δ)-DP (optimised over the Rényi order)."""
    if rho < 0 or eps < 0:
        raise BudgetError("rho and eps must be >= 0")
    if rho == 0:
        return 0.0
    amin, amax = 1.01, (eps + 1) / (2 * rho) + 2
    alpha = amin
    for _ in range(1000):
        alpha = (amin + amax) / 2
        derivative = (2 * alpha - 1) * rho - eps + math.log1p(-1.0 / alpha)
        if derivative < 0:
            amin = alpha
        else:
            amax = alpha
    delta = math.exp((alpha - 1) * (alpha * rho - eps) + alpha * math.log1p(-1 / alpha)) / (alpha - 1.0)
    return min(delta, 1.0)


def cdp_eps(rho: float, delta: float) -> float:
    """Smallest ε such that ρ-zCDP implies (ε, δ)-DP."""
    if rho == 0:
        return 0.0
    lo, hi = 0.0, rho + 2 * math.sqrt(rho * math.log(1 / delta))
    for _ in range(1000):
        mid = (lo + hi) / 2
        if cdp_delta(rho, mid) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def cdp_rho(eps: float, delta: float) -> float:
    """Largest ρ such that ρ-zCDP implies (ε, δ)-DP."""
    check_eps_delta(eps, delta)
    lo, hi = 0.0, eps + 1
    for _ in range(1000):
        rho = (lo + hi) / 2
        if cdp_delta(rho, eps) <= delta:
            lo = rho
        else:
            hi = rho
    return lo


def check_eps_delta(eps: float, delta: float) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise BudgetError(f"epsilon must be a finite number > 0, got {eps}")
    if not (0 < delta < 1):
        raise BudgetError(f"delta must be in (0, 1), got {delta}")


def gaussian_rho(sigma: float, sensitivity: float = 1.0) -> float:
    return sensitivity**2 / (2 * sigma**2)


def exponential_rho(eps: float) -> float:
    return eps**2 / 8


@dataclass(frozen=True)
class Calibration:
    sigma: float
    epsilon_select: float


def fixed_t_calibration(rho: float, rounds: int, n_initial: int, alpha: float = 0.9) -> Calibration:
    """σ = √((T + d)/(2αρ)), ε_exp = √(8(1−α)ρ/T): spends exactly ρ over ``rounds`` rounds.

    ``n_initial`` (d) counts the extra unit-sensitivity Gaussian measurements charged at σ besides
    the T selected ones (the d one-way marginals in AIM; more in AugFLAIM (Private)).
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
    """ρ-zCDP ledger. ``spend`` refuses anything that would push the total past ``rho``."""

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
