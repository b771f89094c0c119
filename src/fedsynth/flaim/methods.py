"""Federated AIM variants as plain client / server steps (no transport).

Every round is a short sequence of *steps*. In each step the server broadcasts a plan (a dict of
numpy arrays: model potentials, candidate mask, ...), every sampled client answers with
``client_step(data, plan) -> {key: int64 vector}``, the vectors are summed per key through a
:class:`~fedsynth.secagg.secure_sum.SecureSum`, and ``server_step(state, plan, sums)`` updates the
server state. Nothing else crosses the boundary, so traffic is the secure sum's messages plus the
broadcast plan. The Flower apps call exactly these functions::

    method = make_method("flaim-sa", ctx)          # ctx: domain sizes, workload, budget, seed
    state = method.init_state()
    while (plan := method.plan(state, participants)) is not None:
        vectors = {k: method.client_step(k, client_codes[k], plan) for k in participants}
        sums = {key: secure_sum({k: v[key] for k, v in vectors.items()}) for key in plan_keys}
        state = method.server_step(state, plan, {key: r.total for key, r in sums.items()})

Methods (ρ from (ε, δ); T rounds; d attributes; σ, ε_exp from the fixed-T calibration):

* ``distaim`` — DistAIM: a newly sampled client sends its answers to *all* candidates once; the
  server keeps the running sum A over every client sampled so far and runs central AIM's select /
  measure on A (the exponential and Gaussian mechanisms run on the aggregate, as inside the MPC of
  the paper: our server stands in for that MPC and sees A; documented limitation).
* ``naive`` — NaiveFLAIM: each sampled client selects a marginal with a *local* exponential
  mechanism (score on its own data vs the broadcast model, sensitivity 2·max w since n_k changes
  too); a one-hot vote goes through the secure sum so the server learns which marginals were
  picked; then each client sends its answers in the block of the marginal it picked (zeros
  elsewhere); Gaussian noise is added to each block sum, which is rescaled to N̂.
* ``aug-oracle`` — as naive, local score minus w_q·n_k·τ_k(q), τ_k(q) = ‖M_q(D_k)/n_k − M_q(D)/N‖₁
  computed from the *global* data (not private: a reference only).
* ``aug-private`` — as naive; in rounds 1..T−1 every sampled client also sends its one-way marginals,
  which are noised, fed to the model and kept as a running estimate P̂; the local score subtracts
  w_q·n_k·mean_{a∈q}‖P̂(a) − P_k(a)‖₁ (sensitivity 4·max w) and one-way candidates are dropped.
  σ is charged for T + d·max(T−1, 1) measurements.
* ``flaim-sa`` (ours) — see :mod:`fedsynth.flaim` docs: votes as in naive (local exp. mechanism),
  the ``top`` most-voted marginals are then measured from *every* sampled client; each client adds
  an integer Skellam share of the noise so the secure sum already holds the noisy answer (the
  server never sees an exact count); measurements are weighted by their actual noise after
  rescaling (σ·N̂/n̂_t), and N̂ is the Horvitz–Thompson estimate n̂_t/p averaged over rounds
  (N is not public).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsynth.flaim import model as pgm
from fedsynth.flaim.aim import (
    CandidateFilter,
    aim_on_answers,
    bias,
    check_domain_fits,
    exponential_mechanism,
)
from fedsynth.flaim.measure import marginal_counts, skellam_share
from fedsynth.flaim.workload import Clique, candidate_pool, candidate_weights
from fedsynth.privacy.target import check_epsilon_delta
from fedsynth.privacy.zcdp import Budget, cdp_rho, fixed_t_calibration, gaussian_sigma, skellam_sigma

METHODS = ("distaim", "naive", "aug-oracle", "aug-private", "flaim-sa", "flaim-ta", "flaim-da")
_STEP_IDS = {"oneway": 0, "vote": 1, "answer": 2, "answers": 3}


@dataclass
class Context:
    """Everything public the server and clients share."""

    sizes: dict[str, int]
    workload: list[Clique]
    epsilon: float
    delta: float
    rounds: int
    participation: float
    alpha: float = 0.9
    max_model_mb: float = 80.0
    round_iters: int = 50
    final_iters: int = 1000
    seed: int = 0
    # Seed for the clients' private draws (local exponential mechanism, Skellam noise shares).
    # None = fresh OS entropy, as a deployed client must: a server that knew the seed could
    # regenerate a client's noise share and subtract it. Set it only to reproduce simulations.
    client_seed: int | None = None
    # The same for the server's mechanism draws (its Gaussian noise, DistAIM's exponential
    # mechanism): the run seed is public (clients get it in the run config), so a deployed server
    # draws from OS entropy; simulations set it to replay a run.
    server_seed: int | None = None
    top: int = 1  # flaim-sa: marginals measured per round (on average)
    select_rounds: int | None = None  # flaim-sa: vote only in rounds 1..S (default S = T/2)
    marginals: int | None = None  # flaim-sa: marginals selected in all (default T·top)
    # flaim-sa: zCDP of one one-way measurement relative to one selected marginal (docs/flaim.md:
    # the one-ways anchor every other marginal, so they get more than a selected marginal)
    oneway_weight: float = 2.0
    preview_share: float = 0.3  # flaim-ta: share of each marginal's ρ for the per-round previews
    vote_on: str = "workload"  # flaim-sa: candidates for the votes, "workload" cliques or "closure"
    pool_cells: int = 6500  # flaim-da: cells of the public candidate pool each client uploads once
    global_codes: np.ndarray | None = None  # aug-oracle only (non-private reference)

    @property
    def attrs(self) -> tuple[str, ...]:
        return tuple(self.sizes)


def _client_rng(ctx: Context, rnd: int, cid: int, step: int) -> np.random.Generator:
    """A client's private randomness: OS entropy unless ``ctx.client_seed`` asks for a replay."""
    if ctx.client_seed is None:
        return np.random.default_rng()
    return np.random.default_rng([ctx.client_seed, rnd, cid, step])


