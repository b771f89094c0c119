"""Ours, accumulate-once: every record answers every measured marginal once (``flaim-sa``, ``flaim-ta``).

Steps: round 1 starts with an ``answer`` step that collects the one-ways; each vote round
(1..S) then has ``vote`` → ``answer``, later rounds only ``answer``. Votes are local exponential
mechanisms as in NaiveFLAIM (:meth:`~fedsynth.flaim.methods.base.FederatedMethod.local_vote`), but
the answers are collected from *every* sampled client that has not answered that marginal yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsynth.flaim import model as pgm
from fedsynth.flaim.measure import marginal_counts, skellam_share
from fedsynth.flaim.methods.base import _STEP_IDS, FederatedMethod, Plan, ServerState, _client_rng, _split
from fedsynth.flaim.workload import Clique
from fedsynth.privacy.zcdp import Budget, cdp_rho, fixed_t_calibration, gaussian_sigma, skellam_sigma

ONEWAY, SELECTED = 1, 2  # budget classes of a measured marginal


def _unit(q: Clique) -> int:
    """Budget class of a measured marginal: 1 = one-way, 2 = selected marginal."""
    return ONEWAY if len(q) == 1 else SELECTED


@dataclass
class AccumulateState(ServerState):
    rho_unit: dict[int, float] = field(default_factory=dict)  # zCDP of one marginal, per budget class
    sigmas: dict[int, float] = field(default_factory=dict)  # σ of one round's noise, per budget class
    acc: dict[Clique, np.ndarray] = field(default_factory=dict)  # A_q: running (noisy) block sums
    rounds_acc: dict[Clique, int] = field(default_factory=dict)  # r_q: rounds accumulated into A_q
    answered: set[tuple[int, Clique]] = field(default_factory=set)  # (client, q) already counted
    order: list[Clique] = field(default_factory=list)  # the measured set, in the order it grew
    voted_in_round: bool = False
    # flaim-ta only (server-private: never broadcast; released once in finish())
    sig_final: dict[int, float] = field(default_factory=dict)  # σ of the single final release
    exact: dict[Clique, np.ndarray] = field(default_factory=dict)  # E_q: exact running sums


class FlaimSA(FederatedMethod[AccumulateState]):
    """Ours: every record answers every measured marginal at most once, through a noisy secure sum.

    Server state per measured marginal q (the d one-ways, then one new marginal per round):
    a running noisy sum A_q = Σ_t (Σ_{k∈S_t, k new to q} M_q(D_k) + Z_{q,t}), Z_{q,t} ~ Sk(σ²)
    made of the participants' integer Skellam shares, and r_q = rounds accumulated. Round t:

    1. *vote*: each sampled client runs the exponential mechanism (ε_exp, Δ = 2·max w) on its local
       score against the broadcast model, over candidates not already implied by the measured set,
       and sends a one-hot vote through the secure sum; the most-voted marginal joins the set;
    2. *answer*: every sampled client sends, for each marginal in the set it has not answered
       before, its counts (zeros otherwise) plus its noise share; blocks with no new contributor
       are skipped. The server adds the block sums to A_q. The model is refit on
       y_q = A_q/n̂_q with noise σ·√r_q/n̂_q (n̂_q = noisy total of A_q), rescaled to N̂ = n̂ of the
       one-ways: more clients → more weight; N is never needed.

    Privacy (record-level, add/remove, ρ-zCDP): which round a record's counts enter A_q is fixed by
    the data-independent client sampling and by earlier DP outputs, and it enters each A_q exactly
    once, so across all rounds the Gaussian/Skellam part costs Σ_q ρ_sk(σ) over the d + T·top
    marginals — the same count as central AIM — not per round. The selection runs every vote round a
    client is sampled and is charged in each of the S vote rounds (S·ε_exp²/8 = (1−α)ρ).
    ρ_sk(σ) = 1/(2σ²) + 7/(4σ⁴) bounds the Skellam mechanism's RDP (Agarwal et al. 2021, unit
    L1/L2 sensitivity; :func:`~fedsynth.privacy.zcdp.skellam_rho`), and σ is solved so that
    (d + T·top)·ρ_sk(σ) = αρ. The secure sum only ever reveals noisy sums to the server.
    """

    name = "flaim-sa"
    state_type = AccumulateState
    # A block sum over one new client is that client's counts plus the (full) noise: private.
    min_new_per_block = 1

    def init_state(self) -> AccumulateState:
        rho = cdp_rho(self.ctx.epsilon, self.ctx.delta)
        w1, d, n_sel = self.ctx.oneway_weight, len(self.ctx.attrs), self._n_select()
        if not w1 > 0:
            raise ValueError(f"oneway_weight must be > 0, got {w1}")
        if self.ctx.vote_on not in ("workload", "closure"):
            raise ValueError(f"vote_on must be 'workload' or 'closure', got {self.ctx.vote_on!r}")
        cal = fixed_t_calibration(rho, self._vote_rounds(), d, self.ctx.alpha)
        # d one-ways at ρ₁ = w₁·r and n_sel marginals at r: d·w₁·r + n_sel·r = αρ
        r = self.ctx.alpha * rho / (d * w1 + n_sel)
        rho_unit = {ONEWAY: w1 * r, SELECTED: r}
        sigmas = {k: skellam_sigma(v) for k, v in rho_unit.items()}
        return AccumulateState(
            budget=Budget(rho),
            sigma=sigmas[SELECTED],
            eps=cal.epsilon_select,
            rho_unit=rho_unit,
            sigmas=sigmas,
        )

    @staticmethod
    def _rho_of(state: AccumulateState, q: Clique) -> float:
        return state.rho_unit[_unit(q)]

    def _client_noise(self, n: int, sigma: float, m: int, rng: np.random.Generator) -> np.ndarray:
        return skellam_share(n, sigma**2 / m, rng)  # the m shares sum to Sk(σ²)

    def _absorb(self, state: AccumulateState, q: Clique, block: np.ndarray) -> None:
        """Add one round's (already noisy) block sum to the running answer A_q."""
        state.acc[q] = state.acc.get(q, 0.0) + block
        state.rounds_acc[q] = state.rounds_acc.get(q, 0) + 1

    def _n_select(self) -> int:
        n = self.ctx.marginals if self.ctx.marginals is not None else self.ctx.rounds * self.ctx.top
        if n < 1:
            raise ValueError(f"marginals must be >= 1, got {n}")
        return n

    @staticmethod
    def _sigma_of(state: AccumulateState, q: Clique) -> float:
        """σ of one round's noise on q's block."""
        return state.sigmas[_unit(q)]

    def local_sigma(self, plan: Plan, n_k: float) -> float:
        """Noise of the marginal's *final* answer in client-k units. A marginal chosen in round t is
        answered by the clients sampled in the R = T − t + 1 rounds left (≈ (1 − (1−p)^R)·N̂
        records), so its relative noise is :meth:`_final_noise` / ((1 − (1−p)^R)·N̂)."""
        R = max(self.ctx.rounds - int(plan.round) + 1, 1)
        f = 1.0 - (1.0 - self.ctx.participation) ** R
        return self._final_noise(plan, R) * n_k / max(f * float(plan.total), 1.0)

    def _final_noise(self, plan: Plan, R: int) -> float:
        return plan.sigma * math.sqrt(R)  # one draw per round collected: σ√R

    def _vote_rounds(self) -> int:
        # Default: vote in the first half of the rounds (front-loaded), so that each chosen marginal
        # accumulates answers from more clients; the selection budget is split over these S rounds.
        S = self.ctx.select_rounds or max(self.ctx.rounds // 2, 1)
        if not 1 <= S <= self.ctx.rounds:
            raise ValueError(f"select_rounds must be in 1..{self.ctx.rounds}, got {S}")
        return S

    def _next_step(self, state: AccumulateState) -> tuple[int, str] | None:
        r, s = state.round, state.step
        S = self._vote_rounds()
        if s == "":
            return 1, "answer"  # round 1 starts by collecting the one-ways
        if s == "answer" and not state.voted_in_round and r <= S:
            return r, "vote"
        if s == "vote":
            return r, "answer"
        if r >= self.ctx.rounds:
            return None
        return (r + 1, "vote") if r + 1 <= S else (r + 1, "answer")

    def plan(self, state: AccumulateState, participants: list[int]) -> Plan | None:
        nxt = self._next_step(state)
        if nxt is None:
            return None
        r, step = nxt
        if r != state.round:
            state.voted_in_round = False
        plan = self._plan_header(state, r, step, participants)
        if step == "vote":
            measured = state.order
            feas = [q for q in self._feasible(state) if not any(set(q) <= set(m) for m in measured)]
            if self.ctx.vote_on == "workload":  # the public workload's own cliques (see class doc)
                wl = set(self.ctx.workload)
                feas = [q for q in feas if q in wl] or feas
            return self.vote_plan(plan, state, feas or self._feasible(state))
        assert state.budget is not None
        if state.step == "":
            wanted: list[tuple[str, ...]] = [(a,) for a in self.ctx.attrs]
            state.order = list(wanted)
            for q in wanted:
                state.budget.spend(self._rho_of(state, q), f"one-way {q[0]} (once per record)")
        wanted = list(state.order)
        answered = state.answered
        fresh = {q: sum((k, q) not in answered for k in participants) for q in wanted}
        blocks = [q for q in wanted if fresh[q] >= self.min_new_per_block]
        plan.cliques = blocks
        plan.sigmas = [self._sigma_of(state, q) for q in blocks]
        plan.new = {k: [q for q in blocks if (k, q) not in answered] for k in participants}
        plan.arrays = {
            "cliques": np.array(
                [self.cands.index(q) if q in self.cands else -1 for q in blocks], dtype=np.int16
            )
        }
        return plan

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]:
        if plan.step == "vote":
            return self.local_vote(cid, codes, plan, 2.0 * self.wmax)  # Δ: cell and n_k move by 1
        assert plan.cliques is not None and plan.sigmas is not None and plan.new is not None
        if not plan.cliques:  # everyone here has answered everything: nothing to send
            return {}
        rng = _client_rng(self.ctx, plan.round, cid, _STEP_IDS["noise"])
        mine = set(plan.new[cid])
        blocks = []
        for q, sig in zip(plan.cliques, plan.sigmas, strict=True):
            x = (
                marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs)
                if q in mine
                else np.zeros(int(np.prod([self.ctx.sizes[a] for a in q])), dtype=np.int64)
            )
            blocks.append(x + self._client_noise(len(x), sig, plan.m, rng))
        return {"answer": np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)}

    def server_step(self, state: AccumulateState, plan: Plan, sums: dict[str, np.ndarray]) -> AccumulateState:
        assert state.budget is not None
        state.round, state.step = plan.round, plan.step
        if plan.step == "vote":
            state.budget.exponential(state.eps, f"round {plan.round} local selection")
            votes = sums["vote"]
            order = np.argsort(-votes, kind="stable")
            # The T·top marginals are spread over the S vote rounds (front-loaded when S < T).
            left = self._n_select() - len(state.selected)
            k = math.ceil(left / max(self._vote_rounds() - plan.round + 1, 1))
            chosen = [self.cands[i] for i in order if votes[i] > 0][:k]
            for q in chosen:
                state.budget.spend(self._rho_of(state, q), f"marginal {q} (once per record)")
                state.order.append(q)
                state.selected.append(q)
            state.voted_in_round = True
            return state
        assert plan.cliques is not None and plan.new is not None
        if not plan.cliques:  # every participant had answered everything already
            return state
        blocks = _split(sums["answer"].astype(float), plan.cliques, self.ctx.sizes)
        for q, b in zip(plan.cliques, blocks, strict=True):
            self._absorb(state, q, b)
        for k, qs in plan.new.items():
            state.answered.update((k, q) for q in qs)
        self._rebuild(state)
        return state

    def _rebuild(self, state: AccumulateState) -> None:
        state.measurements = []
        n1 = [float(state.acc[(a,)].sum()) for a in self.ctx.attrs if (a,) in state.acc]
        state.n_hat = [max(float(np.mean(n1)), 1.0)] if n1 else [1.0]
        for q, A in state.acc.items():
            n_q = float(A.sum())
            if n_q < 1.0:
                continue
            sig = self._sigma_of(state, q) * math.sqrt(state.rounds_acc[q])
            state.measurements.append(pgm.Measurement(q, A / n_q, sig / n_q))
        self._refit(state)


