"""DP-SGD accounting: the single path from a target (ε, δ) to noise, and from training to ε spent.

Training uses Poisson subsampling with rate q = B / n (Opacus' default); the accountant is
Opacus' RDP accountant for the subsampled Gaussian mechanism (``"prv"`` is available too). The
same functions are used (a) to calibrate the noise multiplier before training and (b) to recompute
the ε of a finished run from its (σ, q, steps, δ), so a reported ε can always be re-derived.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import opacus
import torch
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.utils import get_noise_multiplier

from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyParameterError, check_epsilon_delta, default_delta

ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class DPSGDAccount:
    """Everything needed to recompute the privacy of one DP-SGD run."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon: float
    accountant: str = "rdp"
    max_grad_norm: float = 1.0

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def dpsgd_claim(account: DPSGDAccount | None) -> PrivacyClaim:
    """The card's claim for a DP-SGD run: every parameter a reader needs to re-derive ε."""
    if account is None:
        raise ValueError("refusing to card a non-private generator: cards carry an accountant's (ε, δ)")
    return PrivacyClaim(
        mechanism="dp-sgd",
        epsilon=account.epsilon,
        delta=account.delta,
        accountant=account.accountant,
        accountant_version=f"opacus {opacus.__version__}",  # which accountant code produced ε
        noise_multiplier=account.noise_multiplier,
        sample_rate=account.sample_rate,
        steps=account.steps,
        max_grad_norm=account.max_grad_norm,
    )


def calibrate_noise(
    epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """Smallest σ (within Opacus' tolerance) such that ``steps`` Poisson-subsampled steps are (ε, δ)-DP."""
    check_epsilon_delta(epsilon, delta)
    if not 0 < sample_rate <= 1:
        raise PrivacyParameterError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise PrivacyParameterError("need at least one step")
    if accountant not in ACCOUNTANTS:
        raise PrivacyParameterError(f"accountant must be one of {ACCOUNTANTS}")
    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            epsilon_tolerance=0.005,
        )
    )


def epsilon_spent(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """ε of ``steps`` subsampled-Gaussian steps, from a fresh accountant (independent of training)."""
    acc = create_accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


def plan_poisson(n: int, batch_size: int, epochs: int, min_steps: int, max_steps: int) -> tuple[float, int]:
    """Sample rate q = min(1, B/n) and the number of steps for ``epochs`` passes, clamped to
    [min_steps, max_steps] (small tables get enough steps; tiny q stays fast)."""
    q = min(1.0, batch_size / n)
    steps_per_epoch = max(1, math.ceil(1.0 / q))
    return q, min(max_steps, max(min_steps, epochs * steps_per_epoch))


class DPSGD:
    """One DP-SGD run with Poisson sampling: σ calibrated for (ε, δ) over the planned steps, Opacus'
    ``DPOptimizerFastGradientClipping`` around ``optimizer`` (the caller writes the *clipped
    per-sample sum* into ``.grad``, e.g. with :class:`~fedsynth.privacy.clipping.GhostClipper`;
    Opacus adds N(0, σ²C²), divides by the expected batch size and steps), and ONE accountant fed
    by every step. :meth:`account` cross-checks that accountant against its own history and a
    fresh recomputation, so a claim can never say less than what ran."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        epsilon: float,
        delta: float,
        sample_rate: float,
        steps: int,
        max_grad_norm: float,
        expected_batch_size: int,
        generator: torch.Generator,
        accountant: str = "rdp",
    ) -> None:
        from opacus.optimizers import DPOptimizerFastGradientClipping

        check_epsilon_delta(epsilon, delta)
        self.delta, self.sample_rate, self.steps = float(delta), sample_rate, steps
        self.max_grad_norm, self.kind = max_grad_norm, accountant
        self.sigma = calibrate_noise(epsilon, delta, sample_rate, steps, accountant)
        self.optimizer = DPOptimizerFastGradientClipping(
            optimizer,
            noise_multiplier=self.sigma,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",
            generator=generator,
        )
        self.accountant = create_accountant(accountant)
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))

    def empty_step(self, params: Iterable[torch.nn.Parameter]) -> None:
        """An empty Poisson batch still releases a (pure-noise) update, as the analysis assumes:
        skipping it would make the number of noisy releases depend on the data."""
        for p in params:
            p.grad = torch.zeros_like(p)
        self.optimizer.step()

    def poisson_batch(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Row indices of one step: each row independently with probability q (the accountant's q)."""
        return np.flatnonzero(rng.random(n) < self.sample_rate)

    def account(self) -> DPSGDAccount:
        hist = self.accountant.history
        taken = sum(h[2] for h in hist)
        if any((h[0], h[1]) != (self.sigma, self.sample_rate) for h in hist):
            raise RuntimeError(f"accountant history {hist} has steps at another (σ, q)")
        spent = float(self.accountant.get_epsilon(delta=self.delta))
        recomputed = epsilon_spent(self.sigma, self.sample_rate, taken, self.delta, self.kind)
        if not math.isclose(spent, recomputed, rel_tol=1e-6):
            raise RuntimeError(f"accountant disagrees with recomputation: {spent} vs {recomputed}")
        return DPSGDAccount(
            self.sigma, self.sample_rate, taken, self.delta, spent, self.kind, self.max_grad_norm
        )


def rdp_curve(noise_multiplier: float, sample_rate: float, steps: int, orders: list[float]) -> list[float]:
    """RDP ε(α) at the given orders (for tests against published values)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    return [
        float(v)
        for v in compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=orders)
    ]


__all__ = [
    "ACCOUNTANTS",
    "DPSGD",
    "DPSGDAccount",
    "PrivacyParameterError",
    "RDPAccountant",
    "calibrate_noise",
    "check_epsilon_delta",
    "default_delta",
    "dpsgd_claim",
    "epsilon_spent",
    "plan_poisson",
    "rdp_curve",
]