@dataclass
class ServerState:
    round: int = 0
    step: str = ""
    budget: Budget | None = None
    sigma: float = 0.0
    eps: float = 0.0
    measurements: list[pgm.Measurement] = field(default_factory=list)
    model: pgm.PGM | None = None
    n_hat: list[float] = field(default_factory=list)  # per-round estimates of N
    selected: list[Clique] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return max(float(np.mean(self.n_hat)), 1.0) if self.n_hat else 1.0


class FederatedMethod:
    """Shared machinery; subclasses define the steps of a round."""

    name = "base"
    default_alpha = 0.9  # AIM's measurement share of ρ
    n_extra_measurements = 0  # besides T: charged at σ by the calibration (d by default)

    def __init__(self, ctx: Context):
        check_epsilon_delta(ctx.epsilon, ctx.delta)
        if ctx.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {ctx.rounds}")
        if not 0 < ctx.participation <= 1:
            raise ValueError(f"participation must be in (0, 1], got {ctx.participation}")
        check_domain_fits(ctx.sizes, ctx.max_model_mb)
        self.ctx = ctx
        self.weights = candidate_weights(ctx.workload, ctx.attrs)
        self.cands = list(self.weights)
        self.wmax = max(self.weights.values())
        self.filter = CandidateFilter(ctx.sizes, self.cands)
        self.rng = np.random.default_rng(None if ctx.server_seed is None else ctx.server_seed + 1)
        self._client_cache: dict[tuple[int, str], Any] = {}
        self._global: dict[Clique, np.ndarray] = {}
        self.client_memory: dict[tuple[int, int], Clique] = {}  # what each client remembers between steps

    # -- calibration ------------------------------------------------------------------------
    def n_measurements_extra(self) -> int:
        return len(self.ctx.attrs)

    def init_state(self) -> ServerState:
        rho = cdp_rho(self.ctx.epsilon, self.ctx.delta)
        cal = fixed_t_calibration(rho, self.ctx.rounds, self.n_measurements_extra(), self.ctx.alpha)
        return ServerState(budget=Budget(rho), sigma=cal.sigma, eps=cal.epsilon_select)

    # -- helpers ------------------------------------------------------------------------------
    def _rescaled(self, q: Clique, noisy_sum: np.ndarray, sigma: float, n_round: float) -> pgm.Measurement:
        """Rescale a noisy count vector of a client subset to N̂; its noise scales with it."""
        return (
            pgm.Measurement(q, noisy_sum, sigma)
            if n_round <= 0
            else pgm.Measurement(q, noisy_sum * (1.0 / n_round), sigma / n_round)
        )

    def _refit(self, state: ServerState, iters: int | None = None) -> None:
        # Measurements are stored as proportions (y/n̂_t, σ/n̂_t); the model is fit on the N̂ scale.
        N = state.total
        ms = [pgm.Measurement(m.clique, m.y * N, m.sigma * N) for m in state.measurements]
        state.model = pgm.fit(self.ctx.sizes, ms, N, iters=iters or self.ctx.round_iters, warm=state.model)

    def _feasible(self, state: ServerState) -> list[Clique]:
        assert state.model is not None and state.budget is not None
        limit = self.ctx.max_model_mb * min(state.budget.used / state.budget.rho, 1.0)
        feas = self.filter.feasible(state.model, limit)
        if not feas:
            raise pgm.ModelSizeError(f"no candidate marginal fits under the {limit:.2f} MB model-size cap")
        return feas

    def broadcast_model(self, state: ServerState) -> dict[str, np.ndarray]:
        """The model as the clients receive it: potentials as float32 (that is what is counted)."""
        assert state.model is not None
        return {"pot:" + ",".join(c): v.astype(np.float32) for c, v in state.model.potentials.items()}

    def client_model(self, plan: dict[str, Any]) -> pgm.PGM:
        key = (plan["round"], "model")
        if key not in self._client_cache:  # every client rebuilds the same model from the broadcast
            self._client_cache.clear()
            pots = {
                tuple(k[4:].split(",")): v.astype(np.float64)
                for k, v in plan["arrays"].items()
                if k.startswith("pot:")
            }
            self._client_cache[key] = pgm.PGM(self.ctx.sizes, pots, float(plan["total"]))
        return self._client_cache[key]

    def model_counts(self, plan: dict[str, Any], q: Clique) -> np.ndarray:
        key = (plan["round"], "c:" + ",".join(q))
        if key not in self._client_cache:
            self._client_cache[key] = self.client_model(plan).probability(q).ravel()
        return self._client_cache[key]

    def global_answer(self, q: Clique) -> np.ndarray:
        if q not in self._global:
            assert self.ctx.global_codes is not None
            g = marginal_counts(self.ctx.global_codes, self.ctx.sizes, q, self.ctx.attrs)
            self._global[q] = g / max(g.sum(), 1)
        return self._global[q]

    def local_sigma(self, plan: dict[str, Any], n_k: float) -> float:
        """Noise of a measurement in client-k units: it is taken over ≈ p·N̂ records, rescaled."""
        return plan["sigma"] * n_k / max(self.ctx.participation * float(plan["total"]), 1.0)

    def local_scores(
        self,
        codes: np.ndarray,
        plan: dict[str, Any],
        cands: list[Clique],
        tau: dict[Clique, float] | None = None,
    ) -> np.ndarray:
        """u_k(q) = w_q (e_k(q) − n_k τ_k(q) − √(2/π) σ_k |Ω_q|) with e_k(q) = ‖M_q(D_k) − n_k p̂_q‖₁.

        σ_k is the measurement noise in the units of one *typical* participant, n̄ = p·N̂/m
        (public), not of this client's n_k: a penalty that grew with n_k would shift the scores of
        candidates unequally when a record is added (by √(2/π)·σ·|Ω_q|/(f·N̂) — hundreds for a large
        3-way), far past the sensitivity 2·max w the exponential mechanism is calibrated to.
        """
        n_k = len(codes)
        n_ref = self.ctx.participation * float(plan["total"]) / max(int(plan["m"]), 1)
        sig_k = self.local_sigma(plan, n_ref)
        out = np.empty(len(cands))
        for i, q in enumerate(cands):
            x = marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs)
            err = np.abs(x - n_k * self.model_counts(plan, q)).sum()
            het = n_k * tau[q] if tau is not None else 0.0
            out[i] = self.weights[q] * (err - het - bias(sig_k, len(x)))
        return out

    # -- protocol (overridden) ----------------------------------------------------------------
    def upcoming_round(self, state: ServerState) -> int | None:
        """The round the next plan belongs to (the runner draws participants once per round)."""
        nxt = self._next_step(state)
        return None if nxt is None else nxt[0]

    def _next_step(self, state: ServerState) -> tuple[int, str] | None:
        return (state.round + 1, "answers") if state.round < self.ctx.rounds else None

    def plan(self, state: ServerState, participants: list[int]) -> dict[str, Any] | None:
        raise NotImplementedError

    @staticmethod
    def _plan_header(state: ServerState, rnd: int, step: str, participants: list[int]) -> dict[str, Any]:
        """The fields every broadcast carries (round, step, current σ / ε_exp, N̂, m = #participants)."""
        return {
            "round": rnd,
            "step": step,
            "sigma": state.sigma,
            "eps": state.eps,
            "total": state.total,
            "m": len(participants),
            "arrays": {},
        }

    def client_step(self, cid: int, codes: np.ndarray, plan: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def server_step(
        self, state: ServerState, plan: dict[str, Any], sums: dict[str, np.ndarray]
    ) -> ServerState:
        raise NotImplementedError

    def finish(self, state: ServerState) -> pgm.PGM:
        self._refit(state, self.ctx.final_iters)
        assert state.model is not None
        return state.model


def _newcomers(participants: list[int], contributed: set[int]) -> list[int]:
    """Participants that have not uploaded yet — or none, if that is a single client: a server that
    sees exact sums would learn a lone newcomer's vector (it uploads in a later round instead)."""
    new = [k for k in participants if k not in contributed]
    return new if len(new) >= 2 else []


def _oneways(codes: np.ndarray, sizes: dict[str, int], attrs: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([marginal_counts(codes, sizes, (a,), attrs) for a in attrs])


def _split(vec: np.ndarray, cliques: list[Clique], sizes: dict[str, int]) -> list[np.ndarray]:
    lens = [int(np.prod([sizes[a] for a in q])) for q in cliques]
    return np.split(vec, np.cumsum(lens)[:-1])


class VotingMethod(FederatedMethod):
    """naive / aug-oracle / aug-private / flaim-sa: steps 'oneway' (init) → 'vote' → 'answer'."""

    oneway_every_round = False
    augment = "none"  # none | oracle | private
    distributed_noise = False

    def _next_step(self, state: ServerState) -> tuple[int, str] | None:
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

    def plan(self, state: ServerState, participants: list[int]) -> dict[str, Any] | None:
        nxt = self._next_step(state)
        if nxt is None:
            return None
        r, step = nxt
        plan = self._plan_header(state, r, step, participants)
        if step == "vote":
            feas = self._feasible(state)
            if self.augment == "private":
                feas = [q for q in feas if len(q) > 1] or feas
            plan["cands"] = feas
            plan["arrays"] = self.broadcast_model(state)
            plan["arrays"]["cands"] = np.array([self.cands.index(q) for q in feas], dtype=np.int16)
            if self.augment == "private":
                plan["arrays"]["p1"] = state.extra["p1"].astype(np.float32)
        elif step == "answer":
            plan["cliques"] = state.extra["to_measure"]
            plan["arrays"] = {
                "cliques": np.array([self.cands.index(q) for q in plan["cliques"]], dtype=np.int16)
            }
        return plan

    def _tau(
        self, codes: np.ndarray, plan: dict[str, Any], cands: list[Clique]
    ) -> dict[Clique, float] | None:
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
            plan["arrays"]["p1"].astype(float), np.cumsum([self.ctx.sizes[a] for a in self.ctx.attrs])[:-1]
        )
        local = {
            a: marginal_counts(codes, self.ctx.sizes, (a,), self.ctx.attrs) / n_k for a in self.ctx.attrs
        }
        d1 = {a: float(np.abs(p1[i] - local[a]).sum()) for i, a in enumerate(self.ctx.attrs)}
        return {q: float(np.mean([d1[a] for a in q])) for q in cands}

    def sensitivity(self) -> float:
        # |M_q(D_k) − n_k p̂| moves by ≤ 2 per record (cell and n_k); the τ term adds 2 more.
        return (4.0 if self.augment == "private" else 2.0) * self.wmax

    def client_step(self, cid: int, codes: np.ndarray, plan: dict[str, Any]) -> dict[str, np.ndarray]:
        sizes, attrs = self.ctx.sizes, self.ctx.attrs
        rng = _client_rng(self.ctx, plan["round"], cid, _STEP_IDS[plan["step"]])
        if plan["step"] == "oneway":
            x = _oneways(codes, sizes, attrs)
            if self.distributed_noise:
                x = x + skellam_share(len(x), plan["sigma"] ** 2 / plan["m"], rng)
            return {"oneway": x}
        if plan["step"] == "vote":
            cands = plan["cands"]
            if len(codes) == 0:
                return {"vote": np.zeros(len(self.cands), dtype=np.int64)}
            scores = self.local_scores(codes, plan, cands, self._tau(codes, plan, cands))
            pick = cands[exponential_mechanism(scores, plan["eps"], self.sensitivity(), rng)]
            v = np.zeros(len(self.cands), dtype=np.int64)
            v[self.cands.index(pick)] = 1
            self.client_memory[(plan["round"], cid)] = pick  # client-side state (Flower: its Context)
            return {"vote": v}
        # answer
        blocks = []
        for q in plan["cliques"]:
            x = marginal_counts(codes, sizes, q, attrs)
            if not self.distributed_noise and self.client_memory.get((plan["round"], cid)) != q:
                x = np.zeros_like(x)
            blocks.append(x)
        vec = np.concatenate(blocks)
        if self.distributed_noise:
            vec = vec + skellam_share(len(vec), plan["sigma"] ** 2 / plan["m"], rng)
        return {"answer": vec}

    def server_step(
        self, state: ServerState, plan: dict[str, Any], sums: dict[str, np.ndarray]
    ) -> ServerState:
        assert state.budget is not None
        state.round, state.step = plan["round"], plan["step"]
        attrs, sizes, sigma = self.ctx.attrs, self.ctx.sizes, state.sigma
        if plan["step"] == "oneway":
            state.budget.gaussian(sigma, f"round {plan['round']} one-way marginals", math.sqrt(len(attrs)))
            y = sums["oneway"].astype(float)
            if not self.distributed_noise:
                y = y + self.rng.normal(0, sigma, len(y))
            parts = _split(y, [(a,) for a in attrs], sizes)
            n_round = float(np.mean([p.sum() for p in parts]))
            state.n_hat.append(max(n_round, 1.0) / self.ctx.participation)
            for a, p in zip(attrs, parts, strict=True):
                state.measurements.append(self._rescaled((a,), p, sigma, max(n_round, 1.0)))
            p1 = np.concatenate([np.clip(p, 0, None) for p in parts])
            state.extra["p1_sum"] = state.extra.get("p1_sum", 0) + p1
            acc = state.extra["p1_sum"]
            state.extra["p1"] = np.concatenate(
                [b / max(b.sum(), 1e-9) for b in _split(acc, [(a,) for a in attrs], sizes)]
            )
            self._refit(state)
        elif plan["step"] == "vote":
            state.budget.exponential(state.eps, f"round {plan['round']} local selection")
            votes = sums["vote"]
            state.extra["votes"] = votes
            order = np.argsort(-votes, kind="stable")
            chosen = [self.cands[i] for i in order if votes[i] > 0]
            if self.distributed_noise:
                chosen = chosen[: self.ctx.top]
            state.extra["to_measure"] = chosen
        else:
            chosen = plan["cliques"]
            k = len(chosen) if self.distributed_noise else 1  # naive: a record is in one block only
            state.budget.gaussian(sigma, f"round {plan['round']} measurement", math.sqrt(k))
            y = sums["answer"].astype(float)
            if not self.distributed_noise:
                y = y + self.rng.normal(0, sigma, len(y))
            blocks = _split(y, chosen, sizes)
            for q, b in zip(chosen, blocks, strict=True):
                n_b = float(b.sum())
                if n_b < 1.0:  # the noise swamped a block from tiny clients: skip it (post-processing)
                    continue
                state.measurements.append(self._rescaled(q, b, sigma, n_b))
                state.selected.append(q)
            if self.distributed_noise and blocks:
                state.n_hat.append(
                    max(float(np.mean([b.sum() for b in blocks])), 1.0) / self.ctx.participation
                )
            self._refit(state)
        return state

    def n_measurements_extra(self) -> int:
        d = len(self.ctx.attrs)
        if self.distributed_noise:  # top-k marginals per round: charge (top−1)·T extra
            return d + (self.ctx.top - 1) * self.ctx.rounds
        return d * max(self.ctx.rounds - 1, 1) if self.oneway_every_round else d


class Naive(VotingMethod):
    name = "naive"


class AugOracle(VotingMethod):
    name = "aug-oracle"
    augment = "oracle"


class AugPrivate(VotingMethod):
    name = "aug-private"
    augment = "private"
    oneway_every_round = True


class FlaimSA(VotingMethod):
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
    L1/L2 sensitivity), and σ is solved so that (d + T·top)·ρ_sk(σ) = αρ.
    The secure sum only ever reveals noisy sums to the server.
    """

    name = "flaim-sa"
    distributed_noise = True
    # A block sum over one new client is that client's counts plus the (full) noise: private.
    min_new_per_block = 1

    def init_state(self) -> ServerState:
        rho = cdp_rho(self.ctx.epsilon, self.ctx.delta)
        w1, d, n_sel = self.ctx.oneway_weight, len(self.ctx.attrs), self._n_select()
        if not w1 > 0:
            raise ValueError(f"oneway_weight must be > 0, got {w1}")
        if self.ctx.vote_on not in ("workload", "closure"):
            raise ValueError(f"vote_on must be 'workload' or 'closure', got {self.ctx.vote_on!r}")
        cal = fixed_t_calibration(rho, self._vote_rounds(), d, self.ctx.alpha)
        # d one-ways at ρ₁ = w₁·r and n_sel marginals at r: d·w₁·r + n_sel·r = αρ
        r = self.ctx.alpha * rho / (d * w1 + n_sel)
        rho_unit = {1: w1 * r, 2: r}  # zCDP of one one-way (key 1) / one selected marginal (key 2)
        sigmas = {k: skellam_sigma(v) for k, v in rho_unit.items()}
        st = ServerState(budget=Budget(rho), sigma=sigmas[2], eps=cal.epsilon_select)
        st.extra.update(acc={}, rounds_acc={}, answered=set(), order=[], rho_unit=rho_unit, sigmas=sigmas)
        return st

    @staticmethod
    def _rho_of(state: ServerState, q: Clique) -> float:
        return state.extra["rho_unit"][_unit(q)]

    def _client_noise(self, n: int, sigma: float, m: int, rng: np.random.Generator) -> np.ndarray:
        return skellam_share(n, sigma**2 / m, rng)  # the m shares sum to Sk(σ²)

    def _absorb(self, state: ServerState, q: Clique, block: np.ndarray) -> None:
        """Add one round's (already noisy) block sum to the running answer A_q."""
        ex = state.extra
        ex["acc"][q] = ex["acc"].get(q, 0.0) + block
        ex["rounds_acc"][q] = ex["rounds_acc"].get(q, 0) + 1

    def _n_select(self) -> int:
        n = self.ctx.marginals if self.ctx.marginals is not None else self.ctx.rounds * self.ctx.top
        if n < 1:
            raise ValueError(f"marginals must be >= 1, got {n}")
        return n

    @staticmethod
    def _sigma_of(state: ServerState, q: Clique) -> float:
        """σ of one round's noise on q's block."""
        return state.extra["sigmas"][_unit(q)]

    def local_sigma(self, plan: dict[str, Any], n_k: float) -> float:
        """Noise of the marginal's *final* answer in client-k units. A marginal chosen in round t is
        answered by the clients sampled in the R = T − t + 1 rounds left (≈ (1 − (1−p)^R)·N̂
        records), so its relative noise is :meth:`_final_noise` / ((1 − (1−p)^R)·N̂)."""
        R = max(self.ctx.rounds - int(plan["round"]) + 1, 1)
        f = 1.0 - (1.0 - self.ctx.participation) ** R
        return self._final_noise(plan, R) * n_k / max(f * float(plan["total"]), 1.0)

    def _final_noise(self, plan: dict[str, Any], R: int) -> float:
        return plan["sigma"] * math.sqrt(R)  # one draw per round collected: σ√R

    def _vote_rounds(self) -> int:
        # Default: vote in the first half of the rounds (front-loaded), so that each chosen marginal
        # accumulates answers from more clients; the selection budget is split over these S rounds.
        S = self.ctx.select_rounds or max(self.ctx.rounds // 2, 1)
        if not 1 <= S <= self.ctx.rounds:
            raise ValueError(f"select_rounds must be in 1..{self.ctx.rounds}, got {S}")
        return S

    def _next_step(self, state: ServerState) -> tuple[int, str] | None:
        r, s = state.round, state.step
        S = self._vote_rounds()
        if s == "":
            return 1, "answer"  # round 1 starts by collecting the one-ways
        if s == "answer" and not state.extra.get("voted_in_round") and r <= S:
            return r, "vote"
        if s == "vote":
            return r, "answer"
        if r >= self.ctx.rounds:
            return None
        return (r + 1, "vote") if r + 1 <= S else (r + 1, "answer")

    def plan(self, state: ServerState, participants: list[int]) -> dict[str, Any] | None:
        nxt = self._next_step(state)
        if nxt is None:
            return None
        r, step = nxt
        if r != state.round:
            state.extra["voted_in_round"] = False
        plan = self._plan_header(state, r, step, participants)
        if step == "vote":
            measured = state.extra["order"]
            feas = [q for q in self._feasible(state) if not any(set(q) <= set(m) for m in measured)]
            if self.ctx.vote_on == "workload":  # the public workload's own cliques (see class doc)
                wl = set(self.ctx.workload)
                feas = [q for q in feas if q in wl] or feas
            plan["cands"] = feas or self._feasible(state)
            plan["arrays"] = self.broadcast_model(state)
            plan["arrays"]["cands"] = np.array([self.cands.index(q) for q in plan["cands"]], dtype=np.int16)
            return plan
        if state.step == "":
            wanted = [(a,) for a in self.ctx.attrs]
            state.extra["order"] = list(wanted)
            for q in wanted:
                state.budget.spend(self._rho_of(state, q), f"one-way {q[0]} (once per record)")
        wanted = list(state.extra["order"])
        answered = state.extra["answered"]
        fresh = {q: sum((k, q) not in answered for k in participants) for q in wanted}
        blocks = [q for q in wanted if fresh[q] >= self.min_new_per_block]
        plan["cliques"] = blocks
        plan["sigmas"] = [self._sigma_of(state, q) for q in blocks]
        plan["new"] = {k: [q for q in blocks if (k, q) not in answered] for k in participants}
        plan["arrays"] = {
            "cliques": np.array(
                [self.cands.index(q) if q in self.cands else -1 for q in blocks], dtype=np.int16
            )
        }
        return plan

    def client_step(self, cid: int, codes: np.ndarray, plan: dict[str, Any]) -> dict[str, np.ndarray]:
        if plan["step"] == "vote":
            return super().client_step(cid, codes, plan)
        if not plan["cliques"]:  # everyone here has answered everything: nothing to send
            return {}
        rng = _client_rng(self.ctx, plan["round"], cid, 5)
        mine = set(plan["new"][cid])
        blocks = []
        for q, sig in zip(plan["cliques"], plan["sigmas"], strict=True):
            x = (
                marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs)
                if q in mine
                else np.zeros(int(np.prod([self.ctx.sizes[a] for a in q])), dtype=np.int64)
            )
            blocks.append(x + self._client_noise(len(x), sig, plan["m"], rng))
        return {"answer": np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)}

    def server_step(
        self, state: ServerState, plan: dict[str, Any], sums: dict[str, np.ndarray]
    ) -> ServerState:
        assert state.budget is not None
        state.round, state.step = plan["round"], plan["step"]
        ex = state.extra
        if plan["step"] == "vote":
            state.budget.exponential(state.eps, f"round {plan['round']} local selection")
            votes = sums["vote"]
            order = np.argsort(-votes, kind="stable")
            # The T·top marginals are spread over the S vote rounds (front-loaded when S < T).
            left = self._n_select() - len(state.selected)
            k = math.ceil(left / max(self._vote_rounds() - plan["round"] + 1, 1))
            chosen = [self.cands[i] for i in order if votes[i] > 0][:k]
            for q in chosen:
                state.budget.spend(self._rho_of(state, q), f"marginal {q} (once per record)")
                ex["order"].append(q)
                state.selected.append(q)
            ex["voted_in_round"] = True
            return state
        if not plan["cliques"]:  # every participant had answered everything already
            return state
        blocks = _split(sums["answer"].astype(float), plan["cliques"], self.ctx.sizes)
        for q, b in zip(plan["cliques"], blocks, strict=True):
            self._absorb(state, q, b)
        for k, qs in plan["new"].items():
            ex["answered"].update((k, q) for q in qs)
        self._rebuild(state)
        return state

    def _rebuild(self, state: ServerState) -> None:
        ex = state.extra
        state.measurements = []
        n1 = [float(ex["acc"][(a,)].sum()) for a in self.ctx.attrs if (a,) in ex["acc"]]
        state.n_hat = [max(float(np.mean(n1)), 1.0)] if n1 else [1.0]
        for q, A in ex["acc"].items():
            n_q = float(A.sum())
            if n_q < 1.0:
                continue
            sig = self._sigma_of(state, q) * math.sqrt(ex["rounds_acc"][q])
            state.measurements.append(pgm.Measurement(q, A / n_q, sig / n_q))
        self._refit(state)



