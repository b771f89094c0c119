"""The paper's voting methods: NaiveFLAIM and AugFLAIM (oracle / private).

Steps per round: ``oneway`` (round 1; every round but the last for aug-private) → ``vote`` →
``answer``. The server adds central Gaussian noise to each secure sum.

* ``naive`` — NaiveFLAIM: each sampled client selects a marginal with a *local* exponential
  mechanism (score on its own data vs the broadcast model, sensitivity 2·max w since n_k changes
  too); a one-hot vote goes through the secure sum so the server learns which marginals were
  picked; then each client sends its answers in the block of the marginal it picked (zeros
  elsewhere); Gaussian noise is added to each block sum, which is rescaled to N̂. A record is in
  one block only, so a round's measurement costs one Gaussian mechanism at σ.
* ``aug-oracle`` — as naive, local score minus w_q·n_k·τ_k(q), τ_k(q) = ‖M_q(D_k)/n_k − M_q(D)/N‖₁
  computed from the *global* data (not private: a reference only).
* ``aug-private`` — as naive; in rounds 1..T−1 every sampled client also sends its one-way marginals,
  which are noised, fed to the model and kept as a running estimate P̂; the local score subtracts
  w_q·n_k·mean_{a∈q}‖P̂(a) − P_k(a)‖₁ (sensitivity 4·max w) and one-way candidates are dropped.
  σ is charged for T + d·max(T−1, 1) measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsynth.flaim.measure import marginal_counts
from fedsynth.flaim.methods.base import Context, FederatedMethod, Plan, ServerState, _oneways, _split
from fedsynth.flaim.workload import Clique


@dataclass
class VotingState(ServerState):
    p1_sum: np.ndarray | None = None  # running sum of the clipped noisy one-ways (aug-private)
    p1: np.ndarray | None = None  # P̂: per attribute, the normalised running one-way estimate
    to_measure: list[Clique] = field(default_factory=list)  # the marginals voted for this round


class VotingMethod(FederatedMethod[VotingState]):
    """naive / aug-oracle / aug-private: steps 'oneway' (init) → 'vote' → 'answer'."""

    oneway_every_round = False
    augment = "none"  # none | oracle | private
    state_type = VotingState

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._global: dict[Clique, np.ndarray] = {}

    def n_measurements_extra(self) -> int:
        d = len(self.ctx.attrs)
        return d * max(self.ctx.rounds - 1, 1) if self.oneway_every_round else d

    def _next_step(self, state: VotingState) -> tuple[int, str] | None:
        r, s = state.round, state.step
        T = self.ctx.rounds
        if s == "":
            return 1, "oneway"
        if s == "oneway":
            return r, "vote"
        if s == "vote":
            return r, "answer"
        if r >= T:
            return None
        if self.oneway_every_round and r + 1 <= T - 1:
            return r + 1, "oneway"
        return r + 1, "vote"

    def plan(self, state: VotingState, participants: list[int]) -> Plan | None:
        nxt = self._next_step(state)
        if nxt is None:
            return None
        r, step = nxt
        plan = self._plan_header(state, r, step, participants)
        if step == "vote":
            feas = self._feasible(state)
            if self.augment == "private":
                feas = [q for q in feas if len(q) > 1] or feas
            self.vote_plan(plan, state, feas)
            if self.augment == "private":
                assert state.p1 is not None
                plan.arrays["p1"] = state.p1.astype(np.float32)
        elif step == "answer":
            plan.cliques = state.to_measure
            plan.arrays = {"cliques": np.array([self.cands.index(q) for q in plan.cliques], dtype=np.int16)}
        return plan

    def global_answer(self, q: Clique) -> np.ndarray:
        """aug-oracle: the pooled data's marginal as a distribution (not private)."""
        if q not in self._global:
            assert self.ctx.global_codes is not None
            g = marginal_counts(self.ctx.global_codes, self.ctx.sizes, q, self.ctx.attrs)
            self._global[q] = g / max(g.sum(), 1)
        return self._global[q]

    def _tau(self, codes: np.ndarray, plan: Plan, cands: list[Clique]) -> dict[Clique, float] | None:
        if self.augment == "none":
            return None
        n_k = max(len(codes), 1)
        if self.augment == "oracle":
            return {
                q: float(
                    np.abs(
                        marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs) / n_k
                        - self.global_answer(q)
                    ).sum()
                )
                for q in cands
            }
        p1 = np.split(
            plan.arrays["p1"].astype(float), np.cumsum([self.ctx.sizes[a] for a in self.ctx.attrs])[:-1]
        )
        local = {
            a: marginal_counts(codes, self.ctx.sizes, (a,), self.ctx.attrs) / n_k for a in self.ctx.attrs
        }
        d1 = {a: float(np.abs(p1[i] - local[a]).sum()) for i, a in enumerate(self.ctx.attrs)}
        return {q: float(np.mean([d1[a] for a in q])) for q in cands}

    def sensitivity(self) -> float:
        # |M_q(D_k) − n_k p̂| moves by ≤ 2 per record (cell and n_k); the τ term adds 2 more.
        return (4.0 if self.augment == "private" else 2.0) * self.wmax

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]:
        sizes, attrs = self.ctx.sizes, self.ctx.attrs
        if plan.step == "oneway":
            return {"oneway": _oneways(codes, sizes, attrs)}
        if plan.step == "vote":
            assert plan.cands is not None
            return self.local_vote(cid, codes, plan, self.sensitivity(), self._tau(codes, plan, plan.cands))
        # answer: counts in the block of the marginal this client voted for, zeros elsewhere
        assert plan.cliques is not None
        blocks = []
        for q in plan.cliques:
            x = marginal_counts(codes, sizes, q, attrs)
            if self.client_memory.get((plan.round, cid)) != q:
                x = np.zeros_like(x)
            blocks.append(x)
        return {"answer": np.concatenate(blocks)}

    def server_step(self, state: VotingState, plan: Plan, sums: dict[str, np.ndarray]) -> VotingState:
        assert state.budget is not None
        state.round, state.step = plan.round, plan.step
        attrs, sizes, sigma = self.ctx.attrs, self.ctx.sizes, state.sigma
        if plan.step == "oneway":
            # d one-ways, one cell each per record: L2 sensitivity √d at σ
            state.budget.gaussian(sigma, f"round {plan.round} one-way marginals", math.sqrt(len(attrs)))
            y = sums["oneway"].astype(float)
            y = y + self.rng.normal(0, sigma, len(y))
            parts = _split(y, [(a,) for a in attrs], sizes)
            n_round = float(np.mean([p.sum() for p in parts]))
            state.n_hat.append(max(n_round, 1.0) / self.ctx.participation)
            for a, p in zip(attrs, parts, strict=True):
                state.measurements.append(self._rescaled((a,), p, sigma, max(n_round, 1.0)))
            p1 = np.concatenate([np.clip(p, 0, None) for p in parts])
            state.p1_sum = p1 if state.p1_sum is None else state.p1_sum + p1
            acc = state.p1_sum
            state.p1 = np.concatenate(
                [b / max(b.sum(), 1e-9) for b in _split(acc, [(a,) for a in attrs], sizes)]
            )
            self._refit(state)
        elif plan.step == "vote":
            state.budget.exponential(state.eps, f"round {plan.round} local selection")
            votes = sums["vote"]
            order = np.argsort(-votes, kind="stable")
            state.to_measure = [self.cands[i] for i in order if votes[i] > 0]
        else:
            assert plan.cliques is not None
            chosen = plan.cliques
            # naive: a record is in one block only, so one Gaussian mechanism at σ
            state.budget.gaussian(sigma, f"round {plan.round} measurement")
            y = sums["answer"].astype(float)
            y = y + self.rng.normal(0, sigma, len(y))
            blocks = _split(y, chosen, sizes)
            for q, b in zip(chosen, blocks, strict=True):
                n_b = float(b.sum())
                if n_b < 1.0:  # the noise swamped a block from tiny clients: skip it (post-processing)
                    continue
                state.measurements.append(self._rescaled(q, b, sigma, n_b))
                state.selected.append(q)
            self._refit(state)
        return state


class Naive(VotingMethod):
    name = "naive"


class AugOracle(VotingMethod):
    name = "aug-oracle"
    augment = "oracle"


class AugPrivate(VotingMethod):
    name = "aug-private"
    augment = "private"
    oneway_every_round = True
