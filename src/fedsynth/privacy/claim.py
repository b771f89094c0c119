"""A privacy claim: what a generator's card says was spent, with every parameter needed to
recompute it — so a hub (or any reader) can re-derive ε instead of trusting a number.

Two mechanisms cover every family today:

* ``"dp-sgd"`` — T = ``steps`` Poisson-subsampled Gaussian steps at rate q = ``sample_rate`` with
  noise multiplier σ = ``noise_multiplier`` on gradients clipped to ``max_grad_norm``;
  ε(δ) from a fresh Opacus accountant of kind ``accountant`` (``"rdp"`` or ``"prv"``).
* ``"zcdp"`` — ``measurements`` Gaussian measurements of L2 sensitivity 1 at noise ``sigma`` plus
  ``selections`` exponential-mechanism draws at parameter ``selection_epsilon``:
  ρ = measurements/(2σ²) + selections·ε_sel²/8 (Cesar & Rogers' bounded-range bound), then
  ε = the smallest ε with ρ-zCDP ⇒ (ε, δ)-DP (Canonne, Kamath & Steinke 2020).

``"legacy"`` marks a card written before claims carried parameters (format
``fedsynth-decoder/1``): it still loads, but its ε cannot be recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedsynth import jsonsafe
from fedsynth.privacy.target import PrivacyParameterError, check_epsilon_delta

MECHANISMS = ("dp-sgd", "zcdp", "legacy")
#: Relative slack between a claimed ε and its recomputation (float round-off, bisection tolerance).
RECOMPUTE_RTOL = 1e-6


def _num(d: dict[str, Any], k: str) -> float | None:
    v = d.get(k)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PrivacyParameterError(f"privacy claim field {k!r} must be a number, got {type(v).__name__}")
    try:  # bounded before float(): float(10**400) is an OverflowError, not a refusal
        jsonsafe.check_number(v, f"privacy claim field {k!r}")
    except jsonsafe.JSONValueError as e:
        raise PrivacyParameterError(str(e)) from None
    return float(v)


@dataclass(frozen=True)
class PrivacyClaim:
    mechanism: str
    epsilon: float
    delta: float
    accountant: str
    #: the accountant library's version when the claim was made (e.g. Opacus "1.5.2"); optional:
    #: cards written before it was recorded still load. The hub recomputes ε with its own.
    accountant_version: str | None = None
    # dp-sgd
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    max_grad_norm: float | None = None
    # zcdp
    rho: float | None = None
    sigma: float | None = None
    measurements: int | None = None
    selections: int | None = None
    selection_epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise PrivacyParameterError(f"unknown privacy mechanism {self.mechanism!r}; known: {MECHANISMS}")
        check_epsilon_delta(self.epsilon, self.delta)
        need: tuple[str, ...]
        if self.mechanism == "dp-sgd":
            need = ("noise_multiplier", "sample_rate", "steps", "max_grad_norm")
        elif self.mechanism == "zcdp":
            need = ("rho", "sigma", "measurements", "selections", "selection_epsilon")
        else:
            need = ()
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise PrivacyParameterError(f"a {self.mechanism} claim needs {missing}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @staticmethod
    def from_dict(d: Any) -> PrivacyClaim:
        if not isinstance(d, dict):
            raise PrivacyParameterError("privacy claim must be a JSON object")
        try:
            jsonsafe.check_json(d, "privacy")
        except jsonsafe.JSONValueError as e:
            raise PrivacyParameterError(str(e)) from None
        mech = d.get("mechanism")
        acc = d.get("accountant")
        if not isinstance(mech, str) or not isinstance(acc, str):
            raise PrivacyParameterError("privacy claim needs string 'mechanism' and 'accountant'")
        ver = d.get("accountant_version")
        if ver is not None and not isinstance(ver, str):
            raise PrivacyParameterError("privacy claim field 'accountant_version' must be a string")
        eps, dl = _num(d, "epsilon"), _num(d, "delta")
        if eps is None or dl is None:
            raise PrivacyParameterError("privacy claim needs 'epsilon' and 'delta'")
        ints = {}
        for k in ("steps", "measurements", "selections"):
            v = _num(d, k)
            if v is not None and (v != int(v) or v < 0 or v > 10**9):
                raise PrivacyParameterError(f"privacy claim field {k!r} must be a non-negative integer")
            ints[k] = None if v is None else int(v)
        return PrivacyClaim(
            mechanism=mech,
            epsilon=eps,
            delta=dl,
            accountant=acc[:32],
            accountant_version=None if ver is None else ver[:32],
            noise_multiplier=_num(d, "noise_multiplier"),
            sample_rate=_num(d, "sample_rate"),
            max_grad_norm=_num(d, "max_grad_norm"),
            rho=_num(d, "rho"),
            sigma=_num(d, "sigma"),
            selection_epsilon=_num(d, "selection_epsilon"),
            **ints,
        )

    def recompute_epsilon(self) -> float:
        """ε re-derived from the claim's parameters (independent of whoever trained)."""
        if self.mechanism == "dp-sgd":
            from fedsynth.privacy.dpsgd import ACCOUNTANTS, epsilon_spent

            if self.accountant not in ACCOUNTANTS:
                raise PrivacyParameterError(f"accountant {self.accountant!r} is not one of {ACCOUNTANTS}")
            q, sig, t = self.sample_rate, self.noise_multiplier, self.steps
            assert q is not None and sig is not None and t is not None
            if not (0 < q <= 1) or sig <= 0 or t < 1:
                raise PrivacyParameterError("dp-sgd claim needs 0 < sample_rate <= 1, noise > 0, steps >= 1")
            return epsilon_spent(sig, q, t, self.delta, self.accountant)
        if self.mechanism == "zcdp":
            from fedsynth.privacy.zcdp import cdp_eps

            return cdp_eps(self.recompute_rho(), self.delta)
        raise PrivacyParameterError("a legacy card carries no parameters: its ε cannot be recomputed")

    def recompute_rho(self) -> float:
        """ρ of the zCDP mechanisms the claim lists (see the module docstring)."""
        if self.mechanism != "zcdp":
            raise PrivacyParameterError("only zcdp claims have a ρ")
        sig, m, s, e = self.sigma, self.measurements, self.selections, self.selection_epsilon
        assert sig is not None and m is not None and s is not None and e is not None
        if sig <= 0 or e < 0:
            raise PrivacyParameterError("zcdp claim needs sigma > 0 and selection_epsilon >= 0")
        return m / (2 * sig**2) + s * e**2 / 8

    def verify(self) -> float:
        """Recompute ε and refuse a claim that under-states it. Returns the recomputed ε."""
        eps = self.recompute_epsilon()
        if eps > self.epsilon * (1 + RECOMPUTE_RTOL) + 1e-12:
            raise PrivacyParameterError(
                f"claimed ε = {self.epsilon:.6g} but the parameters give ε = {eps:.6g}"
            )
        if self.mechanism == "zcdp" and self.rho is not None:
            rho = self.recompute_rho()
            if rho > self.rho * (1 + RECOMPUTE_RTOL) + 1e-15:
                raise PrivacyParameterError(f"claimed ρ = {self.rho:.6g} but the parameters give {rho:.6g}")
        return eps


__all__ = ["MECHANISMS", "PrivacyClaim"]
