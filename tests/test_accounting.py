"""Accounting you can trust: every accountant path the project uses, checked against published
reference values and against an independent library (Google's dp-accounting)."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent, ZCDpEvent, pld, rdp
from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp
from opacus.accountants import RDPAccountant

from fedsynth.generators.vae import train as vae_mod
from fedsynth.generators.vae.nets import DecoderSpec
from fedsynth.generators.vae.train import VAEConfig, plan_steps, train_class_vae
from fedsynth.privacy.dpsgd import calibrate_noise, epsilon_spent, rdp_curve
from fedsynth.privacy.zcdp import cdp_delta, cdp_eps, cdp_rho, gaussian_rho

# dp-accounting logs a warning for every fractional order it cannot evaluate (it then drops it).
logging.getLogger().setLevel(logging.ERROR)

ORDERS = RDPAccountant.DEFAULT_ALPHAS


def dpa_events(q: float, sigma: float, steps: int) -> SelfComposedDpEvent:
    return SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)


def dpa_rdp_eps(q: float, sigma: float, steps: int, delta: float) -> float:
    acc = rdp.RdpAccountant(ORDERS)
    acc.compose(dpa_events(q, sigma, steps))
    return float(acc.get_epsilon(delta))


def dpa_pld_eps(q: float, sigma: float, steps: int, delta: float) -> float:
    # Pessimistic (upper-bounding) discretisation: a tight, valid ε for the subsampled Gaussian.
    acc = pld.PLDAccountant(value_discretization_interval=1e-3)
    acc.compose(dpa_events(q, sigma, steps))
    return float(acc.get_epsilon(delta))


# --------------------------------------------------------------------------------------------
# Published reference values (design.md §3, from dp-accounting's own test suite)
# --------------------------------------------------------------------------------------------
def test_rdp_curve_matches_published_values() -> None:
    got = rdp_curve(2.5, 0.01, 50, [1.5, 2.5, 5, 50, 100])
    want = [6.5007e-4, 1.0854e-3, 2.1808e-3, 2.3846e-2, 167.42]
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=2e-4)


def test_rdp_curve_integer_orders_match_dp_accounting() -> None:
    # Integer orders have a closed form in both libraries; they must agree to round-off.
    orders = [2, 3, 8, 16, 32, 64]
    for q, sigma, steps in [(0.01, 2.5, 50), (0.1, 1.0, 300), (0.002, 0.8, 1000), (1.0, 4.0, 3)]:
        theirs = dpa_rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, orders) * steps
        assert rdp_curve(sigma, q, steps, orders) == pytest.approx(list(theirs), rel=1e-9)


def test_gaussian_reference_sigma_gives_eps_1_delta_1e6() -> None:
    sigma = 4.530877117
    # Through the RDP conversion the project uses, this σ is exactly (1, 1e-6)-DP ...
    assert epsilon_spent(sigma, 1.0, 1, 1e-6) == pytest.approx(1.0, abs=1e-5)
    # ... and calibration inverts it (to Opacus' tolerance, always on the safe side: σ ≥ 4.5309).
    sig = calibrate_noise(1.0, 1e-6, 1.0, 1)
    assert sigma <= sig <= sigma * 1.01
    # The exact conversion (analytic Gaussian mechanism, Balle & Wang 2018) is tighter: RDP is a
    # valid, slightly pessimistic bound for this σ, and never below the exact value.
    exact = analytic_gaussian_eps(sigma, 1e-6)
    assert exact == pytest.approx(0.92739, abs=2e-4)
    pld_acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    pld_acc.compose(GaussianDpEvent(sigma))
    assert pld_acc.get_epsilon(1e-6) == pytest.approx(exact, abs=2e-3)
    assert epsilon_spent(sigma, 1.0, 1, 1e-6) >= exact


def analytic_gaussian_eps(sigma: float, delta: float) -> float:
    """Exact ε of the Gaussian mechanism (sensitivity 1): solve
    δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ) for ε by bisection (δ(ε) decreases in ε)."""
    from scipy.stats import norm

    def delta_of(eps: float) -> float:
        a, b = 0.5 / sigma - eps * sigma, -0.5 / sigma - eps * sigma
        return float(norm.cdf(a) - math.exp(eps) * norm.cdf(b))

    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if delta_of(mid) <= delta else (mid, hi)
    return hi


# --------------------------------------------------------------------------------------------
# Against dp-accounting over a grid
# --------------------------------------------------------------------------------------------
GRID = list(itertools.product([0.005, 0.05, 0.15], [0.8, 1.5, 4.0], [1, 100, 1500]))
DELTAS = [1e-5, 1e-8]


@pytest.mark.parametrize(("q", "sigma", "steps"), GRID)
def test_epsilon_spent_agrees_with_dp_accounting(q: float, sigma: float, steps: int) -> None:
    for delta in DELTAS:
        ours = epsilon_spent(sigma, q, steps, delta)
        theirs_rdp = dpa_rdp_eps(q, sigma, steps, delta)
        theirs_pld = dpa_pld_eps(q, sigma, steps, delta)
        if theirs_rdp <= 10:
            # The regime generators are trained in: same RDP bound to within 1 %.
            assert ours == pytest.approx(theirs_rdp, rel=1e-2)
        else:
            # Far outside it dp-accounting drops fractional orders it cannot evaluate, so its RDP
            # bound is looser; ours may be lower but never by more than that gap allows.
            assert ours <= theirs_rdp * 1.01
        # Never under-report: an RDP bound cannot be below the (near-exact, pessimistic) PLD ε.
        assert ours >= theirs_pld - 0.02 * max(1.0, theirs_pld), (ours, theirs_pld)


@pytest.mark.parametrize(
    ("eps", "delta", "q", "steps"), [(1.0, 1e-5, 0.02, 500), (0.5, 1e-6, 0.1, 200), (3.0, 1e-5, 0.005, 1500)]
)
def test_calibrate_noise_hits_target_and_dp_accounting_confirms(
    eps: float, delta: float, q: float, steps: int
) -> None:
    sigma = calibrate_noise(eps, delta, q, steps)
    spent = epsilon_spent(sigma, q, steps, delta)
    assert spent <= eps + 1e-9  # calibrated σ never overshoots the budget
    assert spent >= eps - 0.02  # ... and does not waste it
    assert dpa_rdp_eps(q, sigma, steps, delta) == pytest.approx(spent, rel=1e-2)
    assert dpa_pld_eps(q, sigma, steps, delta) <= spent + 0.02


def test_prv_accountant_path_is_between_pld_and_rdp() -> None:
    q, sigma, steps, delta = 0.02, 1.1, 400, 1e-5
    prv = epsilon_spent(sigma, q, steps, delta, accountant="prv")
    assert dpa_pld_eps(q, sigma, steps, delta) - 0.05 <= prv <= epsilon_spent(sigma, q, steps, delta) + 1e-6


# --------------------------------------------------------------------------------------------
# The DP-SGD training path: reported ε, recomputed ε, and the sampling actually performed
# --------------------------------------------------------------------------------------------
def _tiny_spec(dim_cont: int = 3) -> DecoderSpec:
    layout = (*((f"c{i}", "continuous", 1) for i in range(dim_cont)), ("k", "categorical", 2))
    return DecoderSpec(latent_dim=2, hidden=(8,), layout=layout)


def test_train_class_vae_samples_at_the_accounted_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    n = 50
    x = np.concatenate([rng.random((n, 3)), np.eye(2)[rng.integers(0, 2, n)]], axis=1).astype(np.float32)
    cfg = VAEConfig(latent_dim=2, hidden=(8,), batch_size=10, epochs=1, min_steps=250, max_steps=250)
    sizes: list[int] = []
    steps_taken = [0]
    orig_forward = vae_mod.VAE.forward
    from opacus.optimizers import DPOptimizerFastGradientClipping

    orig_step = DPOptimizerFastGradientClipping.step

    def spy_forward(self, xb, noise):  # type: ignore[no-untyped-def]
        sizes.append(int(xb.shape[0]))
        return orig_forward(self, xb, noise)

    def spy_step(self, *a, **k):  # type: ignore[no-untyped-def]
        steps_taken[0] += 1
        return orig_step(self, *a, **k)

    monkeypatch.setattr(vae_mod.VAE, "forward", spy_forward)
    monkeypatch.setattr(DPOptimizerFastGradientClipping, "step", spy_step)
    _, rep = train_class_vae(x, _tiny_spec(), cfg, class_label="a", epsilon=2.0, delta=1e-4, seed=3)
    acc = rep.account
    assert acc is not None
    q, steps = plan_steps(n, cfg)
    assert acc.sample_rate == q == 0.2 and acc.steps == steps == steps_taken[0]
    # Empty Poisson batches skip forward(); they count as size 0.
    b = np.array(sizes + [0] * (steps - len(sizes)), dtype=float)
    # Mean batch size / n ≈ q within a 99.9 % binomial band (total inclusions ~ Bin(steps·n, q)).
    total, trials = b.sum(), steps * n
    half = 3.3 * math.sqrt(trials * q * (1 - q))
    assert abs(total - trials * q) <= half, (total / trials, q)
    # Poisson (not fixed-size) sampling: batch sizes vary like Bin(n, q).
    assert b.var() == pytest.approx(n * q * (1 - q), rel=0.35)
    # The report's ε is a fresh accountant's answer for exactly what was done ...
    assert acc.epsilon == pytest.approx(epsilon_spent(acc.noise_multiplier, q, steps, acc.delta), rel=1e-9)
    # ... within budget, and dp-accounting agrees.
    assert acc.epsilon <= 2.0 + 1e-9
    assert dpa_rdp_eps(q, acc.noise_multiplier, steps, acc.delta) == pytest.approx(acc.epsilon, rel=1e-2)


# --------------------------------------------------------------------------------------------
# zCDP ↔ (ε, δ) for the AIM family
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.005, 0.05, 0.3, 1.0, 5.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-9])
def test_zcdp_conversion_against_dp_accounting(rho: float, delta: float) -> None:
    eps = cdp_eps(rho, delta)
    # dp-accounting's RDP accountant with a zCDP event (ε(α) = ρα) and a fine order grid uses the
    # same CKS conversion: it can only be (slightly) looser than our continuous optimum over α.
    acc = rdp.RdpAccountant([1 + 0.01 * i for i in range(1, 100)] + list(np.geomspace(2, 5000, 3000)))
    acc.compose(ZCDpEvent(rho))
    theirs = acc.get_epsilon(delta)
    assert eps <= theirs + 1e-9
    assert eps == pytest.approx(theirs, rel=2e-3)
    # Tighter than the classic Bun–Steinke bound, and consistent with δ.
    assert eps <= rho + 2 * math.sqrt(rho * math.log(1 / delta))
    assert cdp_delta(rho, eps) <= delta * (1 + 1e-9)
    # Round trip: the ρ allowed for (ε, δ) is the ρ we started from.
    assert cdp_rho(eps, delta) == pytest.approx(rho, rel=1e-6)


def test_zcdp_gaussian_is_conservative_vs_exact() -> None:
    # A Gaussian mechanism with σ is 1/(2σ²)-zCDP; converting through zCDP must never claim less
    # than the exact (ε, δ) of that Gaussian.
    for sigma in [0.7, 2.0, 4.530877117, 10.0]:
        for delta in [1e-5, 1e-9]:
            assert cdp_eps(gaussian_rho(sigma), delta) >= analytic_gaussian_eps(sigma, delta) - 1e-6


def test_zcdp_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="delta"):
        cdp_eps(0.1, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        cdp_rho(-1.0, 1e-6)
    with pytest.raises(ValueError, match="rho"):
        cdp_delta(float("nan"), 1.0)


# --------------------------------------------------------------------------------------------
# The FLAIM core's zCDP accounting (now in fedsynth.privacy.zcdp): conversions, exact ledger
# --------------------------------------------------------------------------------------------
from fedsynth.privacy import zcdp  # noqa: E402


@pytest.mark.parametrize(("eps", "delta"), [(0.1, 1e-6), (1.0, 1e-6), (1.0, 1e-9), (3.0, 1e-5), (10.0, 1e-8)])
def test_flaim_zcdp_conversions_match_reference(eps: float, delta: float) -> None:
    rho = zcdp.cdp_rho(eps, delta)
    assert rho == pytest.approx(cdp_rho(eps, delta), rel=1e-6)
    # Converting the budget back never claims more than (ε, δ) — checked with dp-accounting too.
    assert cdp_delta(rho, eps) <= delta * (1 + 1e-6)
    assert cdp_eps(rho, delta) <= eps * (1 + 1e-6)
    acc = rdp.RdpAccountant([1 + 0.01 * i for i in range(1, 100)] + list(np.geomspace(2, 5000, 3000)))
    acc.compose(ZCDpEvent(rho))
    assert acc.get_epsilon(delta) == pytest.approx(eps, rel=3e-3)
    assert acc.get_epsilon(delta) >= eps - 1e-9  # a grid over α can only be looser


@pytest.mark.parametrize(("rounds", "d", "alpha"), [(10, 14, 0.9), (1, 1, 0.5), (64, 30, 0.95)])
def test_flaim_fixed_t_calibration_spends_exactly_the_budget(rounds: int, d: int, alpha: float) -> None:
    rho = zcdp.cdp_rho(1.0, 1e-6)
    cal = zcdp.fixed_t_calibration(rho, rounds, d, alpha)
    # σ = √((T+d)/(2αρ)), ε_exp = √(8(1−α)ρ/T) (design.md §2)
    assert cal.sigma == pytest.approx(math.sqrt((rounds + d) / (2 * alpha * rho)), rel=1e-12)
    assert cal.epsilon_select == pytest.approx(math.sqrt(8 * (1 - alpha) * rho / rounds), rel=1e-12)
    ledger = zcdp.Budget(rho)
    for i in range(d):
        ledger.gaussian(cal.sigma, f"1-way {i}")
    for t in range(rounds):
        ledger.exponential(cal.epsilon_select, f"select {t}")
        ledger.gaussian(cal.sigma, f"measure {t}")
    assert ledger.used == pytest.approx(rho, rel=1e-9)
    assert ledger.used <= rho * (1 + 1e-9)  # total ρ never exceeds the budget
    assert cdp_eps(ledger.used, 1e-6) <= 1.0 + 1e-6
    with pytest.raises(zcdp.BudgetError):
        ledger.gaussian(cal.sigma, "one measurement too many")


def test_flaim_mechanism_rhos() -> None:
    assert zcdp.gaussian_rho(4.530877117) == pytest.approx(gaussian_rho(4.530877117))
    assert zcdp.exponential_rho(0.4) == pytest.approx(0.4**2 / 8)
    for sigma in [1.0, 3.0, 30.0]:
        # Integer (Skellam) noise of the same variance is never cheaper than Gaussian noise,
        # and converges to it for large σ.
        assert zcdp.skellam_rho(sigma) >= gaussian_rho(sigma)
    assert zcdp.skellam_rho(1000.0) == pytest.approx(gaussian_rho(1000.0), rel=1e-5)


def test_budget_error_is_the_projects_privacy_parameter_error() -> None:
    from fedsynth.privacy.target import PrivacyParameterError

    assert issubclass(zcdp.BudgetError, PrivacyParameterError)
    with pytest.raises(PrivacyParameterError, match="delta"):
        zcdp.cdp_rho(1.0, 1.5)
