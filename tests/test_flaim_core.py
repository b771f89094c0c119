"""FLAIM core: accounting, int64 counts, estimation, and a short end-to-end run of every method."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.partition import PartitionError
from fedsynth.flaim.aim import run_aim
from fedsynth.flaim.data import FlaimData, make_clients
from fedsynth.flaim.domain import DomainError, FlaimDomain, discretise
from fedsynth.flaim.driver import drive
from fedsynth.flaim.measure import marginal_counts
from fedsynth.flaim.methods import FederatedMethod, Plan
from fedsynth.flaim.model import Measurement, ModelSizeError, fit
from fedsynth.flaim.runner import ALL_METHODS, run
from fedsynth.flaim.workload import all_kway, candidate_weights, downward_closure
from fedsynth.privacy import zcdp
from fedsynth.privacy.target import PrivacyParameterError
from fedsynth.secagg.he_sum import HESum
from fedsynth.secagg.secure_sum import plain_sum


# ---------------------------------------------------------------- accounting
@pytest.mark.parametrize("eps,delta", [(1.0, 1e-5), (3.0, 1e-9), (0.1, 1e-6)])
def test_cdp_rho_is_tight(eps: float, delta: float) -> None:
    rho = zcdp.cdp_rho(eps, delta)
    assert zcdp.cdp_delta(rho, eps) <= delta
    assert zcdp.cdp_delta(rho * 1.01, eps) > delta  # the largest such ρ
    assert zcdp.cdp_eps(rho, delta) == pytest.approx(eps, rel=1e-6)


def test_cdp_rho_known_value() -> None:
    # Textbook bound ε = ρ + 2√(ρ log 1/δ) is looser than the exact conversion: ρ must beat it.
    rho = zcdp.cdp_rho(1.0, 1e-5)
    loose = (math.sqrt(math.log(1e5) + 1) - math.sqrt(math.log(1e5))) ** 2
    assert loose < rho < 0.05


@pytest.mark.parametrize("T,d,alpha", [(10, 14, 0.9), (3, 5, 0.5), (1, 1, 0.99)])
def test_fixed_t_calibration_reproduces_formulas_and_spends_rho(T: int, d: int, alpha: float) -> None:
    rho = zcdp.cdp_rho(1.0, 1e-5)
    cal = zcdp.fixed_t_calibration(rho, T, d, alpha)
    assert cal.sigma == pytest.approx(math.sqrt((T + d) / (2 * alpha * rho)))
    assert cal.epsilon_select == pytest.approx(math.sqrt(8 * (1 - alpha) * rho / T))
    b = zcdp.Budget(rho)
    for _ in range(T + d):
        b.gaussian(cal.sigma, "m")
    for _ in range(T):
        b.exponential(cal.epsilon_select, "s")
    assert b.used == pytest.approx(rho, rel=1e-9)
    with pytest.raises(zcdp.BudgetError):
        b.gaussian(cal.sigma, "one too many")


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_epsilon_refused(eps: float) -> None:
    with pytest.raises(PrivacyParameterError):
        zcdp.cdp_rho(eps, 1e-5)


# ---------------------------------------------------------------- counts and workloads
def test_no_uint16_wrap_on_large_counts() -> None:
    n = 70_000  # > 65,535 records in one cell
    codes = np.zeros((n, 2), dtype=np.int64)
    codes[:10, 1] = 1
    x = marginal_counts(codes, {"a": 2, "b": 3}, ("a", "b"), ("a", "b"))
    assert x.dtype == np.int64
    assert x[0] == n - 10 and x[1] == 10 and x.sum() == n


def test_candidate_weights() -> None:
    attrs = ("a", "b", "c", "d")
    wl = [("a", "b", "c"), ("b", "c", "d")]
    w = candidate_weights(wl, attrs)
    assert set(w) == set(downward_closure(wl, attrs))
    assert w[("b", "c")] == 4 and w[("a",)] == 1 and w[("b",)] == 2 and w[("a", "b", "c")] == 5


# ---------------------------------------------------------------- small synthetic problem
def _toy(n: int = 1200, seed: int = 0) -> FlaimData:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, n)
    b = (a + rng.integers(0, 2, n)) % 4
    c = rng.integers(0, 2, n)
    y = ((a + c + rng.integers(0, 2, n)) > 2).astype(int)
    codes = np.stack([a, b, c, y], axis=1).astype(np.int64)
    df = pd.DataFrame(codes, columns=["a", "b", "c", "y"])
    codes, dom = discretise(df.astype(str), target="y")
    return FlaimData("toy", dom, codes[: int(n * 0.9)], codes[int(n * 0.9) :])


def test_estimation_recovers_exact_marginals() -> None:
    d = _toy()
    sizes = d.domain.sizes
    attrs = d.domain.attrs
    ms = [
        Measurement(q, marginal_counts(d.train, sizes, q, attrs).astype(float), 1.0)
        for q in all_kway(attrs, 2)
    ]
    model = fit(sizes, ms, len(d.train), iters=500)
    for q in all_kway(attrs, 2):
        err = np.abs(model.counts(q) - marginal_counts(d.train, sizes, q, attrs)).sum() / len(d.train)
        assert err < 0.02, (q, err)
    # A query spanning several junction-tree cliques is answered from the calibrated tree.
    p = model.probability(("a", "b", "c", "y"))
    assert p.shape == (3, 4, 2, 2) and p.sum() == pytest.approx(1.0)
    ll = model.log_likelihood(d.test)
    assert np.all(np.isfinite(ll)) and np.all(ll < 0)


def test_adaptive_aim_never_exceeds_budget() -> None:
    d = _toy()
    rho = zcdp.cdp_rho(1.0, 1e-5)
    res = run_aim(d.train, d.domain.sizes, all_kway(d.domain.attrs, 3), epsilon=1.0, rounds=None, seed=1)
    assert res.budget.rho == pytest.approx(rho)
    assert res.budget.used <= rho * (1 + 1e-9)
    assert res.budget.used == pytest.approx(rho, rel=1e-6)  # the last round spends what is left
    assert len(res.selected) >= 1


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_end_to_end(method: str) -> None:
    d = _toy()
    r = run(
        d,
        method,
        epsilon=2.0,
        clients=6,
        participation=0.5,
        rounds=3,
        split="iid",
        seed=3,
        workload="all-2way",
        secure_sum=HESum() if method == "flaim-he" else plain_sum,  # flaim-he needs encrypted totals
    )
    assert r.synthetic.shape == (len(d.train), 4)
    assert r.rho_used <= r.rho * (1 + 1e-9)
    assert 0.0 <= r.metrics["l1"] <= 2.0
    assert r.metrics["l1"] < 0.6  # far better than noise on a 4-attribute toy problem
    assert math.isfinite(r.metrics["nll"])
    if method not in ("aim", "aim-adaptive"):
        assert r.client_bytes_sent > 0
    if method not in ("aim", "aim-adaptive", "distaim", "flaim-da"):  # these clients only upload
        assert r.client_bytes_received > 0


def test_ours_through_secagg_matches_budget_and_counts_traffic() -> None:
    from fedsynth.secagg.secure_sum import SecAggPlusSum

    d = _toy()
    r = run(
        d,
        "flaim-sa",
        epsilon=2.0,
        clients=6,
        participation=0.5,
        rounds=2,
        split="iid",
        seed=0,
        workload="all-2way",
        secure_sum=SecAggPlusSum(),
    )
    r0 = run(
        d,
        "flaim-sa",
        epsilon=2.0,
        clients=6,
        participation=0.5,
        rounds=2,
        split="iid",
        seed=0,
        workload="all-2way",
        secure_sum=plain_sum,
    )
    # Same seed, exact integer sums: SecAgg+ must give the very same model and synthetic data.
    assert np.array_equal(r.synthetic, r0.synthetic)
    assert r.client_bytes_sent > r0.client_bytes_sent  # masks, keys and shares cost bytes


# ---------------------------------------------------------------- bad input
def test_bad_inputs() -> None:
    d = _toy(200)
    with pytest.raises(ValueError, match="unknown method"):
        run(d, "magic", epsilon=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        run(d, "aim", epsilon=0.0)
    with pytest.raises(PartitionError, match="rows"):
        run(d, "naive", epsilon=1.0, clients=10_000, split="iid")
    with pytest.raises(DomainError, match="single value"):
        discretise(pd.DataFrame({"a": ["x"] * 5, "b": ["1", "2", "1", "2", "1"]}), target="b")
    with pytest.raises(ModelSizeError, match="cap"):
        run(d, "aim", epsilon=1.0, max_model_mb=1e-6)


def test_decode_round_trip() -> None:
    df = pd.DataFrame({"x": [0.0, 10.0, 5.0, 2.5], "y": ["a", "b", "a", "b"]})
    codes, dom = discretise(df, target="y", bins=4)
    assert isinstance(dom, FlaimDomain)
    back = dom.decode(codes)
    assert list(back["y"]) == ["a", "b", "a", "b"]
    assert np.all(np.abs(back["x"].to_numpy() - df["x"].to_numpy()) <= 10 / 8 + 1e-9)


def test_client_draws_are_secret_unless_replaying() -> None:
    """A server knowing the public run seed must not be able to regenerate a client's noise."""
    from fedsynth.flaim.methods import Context
    from fedsynth.flaim.methods.base import _client_rng

    ctx = Context({"a": 2}, [("a",)], 1.0, 1e-5, 2, 0.5, seed=3)
    assert ctx.client_seed is None
    a, b = (_client_rng(ctx, 1, 0, 5).integers(0, 2**62, 4) for _ in range(2))
    assert not np.array_equal(a, b)
    replay = Context({"a": 2}, [("a",)], 1.0, 1e-5, 2, 0.5, seed=3, client_seed=3)
    a, b = (_client_rng(replay, 1, 0, 5).integers(0, 2**62, 4) for _ in range(2))
    assert np.array_equal(a, b)
    # the server's noise likewise (flaim-ta, DistAIM, naive add it on the server)
    from fedsynth.flaim.methods import make_method

    a, b = (make_method("flaim-ta", ctx).rng.integers(0, 2**62, 4) for _ in range(2))
    assert not np.array_equal(a, b)
    a, b = (make_method("flaim-ta", replace(ctx, server_seed=3)).rng.integers(0, 2**62, 4) for _ in range(2))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("w1", [0.5, 2.0])