def _unit(q: Clique) -> int:
    """Budget class of a measured marginal: 1 = one-way, 2 = selected marginal."""
    return 1 if len(q) == 1 else 2


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

    def init_state(self) -> ServerState:
        st = super().init_state()
        b = self.ctx.preview_share
        if not 0 < b < 1:
            raise ValueError(f"preview_share must be in (0, 1), got {b}")
        ru = st.extra["rho_unit"]
        # Gaussian: ρ = 1/(2σ²); previews at β·ρ_q, the final release at (1 − β)·ρ_q
        st.extra["sigmas"] = {k: gaussian_sigma(b * v) for k, v in ru.items()}  # previews
        st.extra["sig_final"] = {k: gaussian_sigma((1 - b) * v) for k, v in ru.items()}
        st.sigma = st.extra["sigmas"][2]
        st.extra["exact"] = {}  # server-private: never broadcast, released once in finish()
        return st

    def _final_noise(self, plan: dict[str, Any], R: int) -> float:
        return plan["sigma_final"]  # one draw, however many rounds are collected

    def plan(self, state: ServerState, participants: list[int]) -> dict[str, Any] | None:
        plan = super().plan(state, participants)
        if plan is not None:
            plan["sigma_final"] = state.extra["sig_final"][2]
        return plan

    def _client_noise(self, n: int, sigma: float, m: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)  # the server adds the noise

    def _absorb(self, state: ServerState, q: Clique, block: np.ndarray) -> None:
        ex = state.extra
        ex["exact"][q] = ex["exact"].get(q, 0.0) + block
        noisy = block + self.rng.normal(0.0, self._sigma_of(state, q), len(block))
        super()._absorb(state, q, noisy)

    def finish(self, state: ServerState) -> pgm.PGM:
        ex = state.extra
        state.measurements = []
        n1 = []
        for q, E in ex["exact"].items():
            k = _unit(q)
            s_f = ex["sig_final"][k]
            final = E + self.rng.normal(0.0, s_f, len(E))  # the single release of E_q
            v_p, v_f = ex["rounds_acc"][q] * ex["sigmas"][k] ** 2, s_f**2
            est = (ex["acc"][q] / v_p + final / v_f) / (1 / v_p + 1 / v_f)
            sd = math.sqrt(1 / (1 / v_p + 1 / v_f))
            n_q = float(est.sum())
            if k == 1:
                n1.append(n_q)
            if n_q >= 1.0:
                state.measurements.append(pgm.Measurement(q, est / n_q, sd / n_q))
        state.n_hat = [max(float(np.mean(n1)), 1.0)] if n1 else [1.0]
        ex["exact"] = {}  # nothing exact outlives the run
        return super().finish(state)