class FlaimTA(FlaimSA):
    """Ours, trusted-aggregator variant: as ``flaim-sa``, but the server — trusted with each round's
    secure-sum totals, as the FLAIM paper's server that adds the noise — keeps the exact running
    sums E_q and releases each of them with noise *once*.

    Why: in ``flaim-sa`` every round's block sum must be noisy (the server sees it), so A_q after r
    rounds carries r noise draws (variance r·σ²). Here each record enters E_q once and E_q is
    released once, so the final answer has a single draw. The per-round model the clients vote on
    must still be DP, so each marginal's ρ_q is split: a share β (``preview_share``) for noisy
    per-round *previews* B_t + N(0, σ_p²) that steer selection, 1 − β for the final release
    E_q + N(0, σ_f²). A record is in one preview and in the final release of each marginal:
    ρ_q = 1/(2σ_p²) + 1/(2σ_f²), the same ρ_q as ``flaim-sa`` charges, so the budget is unchanged.
    The final fit uses the inverse-variance combination of the preview sum (variance r·σ_p²)
    and the final release (σ_f²), both unbiased for E_q. Clients send exact counts through the
    secure sum (the server learns round totals over ≥ 2 clients, never one client's vector).
    """

    name = "flaim-ta"
    # The server sees exact block sums: a block with a single new answerer would be that client's
    # exact counts, so it waits until two newcomers share a round (data-independent rule).
    min_new_per_block = 2
    # Measurement share of ρ when the caller does not set one: the local votes are dominated by
    # heterogeneity, so ρ buys more as measurement (Adult, 6 seeds: L1 0.197 at 0.95 vs 0.203 at 0.9)
    default_alpha = 0.95

    def init_state(self) -> AccumulateState:
        st = super().init_state()
        b = self.ctx.preview_share
        if not 0 < b < 1:
            raise ValueError(f"preview_share must be in (0, 1), got {b}")
        # Gaussian: ρ = 1/(2σ²); previews at β·ρ_q, the final release at (1 − β)·ρ_q
        st.sigmas = {k: gaussian_sigma(b * v) for k, v in st.rho_unit.items()}  # previews
        st.sig_final = {k: gaussian_sigma((1 - b) * v) for k, v in st.rho_unit.items()}
        st.sigma = st.sigmas[SELECTED]
        st.exact = {}  # server-private: never broadcast, released once in finish()
        return st

    def _final_noise(self, plan: Plan, R: int) -> float:
        assert plan.sigma_final is not None
        return plan.sigma_final  # one draw, however many rounds are collected

    def plan(self, state: AccumulateState, participants: list[int]) -> Plan | None:
        plan = super().plan(state, participants)
        if plan is not None:
            plan.sigma_final = state.sig_final[SELECTED]
        return plan

    def _client_noise(self, n: int, sigma: float, m: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)  # the server adds the noise

    def _absorb(self, state: AccumulateState, q: Clique, block: np.ndarray) -> None:
        state.exact[q] = state.exact.get(q, 0.0) + block
        noisy = block + self.rng.normal(0.0, self._sigma_of(state, q), len(block))
        super()._absorb(state, q, noisy)

    def finish(self, state: AccumulateState) -> pgm.PGM:
        state.measurements = []
        n1 = []
        for q, E in state.exact.items():
            k = _unit(q)
            s_f = state.sig_final[k]
            final = E + self.rng.normal(0.0, s_f, len(E))  # the single release of E_q
            v_p, v_f = state.rounds_acc[q] * state.sigmas[k] ** 2, s_f**2
            est = (state.acc[q] / v_p + final / v_f) / (1 / v_p + 1 / v_f)
            sd = math.sqrt(1 / (1 / v_p + 1 / v_f))
            n_q = float(est.sum())
            if k == ONEWAY:
                n1.append(n_q)
            if n_q >= 1.0:
                state.measurements.append(pgm.Measurement(q, est / n_q, sd / n_q))
        state.n_hat = [max(float(np.mean(n1)), 1.0)] if n1 else [1.0]
        state.exact = {}  # nothing exact outlives the run
        return super().finish(state)
