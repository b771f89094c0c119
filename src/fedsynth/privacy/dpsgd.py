"""DP-SGD accounting: the single path from a target (ε, δ) to noise, and from training to ε spent.

Training uses Poisson subsampling with rate q = B / n (Opacus' default); the accountant is
Opacus' RDP accountant for the subsampled Gaussian mechanism (``"prv"`` is available too). The
same functions are used (a) to calibrate the noise multiplier before training and (b) to recompute
the ε of a finished run from its (σ, q, steps, δ), so a reported ε can always be re-derived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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


def rdp_curve(noise_multiplier: float, sample_rate: float, steps: int, orders: list[float]) -> list[float]:
    """RDP ε(α) at the given orders (for tests against published values)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    return [
        float(v)
        for v in compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=orders)
    ]


__all__ = [
    "ACCOUNTANTS",
    "DPSGDAccount",
    "PrivacyParameterError",
    "RDPAccountant",
    "calibrate_noise",
    "check_epsilon_delta",
    "default_delta",
    "dpsgd_claim",
    "epsilon_spent",
    "rdp_curve",
]