class DistAIM(FederatedMethod):
    """Clients send all candidate answers once; the server runs AIM on the running aggregate."""

    name = "distaim"

    def plan(self, state: ServerState, participants: list[int]) -> dict[str, Any] | None:
        if state.round >= self.ctx.rounds:
            return None
        contributed = state.extra.setdefault("contributed", set())
        return {
            **self._plan_header(state, state.round + 1, "answers", participants),
            "new": _newcomers(participants, contributed),
        }

    def client_step(self, cid: int, codes: np.ndarray, plan: dict[str, Any]) -> dict[str, np.ndarray]:
        if cid not in plan["new"]:
            return {"answers": np.zeros(self._total_cells(), dtype=np.int64)}
        return {
            "answers": np.concatenate(
                [marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs) for q in self.cands]
            )
        }

    def _total_cells(self) -> int:
        return int(sum(np.prod([self.ctx.sizes[a] for a in q]) for q in self.cands))

    def server_step(
        self, state: ServerState, plan: dict[str, Any], sums: dict[str, np.ndarray]
    ) -> ServerState:
        assert state.budget is not None
        state.round = plan["round"]
        state.extra["contributed"].update(plan["new"])
        agg = state.extra.get("agg")
        agg = sums["answers"] if agg is None else agg + sums["answers"]
        state.extra["agg"] = agg
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


