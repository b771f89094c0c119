"""Collect-then-AIM: clients upload candidate answers once, the server runs AIM on the aggregate.

* ``distaim`` — DistAIM: a newly sampled client sends its answers to *all* candidates once; the
  server keeps the running sum A over every client sampled so far and runs central AIM's select /
  measure on A (the exponential and Gaussian mechanisms run on the aggregate, as inside the MPC of
  the paper: our server stands in for that MPC and sees A; documented limitation).
* ``flaim-da`` (ours) — :class:`DeferredAIM`: collect a public pool's answers over all T rounds,
  then run central AIM once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsynth.flaim import model as pgm
from fedsynth.flaim.aim import aim_on_answers, bias, exponential_mechanism
from fedsynth.flaim.measure import marginal_counts
from fedsynth.flaim.methods.base import (
    Context,
    FederatedMethod,
    Plan,
    ServerState,
    _cells,
    _newcomers,
    _split,
)
from fedsynth.flaim.workload import Clique, candidate_pool
from fedsynth.privacy.zcdp import Budget, cdp_rho


@dataclass
class CollectState(ServerState):
    agg: np.ndarray | None = None  # server-private exact running sum of the uploaded answers
    contributed: set[int] = field(default_factory=set)  # clients whose answers are in ``agg``


class DistAIM(FederatedMethod[CollectState]):
    """Clients send all candidate answers once; the server runs AIM on the running aggregate."""

    name = "distaim"
    state_type = CollectState

    def plan(self, state: CollectState, participants: list[int]) -> Plan | None:
        if state.round >= self.ctx.rounds:
            return None
        plan = self._plan_header(state, state.round + 1, "answers", participants)
        plan.uploaders = _newcomers(participants, state.contributed)
        return plan

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]:
        assert plan.uploaders is not None
        if cid not in plan.uploaders:
            return {"answers": np.zeros(_cells(self.cands, self.ctx.sizes), dtype=np.int64)}
        return {
            "answers": np.concatenate(
                [marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs) for q in self.cands]
            )
        }

    def server_step(self, state: CollectState, plan: Plan, sums: dict[str, np.ndarray]) -> CollectState:
        assert state.budget is not None and plan.uploaders is not None
        state.round = plan.round
        state.contributed.update(plan.uploaders)
        agg = sums["answers"] if state.agg is None else state.agg + sums["answers"]
        state.agg = agg
        answers = dict(zip(self.cands, _split(agg, self.cands, self.ctx.sizes), strict=True))
        n_agg = float(answers[(self.ctx.attrs[0],)].sum())
        sigma = state.sigma
        if state.model is None:
            for a in self.ctx.attrs:
                state.budget.gaussian(sigma, f"one-way {a}")
                y = answers[(a,)] + self.rng.normal(0, sigma, len(answers[(a,)]))
                state.measurements.append(self._rescaled((a,), y, sigma, max(float(y.sum()), 1.0)))
            state.n_hat = [max(float(np.sum(state.measurements[0].y)), 1.0)]
            self._refit(state)
        state.budget.exponential(state.eps, f"round {state.round} selection")
        state.budget.gaussian(sigma, f"round {state.round} measurement")
        assert state.model is not None
        feas = self._feasible(state)
        scores = np.array(
            [
                self.weights[q]
                * (
                    np.abs(answers[q] - n_agg * state.model.probability(q).ravel()).sum()
                    - bias(sigma, len(answers[q]))
                )
                for q in feas
            ]
        )
        q = feas[exponential_mechanism(scores, state.eps, self.wmax, self.rng)]
        y = answers[q] + self.rng.normal(0, sigma, len(answers[q]))
        state.measurements.append(self._rescaled(q, y, sigma, max(float(y.sum()), 1.0)))
        state.selected.append(q)
        state.n_hat = [max(float(y.sum()), 1.0)]  # the model describes the aggregate so far
        self._refit(state)
        return state


def public_pool(ctx: Context) -> list[Clique]:
    """The collect-then-AIM methods' public candidate pool (:func:`candidate_pool`); the initial
    marginals are added whatever the pool budget: they are measured, so they must be uploaded."""
    allowed = None if ctx.candidates is None else set(ctx.candidates)
    pool = candidate_pool(ctx.sizes, ctx.workload, ctx.pool_cells, allowed)
    return pool + [q for q in ctx.initial or [] if q not in pool]


class DeferredAIM(FederatedMethod[CollectState]):
    """Ours, deferred AIM (``flaim-da``): collect first, then run central AIM once on the aggregate.

    The FLAIM variants release something every round, and every release before the last sees
    only the clients sampled so far: DistAIM runs an AIM round on a growing aggregate, the voting
    methods select on one round's heterogeneous clients. Here the T rounds only *collect*:

    1. the candidate pool P is public — every one-way plus the workload closure's marginals with
       the highest weight per cell, up to ``pool_cells`` cells (:func:`candidate_pool`), so a
       client uploads a fixed ≈ 8·``pool_cells`` bytes once, not DistAIM's whole closure;
    2. in round t every sampled client that has not contributed yet sends M_q(D_k) for all q ∈ P
       through the secure sum, provided at least two such clients are in the round (a sum over
       one new client would be that client's vector; a lone newcomer waits for a later round);
       the server adds the exact sum to A_q (server-private, never broadcast);
    3. after round T the server runs central AIM (fixed T, α, σ and ε_exp as in
       :func:`~fedsynth.flaim.aim.run_aim`) with A as its only access to the data, selecting from
       P, and fits the final model.

    Privacy: which clients contribute depends only on the public Poisson draws and on the public
    count of newcomers per round, so A = M(D_S) for a data-independent client set S and every
    record of D_S is counted once. Step 3 is AIM on D_S, which is ρ-zCDP (McKenna et al. 2022);
    adding or removing a record of D changes D_S by at most that record, so the whole run is
    ρ-zCDP in D. Trust: as in DistAIM (whose MPC our server stands in for) and ``flaim-ta``, the
    server sees exact per-round sums over ≥ 2 clients and must add the noise honestly; the secure
    sum keeps every single client's vector from it. Nothing is released before the end, so there is
    no per-round model for the clients (they receive only the plan header).
    """

    name = "flaim-da"
    state_type = CollectState

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.pool = public_pool(ctx)
        self._cells = _cells(self.pool, ctx.sizes)

    def init_state(self) -> CollectState:
        return CollectState(budget=Budget(cdp_rho(self.ctx.epsilon, self.ctx.delta)))

    def plan(self, state: CollectState, participants: list[int]) -> Plan | None:
        if state.round >= self.ctx.rounds:
            return None
        plan = self._plan_header(state, state.round + 1, "answers", participants)
        # only these take part in the secure sum
        plan.senders = _newcomers(participants, state.contributed)
        return plan

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]:
        assert plan.senders is not None
        if cid not in plan.senders:
            return {}
        return {
            "answers": np.concatenate(
                [marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs) for q in self.pool]
            )
        }

    def server_step(self, state: CollectState, plan: Plan, sums: dict[str, np.ndarray]) -> CollectState:
        assert plan.senders is not None
        state.round, state.step = plan.round, plan.step
        if plan.senders and "answers" in sums:
            total = np.asarray(sums["answers"], dtype=np.int64)
            if total.shape != (self._cells,):
                raise ValueError(f"expected {self._cells} summed cells, got shape {total.shape}")
            state.agg = total if state.agg is None else state.agg + total
            state.contributed.update(plan.senders)
        return state

    def finish(self, state: CollectState) -> pgm.PGM:
        if state.agg is None:
            raise ValueError(
                "no round had two or more new clients, so nothing was collected; "
                "raise participation or rounds"
            )
        answers = dict(zip(self.pool, _split(state.agg, self.pool, self.ctx.sizes), strict=True))
        res = aim_on_answers(
            answers,
            self.ctx.sizes,
            self.ctx.workload,
            epsilon=self.ctx.epsilon,
            delta=self.ctx.delta,
            rounds=self.ctx.rounds,
            alpha=self.ctx.alpha,
            max_model_mb=self.ctx.max_model_mb,
            iters=self.ctx.final_iters,
            seed=None if self.ctx.server_seed is None else self.ctx.server_seed + 1,
            # a one-way outside the workload's closure is measured (AIM's start) but not a candidate
            candidates=[q for q in self.pool if q in self.weights],
            initial=self.ctx.initial,
        )
        state.agg = None  # nothing exact outlives the run
        state.budget, state.selected = res.budget, list(res.selected)
        state.measurements, state.model = list(res.measurements), res.model
        state.n_hat = [res.total_estimate]
        return res.model
