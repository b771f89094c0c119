"""Privacy targets and the rules that combine privacy claims — one place for each rule.

* :func:`check_epsilon_delta` — the only validator of an (ε, δ) pair in the code base;
* :func:`default_delta` — the SGDE δ rule δ ≤ 1/(10·|D_c|), rounded down to one significant digit;
* :func:`parallel` — disjoint data (one generator per class of a silo): the set costs the max ε
  and max δ over its members (parallel composition);
* :func:`sequential` — the same records reused (a silo's pushes over time): ε and δ add up
  (basic sequential composition).

:class:`PrivacyTarget` is what a caller asks a generator family for; the family asks its
accountant for the noise, trains, and records what the accountant says was spent
(:class:`fedsynth.privacy.claim.PrivacyClaim`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


class PrivacyParameterError(ValueError):
    """An ε, δ, ρ or other privacy parameter is invalid, or a spend would exceed a budget."""


def check_epsilon_delta(epsilon: float, delta: float | None) -> None:
    """Validate a privacy target; ``delta=None`` means "chosen later by the δ rule"."""
    if isinstance(epsilon, bool) or not (
        isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0
    ):
        raise PrivacyParameterError(f"epsilon must be a finite number > 0, got {epsilon}")
    if delta is not None and (
        isinstance(delta, bool) or not (isinstance(delta, int | float) and 0 < delta < 1)
    ):
        raise PrivacyParameterError(f"delta must be in (0, 1), got {delta}")


def default_delta(n: int) -> float:
    """The SGDE rule δ ≤ 1/(10·|D_c|), rounded down to one significant digit."""
    if n < 1:
        raise PrivacyParameterError("delta rule needs n >= 1")
    raw = 1.0 / (10.0 * n)
    exp = math.floor(math.log10(raw))
    return math.floor(raw / 10**exp) * 10**exp


@dataclass(frozen=True)
class PrivacyTarget:
    """(ε, δ) a fit must stay within. ``delta=None``: the family applies :func:`default_delta`
    to the rows each of its mechanisms sees."""

    epsilon: float
    delta: float | None = None

    def __post_init__(self) -> None:
        check_epsilon_delta(self.epsilon, self.delta)

    def delta_for(self, n_rows: int) -> float:
        return self.delta if self.delta is not None else default_delta(n_rows)


def parallel(claims: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """(ε, δ) of mechanisms on disjoint subsets of the records: the max of each."""
    eps, dl = 0.0, 0.0
    for e, d in claims:
        eps, dl = max(eps, e), max(dl, d)
    return eps, dl


def sequential(claims: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """(ε, δ) of mechanisms on the same records: the sums (basic composition)."""
    eps, dl = 0.0, 0.0
    for e, d in claims:
        eps, dl = eps + e, dl + d
    return eps, dl


__all__ = [
    "PrivacyParameterError",
    "PrivacyTarget",
    "check_epsilon_delta",
    "default_delta",
    "parallel",
    "sequential",
]