class DeferredAIM(FederatedMethod):
    """Ours, deferred AIM (``flaim-da``): collect first, then run central AIM once on the aggregate.

    The FLAIM variants above release something every round, and every release before the last sees
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

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.pool = candidate_pool(ctx.sizes, ctx.workload, ctx.pool_cells)
        self._cells = int(sum(np.prod([ctx.sizes[a] for a in q]) for q in self.pool))

    def init_state(self) -> ServerState:
        st = ServerState(budget=Budget(cdp_rho(self.ctx.epsilon, self.ctx.delta)))
        st.extra.update(agg=None, contributed=set())
        return st

    def plan(self, state: ServerState, participants: list[int]) -> dict[str, Any] | None:
        if state.round >= self.ctx.rounds:
            return None
        plan = self._plan_header(state, state.round + 1, "answers", participants)
        # only these take part in the secure sum
        plan["senders"] = _newcomers(participants, state.extra["contributed"])
        return plan

    def client_step(self, cid: int, codes: np.ndarray, plan: dict[str, Any]) -> dict[str, np.ndarray]:
        if cid not in plan["senders"]:
            return {}
        return {
            "answers": np.concatenate(
                [marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs) for q in self.pool]
            )
        }

    def server_step(
        self, state: ServerState, plan: dict[str, Any], sums: dict[str, np.ndarray]
    ) -> ServerState:
        state.round, state.step = plan["round"], plan["step"]
        ex = state.extra
        if plan["senders"] and "answers" in sums:
            total = np.asarray(sums["answers"], dtype=np.int64)
            if total.shape != (self._cells,):
                raise ValueError(f"expected {self._cells} summed cells, got shape {total.shape}")
            ex["agg"] = total if ex["agg"] is None else ex["agg"] + total
            ex["contributed"].update(plan["senders"])
        return state

    def finish(self, state: ServerState) -> pgm.PGM:
        ex = state.extra
        if ex["agg"] is None:
            raise ValueError(
                "no round had two or more new clients, so nothing was collected; "
                "raise participation or rounds"
            )
        answers = dict(zip(self.pool, _split(ex["agg"], self.pool, self.ctx.sizes), strict=True))
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
        )
        ex["agg"] = None  # nothing exact outlives the run
        state.budget, state.selected = res.budget, list(res.selected)
        state.measurements, state.model = list(res.measurements), res.model
        state.n_hat = [res.total_estimate]
        return res.model


def default_alpha(name: str) -> float:
    """The measurement share α a method uses when the caller leaves it unset."""
    return METHOD_CLASSES[name].default_alpha if name in METHOD_CLASSES else FederatedMethod.default_alpha


def make_method(name: str, ctx: Context) -> FederatedMethod:
    table = METHOD_CLASSES
    if name not in table:
        raise ValueError(f"unknown federated method {name!r}; choose one of {sorted(table)}")
    return table[name](ctx)


METHOD_CLASSES: dict[str, type[FederatedMethod]] = {
    "distaim": DistAIM,
    "naive": Naive,
    "aug-oracle": AugOracle,
    "aug-private": AugPrivate,
    "flaim-sa": FlaimSA,
    "flaim-ta": FlaimTA,
    "flaim-da": DeferredAIM,
}