def test_ours_split_the_measurement_budget_exactly(w1: float) -> None:
    """flaim-sa: d one-ways at w₁·r and the selected marginals at r use exactly αρ (Skellam bound);
    flaim-ta: each marginal's ρ_q is its preview (β) plus its single final release (1 − β)."""
    from fedsynth.flaim.methods import Context, make_method
    from fedsynth.flaim.workload import make_workload
    from fedsynth.privacy.zcdp import skellam_rho

    d = _toy()
    sizes = d.domain.sizes
    ctx = Context(sizes, make_workload(d.domain.attrs, "all-2way"), 1.0, 1e-5, 4, 0.5, oneway_weight=w1)
    rho = zcdp.cdp_rho(1.0, 1e-5)
    sa = make_method("flaim-sa", ctx).init_state()
    ru = sa.rho_unit
    assert len(sizes) * ru[1] + 4 * ru[2] == pytest.approx(ctx.alpha * rho)
    assert ru[1] == pytest.approx(w1 * ru[2])
    assert skellam_rho(sa.sigma) == pytest.approx(ru[2])
    assert skellam_rho(sa.sigmas[1]) == pytest.approx(ru[1])
    ta = make_method("flaim-ta", ctx).init_state()
    for k in (1, 2):
        s_p, s_f = ta.sigmas[k], ta.sig_final[k]  # previews, final release
        assert zcdp.gaussian_rho(s_p) + zcdp.gaussian_rho(s_f) == pytest.approx(ta.rho_unit[k])
        assert zcdp.gaussian_rho(s_p) == pytest.approx(ctx.preview_share * ta.rho_unit[k])
    for bad in ({"oneway_weight": 0.0}, {"preview_share": 1.0}, {"vote_on": "all"}):
        with pytest.raises(ValueError):
            make_method("flaim-ta", Context(sizes, ctx.workload, 1.0, 1e-5, 4, 0.5, **bad)).init_state()


