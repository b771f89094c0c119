"""Marginal counts and noisy measurements, int64 end to end.

M_q(D) is the histogram of the records of D over the cells of Ω_q (row-major over q's
attributes). Counts are int64 (``np.bincount`` with an int64 index): a census-size table with a
cell above 65,535 does not wrap (the FLAIM reference stored answers as uint16).

* Gaussian mechanism: y = M_q(D) + N(0, σ²·I); one record changes M_q by one cell (add/remove
  neighbours), L2 sensitivity 1, ρ = 1/(2σ²).
* Distributed noise: each of m clients adds an integer Skellam share Sk(μ/m) = Pois(μ/(2m)) −
  Pois(μ/(2m)); the sum of the shares is Sk(μ) with variance μ = σ², so the secure sum already
  holds the noisy answer and nobody (the server included) sees an exact count. Privacy of the
  Skellam mechanism (Agarwal, Kairouz, Liu 2021): for Δ₁ = Δ₂ = 1 per marginal it is
  (α, α/(2μ) + min((2α−1+6)/(4μ²), 3/(2μ)))-RDP, bounded by ρ-zCDP with
  ρ = 1/(2σ²) + 7/(4σ⁴) (:func:`fedsynth.privacy.zcdp.skellam_rho`; ρ arithmetic lives in
  :mod:`fedsynth.privacy.zcdp`).
"""

from __future__ import annotations

import numpy as np


def marginal_counts(
    codes: np.ndarray, sizes: dict[str, int], attrs: tuple[str, ...], columns: tuple[str, ...]
) -> np.ndarray:
    """int64 histogram of ``codes`` (n, d) over ``attrs`` (flattened, row-major)."""
    shape = tuple(sizes[a] for a in attrs)
    n_cells = int(np.prod(shape, dtype=np.int64))
    if len(codes) == 0:
        return np.zeros(n_cells, dtype=np.int64)
    idx = np.zeros(len(codes), dtype=np.int64)
    for a in attrs:
        idx = idx * sizes[a] + codes[:, columns.index(a)].astype(np.int64)
    return np.bincount(idx, minlength=n_cells).astype(np.int64)


def skellam_share(shape: int | tuple[int, ...], variance: float, rng: np.random.Generator) -> np.ndarray:
    """Integer noise share with mean 0 and the given variance (Skellam: difference of Poissons)."""
    lam = variance / 2.0
    return (rng.poisson(lam, size=shape) - rng.poisson(lam, size=shape)).astype(np.int64)
