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

from fedsynth.privacy import zcdp
from fedsynth.privacy.zcdp import gaussian_rho


class BudgetError(ValueError):
    """A privacy parameter is invalid or a spend would exceed the budget."""


def cdp_rho(eps: float, delta: float) -> float:
    """Largest ρ such that ρ-zCDP implies (ε, δ)-DP (the conversion lives in privacy/zcdp.py)."""
    check_eps_delta(eps, delta)
    return zcdp.cdp_rho(eps, delta)


def check_eps_delta(eps: float, delta: float) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise BudgetError(f"epsilon must be a finite number > 0, got {eps}")
    if not (0 < delta < 1):
        raise BudgetError(f"delta must be in (0, 1), got {delta}")


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
