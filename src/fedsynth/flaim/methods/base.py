"""The method protocol: public context, the broadcast plan, server state, shared server/client helpers.

Every round is a short sequence of *steps*. In each step the server broadcasts a :class:`Plan`
(scalars plus numpy arrays: model potentials, candidate mask, ...), every sampled client answers
with ``client_step(cid, codes, plan) -> {key: int64 vector}``, the vectors are summed per key
through a :class:`~fedsynth.secagg.secure_sum.SecureSum`, and ``server_step(state, plan, sums)``
updates the server state. Nothing else crosses the boundary, so traffic is the secure sum's
messages plus the broadcast plan. :func:`fedsynth.flaim.driver.drive` is the one loop that runs a
method; the in-process runner and the Flower apps only differ in how a step's sums are formed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from fedsynth.flaim import model as pgm
from fedsynth.flaim.aim import CandidateFilter, bias, check_domain_fits, exponential_mechanism
from fedsynth.flaim.measure import marginal_counts
from fedsynth.flaim.workload import Clique, candidate_weights
from fedsynth.privacy.target import check_epsilon_delta
from fedsynth.privacy.zcdp import Budget, cdp_rho, fixed_t_calibration

METHODS = ("distaim", "naive", "aug-oracle", "aug-private", "flaim-sa", "flaim-ta", "flaim-da", "flaim-he")
# Stream ids of a client's private draws per step (the replay seed is [client_seed, round, cid, id]).
_STEP_IDS = {"oneway": 0, "vote": 1, "answer": 2, "answers": 3, "noise": 5}


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
    # flaim-da: the marginals measured before AIM's first round (None: every one-way) and the
    # public subset of the closure AIM may select from (None: the whole pool); fed-pgm passes the
    # pgm spec's target 2-ways and its model-capped candidates here
    initial: list[Clique] | None = None
    candidates: list[Clique] | None = None
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
class Plan:
    """One step's broadcast: the header every step carries, then the fields some steps add.

    On the wire (:meth:`to_wire`) a field that is ``None`` is left out and the rest keep the names
    the clients have always read; ``arrays`` travel separately as a ``.npz`` blob.
    """

    round: int
    step: str
    sigma: float  # current σ of one measurement (per-block σ in ``sigmas`` where they differ)
    eps: float  # ε_exp of the (local) exponential mechanism
    total: float  # N̂, the server's estimate of the number of records
    m: int  # number of participants this round
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    cands: list[Clique] | None = None  # vote: the candidates the clients choose from
    cliques: list[Clique] | None = None  # answer: the blocks of the answer vector, in order
    sigmas: list[float] | None = None  # flaim-sa/ta answer: σ of each block's noise
    new: dict[int, list[Clique]] | None = None  # flaim-sa/ta: blocks each client answers first time
    uploaders: list[int] | None = None  # distaim: the clients that upload their answers this round
    sigma_final: float | None = None  # flaim-ta: σ of a selected marginal's single final release
    senders: list[int] | None = None  # flaim-da: the only participants that take part in the step

    # field → name on the wire (DistAIM's uploaders have always travelled as "new")
    _WIRE: ClassVar[dict[str, str]] = {"uploaders": "new"}

    def to_wire(self) -> dict[str, Any]:
        """The scalar / list fields by wire name (no arrays), ``None`` fields left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "arrays" and v is not None:
                out[self._WIRE.get(f.name, f.name)] = v
        return out

    @classmethod
    def from_wire(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Plan:
        """Inverse of :meth:`to_wire` (``meta`` already decoded: cliques as tuples, int keys)."""
        kw = dict(meta)
        if isinstance(kw.get("new"), list):  # DistAIM: a list of client ids, not {client: cliques}
            kw["uploaders"] = kw.pop("new")
        return cls(**kw, arrays=arrays)


@dataclass
class ServerState:
    """What every method's server keeps; methods with more state subclass it."""

    round: int = 0
    step: str = ""
    budget: Budget | None = None
    sigma: float = 0.0
    eps: float = 0.0
    measurements: list[pgm.Measurement] = field(default_factory=list)
    model: pgm.PGM | None = None
    n_hat: list[float] = field(default_factory=list)  # per-round estimates of N
    selected: list[Clique] = field(default_factory=list)

    @property
    def total(self) -> float:
        return max(float(np.mean(self.n_hat)), 1.0) if self.n_hat else 1.0


S = TypeVar("S", bound=ServerState)


class FederatedMethod(Generic[S]):
    """Shared machinery; subclasses define the steps of a round and their server state ``S``."""

    name = "base"
    default_alpha = 0.9  # AIM's measurement share of ρ
    state_type: type[ServerState] = ServerState

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
        self.client_memory: dict[tuple[int, int], Clique] = {}  # what each client remembers between steps

    # -- calibration ------------------------------------------------------------------------
    def n_measurements_extra(self) -> int:
        """Gaussian measurements charged at σ besides the T selected ones: the d one-ways."""
        return len(self.ctx.attrs)

    def init_state(self) -> S:
        """Fixed-T calibration (:func:`~fedsynth.privacy.zcdp.fixed_t_calibration`) of σ and ε_exp."""
        rho = cdp_rho(self.ctx.epsilon, self.ctx.delta)
        cal = fixed_t_calibration(rho, self.ctx.rounds, self.n_measurements_extra(), self.ctx.alpha)
        return self.state_type(budget=Budget(rho), sigma=cal.sigma, eps=cal.epsilon_select)  # type: ignore[return-value]

    # -- helpers ------------------------------------------------------------------------------
    def _rescaled(self, q: Clique, noisy_sum: np.ndarray, sigma: float, n_round: float) -> pgm.Measurement:
        """Rescale a noisy count vector of a client subset to N̂; its noise scales with it."""
        return (
            pgm.Measurement(q, noisy_sum, sigma)
            if n_round <= 0
            else pgm.Measurement(q, noisy_sum * (1.0 / n_round), sigma / n_round)
        )

    def _refit(self, state: S, iters: int | None = None) -> None:
        # Measurements are stored as proportions (y/n̂_t, σ/n̂_t); the model is fit on the N̂ scale.
        N = state.total
        ms = [pgm.Measurement(m.clique, m.y * N, m.sigma * N) for m in state.measurements]
        state.model = pgm.fit(self.ctx.sizes, ms, N, iters=iters or self.ctx.round_iters, warm=state.model)

    def _feasible(self, state: S) -> list[Clique]:
        assert state.model is not None and state.budget is not None
        limit = self.ctx.max_model_mb * min(state.budget.used / state.budget.rho, 1.0)
        feas = self.filter.feasible(state.model, limit)
        if not feas:
            raise pgm.ModelSizeError(f"no candidate marginal fits under the {limit:.2f} MB model-size cap")
        return feas

    def broadcast_model(self, state: S) -> dict[str, np.ndarray]:
        """The model as the clients receive it: potentials as float32 (that is what is counted)."""
        assert state.model is not None
        return {"pot:" + ",".join(c): v.astype(np.float32) for c, v in state.model.potentials.items()}

    def client_model(self, plan: Plan) -> pgm.PGM:
        key = (plan.round, "model")
        if key not in self._client_cache:  # every client rebuilds the same model from the broadcast
            self._client_cache.clear()
            pots = {
                tuple(k[4:].split(",")): v.astype(np.float64)
                for k, v in plan.arrays.items()
                if k.startswith("pot:")
            }
            self._client_cache[key] = pgm.PGM(self.ctx.sizes, pots, float(plan.total))
        return self._client_cache[key]

    def model_counts(self, plan: Plan, q: Clique) -> np.ndarray:
        key = (plan.round, "c:" + ",".join(q))
        if key not in self._client_cache:
            self._client_cache[key] = self.client_model(plan).probability(q).ravel()
        return self._client_cache[key]

    def local_sigma(self, plan: Plan, n_k: float) -> float:
        """Noise of a measurement in client-k units: it is taken over ≈ p·N̂ records, rescaled."""
        return plan.sigma * n_k / max(self.ctx.participation * float(plan.total), 1.0)

    def local_scores(
        self,
        codes: np.ndarray,
        plan: Plan,
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
        n_ref = self.ctx.participation * float(plan.total) / max(int(plan.m), 1)
        sig_k = self.local_sigma(plan, n_ref)
        out = np.empty(len(cands))
        for i, q in enumerate(cands):
            x = marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs)
            err = np.abs(x - n_k * self.model_counts(plan, q)).sum()
            het = n_k * tau[q] if tau is not None else 0.0
            out[i] = self.weights[q] * (err - het - bias(sig_k, len(x)))
        return out

    def local_vote(
        self,
        cid: int,
        codes: np.ndarray,
        plan: Plan,
        sensitivity: float,
        tau: dict[Clique, float] | None = None,
    ) -> dict[str, np.ndarray]:
        """A client's vote: the local exponential mechanism (ε_exp = ``plan.eps``, Δ = ``sensitivity``)
        over ``plan.cands`` on :meth:`local_scores`, sent as a one-hot vector over all candidates
        (the secure sum only reveals the vote counts). The pick is remembered client-side."""
        assert plan.cands is not None
        cands = plan.cands
        rng = _client_rng(self.ctx, plan.round, cid, _STEP_IDS["vote"])
        if len(codes) == 0:
            return {"vote": np.zeros(len(self.cands), dtype=np.int64)}
        scores = self.local_scores(codes, plan, cands, tau)
        pick = cands[exponential_mechanism(scores, plan.eps, sensitivity, rng)]
        v = np.zeros(len(self.cands), dtype=np.int64)
        v[self.cands.index(pick)] = 1
        self.client_memory[(plan.round, cid)] = pick  # client-side state (Flower: its Context)
        return {"vote": v}

    def vote_plan(self, plan: Plan, state: S, cands: list[Clique]) -> Plan:
        """Fill a vote step's plan: the candidates and the model the clients score them against."""
        plan.cands = cands
        plan.arrays = self.broadcast_model(state)
        plan.arrays["cands"] = np.array([self.cands.index(q) for q in cands], dtype=np.int16)
        return plan

    # -- protocol (overridden) ----------------------------------------------------------------
    def upcoming_round(self, state: S) -> int | None:
        """The round the next plan belongs to (the driver draws participants once per round)."""
        nxt = self._next_step(state)
        return None if nxt is None else nxt[0]

    def _next_step(self, state: S) -> tuple[int, str] | None:
        return (state.round + 1, "answers") if state.round < self.ctx.rounds else None

    def plan(self, state: S, participants: list[int]) -> Plan | None:
        raise NotImplementedError

    @staticmethod
    def _plan_header(state: ServerState, rnd: int, step: str, participants: list[int]) -> Plan:
        """The fields every broadcast carries (round, step, current σ / ε_exp, N̂, m = #participants)."""
        return Plan(rnd, step, state.sigma, state.eps, state.total, len(participants))

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def server_step(self, state: S, plan: Plan, sums: dict[str, np.ndarray]) -> S:
        raise NotImplementedError

    def finish(self, state: S) -> pgm.PGM:
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


def _cells(cliques: list[Clique], sizes: dict[str, int]) -> int:
    """Length of the concatenated answer vector of ``cliques``."""
    return int(sum(np.prod([sizes[a] for a in q]) for q in cliques))
