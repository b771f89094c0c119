"""Run a federation-level fit in one process: the simulation and test path.

The silos' frames are encoded silo-side (:attr:`FederationFit.encode`), every client vector goes
through a secure sum (in-process SecAgg+ by default), and :func:`~fedsynth.flaim.driver.drive` is
the one loop — the same loop the Flower ServerApp runs (:mod:`fedsynth.federated.fed_round`).
Participation is cross-silo: every silo in every round (p = 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fedsynth.data.schema import Schema
from fedsynth.flaim.driver import InProcessExchange, drive
from fedsynth.generators.base import FamilySpec, FederationFamily, FederationFit, GeneratorSet
from fedsynth.privacy.target import PrivacyTarget
from fedsynth.secagg.secure_sum import SecAggPlusSum, SecureSum


@dataclass
class FederationReport:
    """What one federation run measured (local to the runner; the card holds the privacy claim)."""

    silos: int
    contributors: list[int]
    seconds: float
    bytes_sent: dict[int, int] = field(default_factory=dict)  # per silo, from the real messages
    bytes_received: dict[int, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)  # family-specific (e.g. realised noise)

    def to_dict(self) -> dict[str, Any]:
        n = max(len(self.bytes_sent), 1)
        return {
            "silos": self.silos,
            "contributors": self.contributors,
            "seconds": self.seconds,
            "bytes_sent_per_silo": sum(self.bytes_sent.values()) / n,
            "bytes_received_per_silo": sum(self.bytes_received.values()) / n,
            **self.detail,
        }


def everyone(silos: int) -> Callable[[int], list[int]]:
    """Cross-silo participation: all silos in every round."""
    return lambda _round: list(range(silos))


def run_fit(
    fit: FederationFit, codes: Sequence[Any], secure_sum: SecureSum | None = None
) -> tuple[GeneratorSet, FederationReport]:
    """Drive an already-built fit over encoded silo data (the in-process exchange)."""
    t0 = time.perf_counter()
    if secure_sum is None:
        secure_sum = SecAggPlusSum(threshold=fit.min_survivors)
    th = getattr(secure_sum, "threshold", None)
    if fit.min_survivors is not None and th is not None and th < fit.min_survivors:
        raise ValueError(
            f"the secure sum's threshold {th} is below the fit's {fit.min_survivors} surviving silos: "
            "an under-noised sum could be unmasked"
        )
    exchange = InProcessExchange(fit.method, codes, secure_sum)
    state = drive(fit.method, exchange, everyone(len(codes)))
    contributors = sorted(exchange.contributors)
    gset = fit.finish(state, contributors)
    rep = FederationReport(
        len(codes),
        contributors,
        time.perf_counter() - t0,
        dict(exchange.sent),
        dict(exchange.received),
        fit.detail(state),
    )
    return gset, rep


def fit_federation(
    family: FederationFamily,
    frames: Sequence[pd.DataFrame],
    schema: Schema,
    target: PrivacyTarget,
    config: Any = None,
    *,
    seed: int = 0,
    spec: FamilySpec | None = None,
    min_silos: int = 2,
    secure_sum: SecureSum | None = None,
) -> tuple[GeneratorSet, FederationReport]:
    """Fit ``family`` across the silos ``frames`` (each stays "local": only its encoded client
    vectors enter the secure sum). Returns the federation's generator set and the run's report."""
    # the silo-count and δ rule is checked once, in federation_fit (base.federation_delta)
    fit = family.federation_fit(
        schema, target, len(frames), config, seed=seed, spec=spec, min_silos=min_silos
    )
    codes = [fit.encode(df) for df in frames]
    return run_fit(fit, codes, secure_sum)


__all__ = ["FederationReport", "everyone", "fit_federation", "run_fit"]
