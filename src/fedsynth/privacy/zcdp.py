"""ρ-zCDP ↔ (ε, δ)-DP conversions for the marginal-based (AIM family) mechanisms.

Uses the conversion of Canonne, Kamath & Steinke (2020, Prop. 12 / Cor. 13), which is tighter than
the classic ε = ρ + 2·sqrt(ρ·log(1/δ)) of Bun & Steinke (2016): a mechanism that is ρ-zCDP is
(ε, δ)-DP for

    δ(ρ, ε) = inf_{α>1}  exp((α−1)(αρ−ε)) / (α−1) · (1 − 1/α)^α .

Any α > 1 gives a valid δ, so an imprecise minimisation can only over-state δ (stay safe); the
inverse functions bisect on δ and return the side that keeps the guarantee (ε rounded up, ρ down).
The same formulas are used by Private-PGM's ``cdp2adp`` and by AIM.
"""

from __future__ import annotations

import math

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
    """Largest ρ (rounded down) such that ρ-zCDP implies (ε, δ)-DP: the budget AIM may spend."""
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {eps}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
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


__all__ = ["cdp_delta", "cdp_eps", "cdp_rho", "gaussian_rho"]
