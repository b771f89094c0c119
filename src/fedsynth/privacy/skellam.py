"""The multi-dimensional Skellam mechanism for a vector query of any L1 / L2 sensitivity.

Noise: every coordinate gets an independent symmetric Skellam variable of variance μ,
Sk(μ) = Pois(μ/2) − Pois(μ/2) (the convention of :func:`fedsynth.flaim.measure.skellam_share` and
:func:`fedsynth.privacy.zcdp.skellam_rho`: μ is the *variance*). Sums of independent Skellam
variables are Skellam with the summed variance, so m parties adding Sk(μ/m) each release Sk(μ).

**The bound.** Agarwal, Kairouz & Liu (2021, "The Skellam Mechanism for Differentially Private
Federated Learning", Thm. 3.5) — written with Sk(λ, λ), variance 2λ — give, for an integer query
whose L1 / L2 sensitivities are Δ₁ / Δ₂ and after substituting λ = μ/2,

    RDP(α) ≤ α·Δ₂²/(2μ) + min( ((2α−1)·Δ₂² + 6·Δ₁) / (4μ²),  3·Δ₁/(2μ) ).

**From RDP to zCDP.** ρ-zCDP means RDP(α) ≤ α·ρ for every α > 1, so we need a K with
(2α−1)Δ₂² + 6Δ₁ ≤ α·K for all α ≥ 1. The left side over α is 2Δ₂² + (6Δ₁ − Δ₂²)/α, monotone in
α, so its supremum over α ≥ 1 is its value at α = 1 or its limit α → ∞:
K = max(Δ₂² + 6Δ₁, 2Δ₂²). The second branch is constant in α and 3Δ₁/(2μ) ≤ α·3Δ₁/(2μ) for α ≥ 1.
Since min(a, b) ≤ min(α·a', α·b') whenever a ≤ α·a' and b ≤ α·b',

    ρ = Δ₂²/(2μ) + min( max(Δ₂² + 6Δ₁, 2Δ₂²) / (4μ²),  3Δ₁/(2μ) )

is a valid zCDP bound (:func:`skellam_rho_general`). For Δ₁ = Δ₂ = 1 and μ ≥ 7/6 it is exactly
1/(2μ) + 7/(4μ²) = :func:`fedsynth.privacy.zcdp.skellam_rho` (below 7/6 the second branch makes it
tighter). It decreases in μ, so more noise than calibrated (e.g. more surviving noise shares)
never costs more; :func:`skellam_variance` bisects for the smallest μ meeting a ρ budget and
returns the upper end (the side that keeps the guarantee).
"""

from __future__ import annotations

import math


def _check(mu: float, l1: float, l2: float) -> None:
    if not (math.isfinite(mu) and mu > 0):
        raise ValueError(f"Skellam variance must be a finite number > 0, got {mu}")
    if not (math.isfinite(l1) and math.isfinite(l2) and l1 >= 0 and l2 >= 0):
        raise ValueError(f"sensitivities must be finite and >= 0, got Δ1 = {l1}, Δ2 = {l2}")


def skellam_rho_general(mu: float, l1: float, l2: float) -> float:
    """zCDP ρ of adding Sk(μ) (variance μ) per coordinate to an integer query with L1 / L2
    sensitivities ``l1`` / ``l2`` (see the module docstring for the derivation)."""
    _check(mu, l1, l2)
    k = max(l2**2 + 6 * l1, 2 * l2**2)
    return l2**2 / (2 * mu) + min(k / (4 * mu**2), 3 * l1 / (2 * mu))


def skellam_variance(rho: float, l1: float, l2: float) -> float:
    """The smallest variance μ (rounded up) with ``skellam_rho_general(μ, l1, l2) <= rho``."""
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho}")
    if not l2 > 0:
        raise ValueError("the L2 sensitivity must be > 0")
    lo = l2**2 / (2 * rho)  # the Gaussian part alone already needs this much: ρ_sk(lo) > ρ
    hi = 2 * lo + 10.0
    while skellam_rho_general(hi, l1, l2) > rho:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if skellam_rho_general(mid, l1, l2) > rho:
            lo = mid
        else:
            hi = mid
    return hi


__all__ = ["skellam_rho_general", "skellam_variance"]