def _plain_sums(vecs: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-key sums over the clients that sent that key (what a secure sum returns, in the clear)."""
    keys = {key for v in vecs.values() for key in v}
    return {key: sum(v[key] for v in vecs.values() if key in v) for key in keys}


def test_flaim_ta_final_release_is_single_and_the_exact_sums_are_dropped() -> None:
    from fedsynth.flaim.methods import Context, make_method
    from fedsynth.flaim.workload import make_workload

    d = _toy()
    parts = make_clients(d, 4, "iid", 0)
    ctx = Context(d.domain.sizes, make_workload(d.domain.attrs, "all-2way"), 2.0, 1e-5, 3, 1.0, client_seed=0)
    m = make_method("flaim-ta", ctx)

    def exchange(plan: Plan, senders: list[int]) -> dict[str, np.ndarray]:
        vecs = {k: m.client_step(k, d.train[parts[k]], plan) for k in senders}
        if plan.step == "answer":  # clients send exact counts: the server adds the noise
            assert all(not (v["answer"] < 0).any() for v in vecs.values() if v)
        return _plain_sums(vecs)

    st = drive(m, exchange, lambda _round: [0, 1, 2, 3])
    exact = dict(st.exact)
    assert set(exact) == {(a,) for a in d.domain.attrs} | set(st.selected)
    for q, E in exact.items():  # every record answered every marginal exactly once (p = 1)
        assert E.sum() == len(d.train)
        # previews: one noise draw per round that had new contributors
        assert st.rounds_acc[q] == 1
    m.finish(st)
    assert st.exact == {} and st.budget.used <= st.budget.rho * (1 + 1e-9)


# ---------------------------------------------------------------- flaim-da (deferred AIM)
def test_candidate_pool_is_public_budgeted_and_ordered_by_weight_per_cell() -> None:
    from fedsynth.flaim.workload import candidate_pool

    sizes = {"a": 10, "b": 10, "c": 3, "d": 2, "e": 4}
    wl = all_kway(tuple(sizes), 3)
    w = candidate_weights(wl, tuple(sizes))
    cells = {q: int(np.prod([sizes[a] for a in q])) for q in w}
    pool = candidate_pool(sizes, wl, 200)
    assert pool[:5] == [(a,) for a in sizes]  # every one-way, first
    assert sum(cells[q] for q in pool) <= 200
    rest = pool[5:]
    ratios = [w[q] / cells[q] for q in rest]
    assert ratios == sorted(ratios, reverse=True) and len(rest) >= 3
    # nothing left out would still fit
    used = sum(cells[q] for q in pool)
    assert all(used + cells[q] > 200 for q in w if q not in pool)
    assert candidate_pool(sizes, wl, 200) == pool  # deterministic: clients and server agree
    with pytest.raises(ValueError, match="one-way marginals alone"):
        candidate_pool(sizes, wl, 20)


def test_aim_on_answers_selects_only_from_the_pool() -> None:
    from fedsynth.flaim.aim import aim_on_answers
    from fedsynth.flaim.workload import candidate_pool

    d = _toy()
    sizes, attrs = d.domain.sizes, d.domain.attrs
    wl = all_kway(attrs, 3)
    pool = candidate_pool(sizes, wl, sum(sizes.values()) + 30)
    answers = {q: marginal_counts(d.train, sizes, q, attrs) for q in pool}
    res = aim_on_answers(answers, sizes, wl, epsilon=2.0, rounds=4, seed=0, candidates=pool)
    assert set(res.selected) <= set(pool) and res.budget.used <= res.budget.rho * (1 + 1e-9)
    # the same as run_aim on the records with the same pool and seed
    ref = run_aim(d.train, sizes, wl, epsilon=2.0, rounds=4, seed=0, candidates=pool)
    assert res.selected == ref.selected
    with pytest.raises(ValueError, match="answers are missing"):
        aim_on_answers({q: v for q, v in answers.items() if len(q) == 1}, sizes, wl, epsilon=1.0,
                       candidates=pool)  # fmt: skip
    with pytest.raises(ValueError, match="not in the workload"):
        aim_on_answers(answers, sizes, [("a", "b")], epsilon=1.0, candidates=pool)


def test_flaim_da_counts_every_contributor_once_and_a_lone_newcomer_waits() -> None:
    from fedsynth.flaim.methods import Context, make_method
    from fedsynth.flaim.workload import make_workload

    d = _toy()
    parts = make_clients(d, 5, "iid", 0)
    ctx = Context(d.domain.sizes, make_workload(d.domain.attrs, "all-2way"), 2.0, 1e-5, 4, 0.5, server_seed=0)
    m = make_method("flaim-da", ctx)
    st = m.init_state()
    rounds = [[0, 1], [1, 2], [2, 3, 4], [0, 4]]  # round 2: only client 2 is new → nobody sends
    senders = []
    for who in rounds:
        plan = m.plan(st, who)
        assert plan is not None
        senders.append(plan.senders)
        vecs = {k: m.client_step(k, d.train[parts[k]], plan) for k in who}
        assert all(v == {} for k, v in vecs.items() if k not in plan.senders)
        st = m.server_step(st, plan, _plain_sums(vecs))
    assert m.plan(st, [0, 1]) is None
    assert senders == [[0, 1], [], [2, 3, 4], []]
    agg = st.agg
    first = m.pool[0]
    assert agg[: d.domain.sizes[first[0]]].sum() == sum(len(parts[k]) for k in range(5))
    model = m.finish(st)
    assert st.agg is None  # nothing exact outlives the run
    assert st.budget.used == pytest.approx(st.budget.rho) and set(st.selected) <= set(m.pool)
    assert model.synthetic(50, 0).shape == (50, 4)
    # a workload that leaves an attribute out: its one-way is collected and measured, not selected
    ctx_b = replace(ctx, workload=[("a", "b")])
    m_b = make_method("flaim-da", ctx_b)
    st_b = m_b.init_state()
    for who in ([0, 1, 2], [3, 4]):
        plan = m_b.plan(st_b, who)
        vecs = {k: m_b.client_step(k, d.train[parts[k]], plan) for k in who}
        st_b = m_b.server_step(st_b, plan, _plain_sums(vecs))
    m_b.finish(st_b)
    assert set(st_b.selected) <= {("a",), ("b",), ("a", "b")}
    assert {ms.clique for ms in st_b.measurements} >= {(a,) for a in d.domain.attrs}
    # nobody ever paired up: a clear error instead of a model of nothing
    m2 = make_method("flaim-da", ctx)
    st2 = m2.init_state()
    for _ in range(4):
        plan = m2.plan(st2, [0])
        st2 = m2.server_step(st2, plan, {})
    with pytest.raises(ValueError, match="nothing was collected"):
        m2.finish(st2)


def test_local_vote_scores_move_by_at_most_their_sensitivity() -> None:
    """The local exponential mechanism is calibrated to Δ = 2·max w: adding one record to a client
    may move each candidate's score by at most 2·w_q. (A noise penalty scaled by the client's own
    n_k moved large candidates by √(2/π)·σ·|Ω_q|/(p·N̂) more.)"""
    from fedsynth.flaim.methods import Context, make_method

    rng = np.random.default_rng(1)
    sizes = {"a": 12, "b": 12, "c": 10, "y": 2}
    codes = rng.integers(0, list(sizes.values()), (400, 4))
    wl = all_kway(tuple(sizes), 3)
    ctx = Context(sizes, wl, 0.05, 1e-5, 3, 0.2, server_seed=0, client_seed=0)
    m = make_method("naive", ctx)
    st = m.init_state()
    plan = m.plan(st, [0, 1])
    st = m.server_step(st, plan, {"oneway": m.client_step(0, codes, plan)["oneway"] * 2})
    plan = m.plan(st, [0, 1])
    assert plan.step == "vote"
    cands = plan.cands
    base = m.local_scores(codes[:100], plan, cands)
    w = np.array([m.weights[q] for q in cands])
    for row in codes[100:160]:
        moved = m.local_scores(np.vstack([codes[:100], row]), plan, cands) - base
        assert np.all(np.abs(moved) <= 2 * w + 1e-9)


def test_flaim_ta_never_sums_a_block_over_a_single_new_client() -> None:
    from fedsynth.flaim.methods import Context, make_method
    from fedsynth.flaim.workload import make_workload

    d = _toy()
    parts = make_clients(d, 3, "iid", 0)
    ctx = Context(d.domain.sizes, make_workload(d.domain.attrs, "all-2way"), 2.0, 1e-5, 2, 0.5,
                  client_seed=0, server_seed=0, select_rounds=2)  # fmt: skip
    who = {1: [0, 1], 2: [1, 2]}  # round 2: client 2 is the only newcomer for the one-ways
    for name in ("flaim-ta", "flaim-sa"):
        m = make_method(name, ctx)

        def exchange(plan: Plan, ps: list[int], m: FederatedMethod[Any] = m, name: str = name) -> dict:
            assert ps == who[plan.round]
            if plan.step == "answer":
                assert plan.cliques is not None and plan.new is not None
                for q in plan.cliques:
                    newcomers = [k for k in ps if q in plan.new[k]]
                    # flaim-ta's server sees exact sums; flaim-sa's sums carry the full noise
                    assert len(newcomers) >= (2 if name == "flaim-ta" else 1)
                if plan.round == 2:
                    has_oneways = any(len(q) == 1 for q in plan.cliques)
                    assert has_oneways == (name == "flaim-sa")
            return _plain_sums({k: m.client_step(k, d.train[parts[k]], plan) for k in ps})

        st = drive(m, exchange, who.__getitem__)
        m.finish(st)
        assert st.budget.used <= st.budget.rho * (1 + 1e-9)
