"""``flaim-he`` (ours): deferred AIM whose server never sees an exact count or an exact sum.

Needs a secure sum that can keep totals encrypted (:class:`~fedsynth.secagg.he_sum.HESum`:
``accumulate`` / ``release``) — two non-colluding servers, the aggregator adding ciphertexts and a
decryptor holding the key (threat model in :mod:`fedsynth.secagg.he_sum`).

1. **Collect** (rounds 1..T, as ``flaim-da``): every sampled client that has not contributed yet
   encrypts M_q(D_k) for every q of the public pool P; the aggregator adds the ciphertexts into
   one encrypted total A over all rounds. Nothing is decrypted.
2. **Noise** (rounds T+1, …): the round's participants (m ≥ 2) each encrypt two integer Skellam
   shares per cell, Sk(f·μ_p/m) for the *preview* copy and Sk(f·μ_m/m) for the *measurement*
   copy, f = the fraction of the noise still missing (1 at first). A participant lost before
   uploading leaves a deficit (1/m of f) that the next round's participants supply; only the
   clients know their shares, and only all of them together would know the noise.
3. **AIM on releases only** (server side, T rounds again): the decryptor decrypts once
   A + N_p over every cell (the preview, Sk(μ_p) per cell), then each one-way and each marginal
   AIM selects is decrypted once from A + N_m, masked to its own cells (Sk(μ_m) per cell). AIM's
   selection scores the model against the *preview* (post-processing: no exponential mechanism),
   bias-corrected by the preview's expected noise; the model is fit on the measurements.

Privacy (record-level, add/remove, ρ-zCDP; Skellam bounds of Agarwal et al. 2021,
:func:`~fedsynth.privacy.skellam.skellam_rho_general`): which clients enter A depends only on the
public sampling and the public newcomer counts, so A = M(D_S) with every record counted once per
pool marginal. The preview releases all |P| marginals at once: L1 = |P|, L2 = √|P| sensitivity,
ρ_p = ρ_sk(μ_p; |P|, √|P|) = (1 − α)ρ. Each of the d + T measurements has unit sensitivity:
ρ_m = ρ_sk(μ_m; 1, 1) = αρ/(d + T). Every value the decryptor sees carries that noise (the
unmasked cells of a release are zeros, its check slots public counts); the aggregator sees only
ciphertexts and the released noisy values. The ledger charges each release with the noise that
actually arrived (all of it, unless the noise rounds run out: then the shortfall is charged and a
release that does not fit the budget is refused).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from fedsynth.flaim import model as pgm
from fedsynth.flaim.aim import CandidateFilter, estimate_total
from fedsynth.flaim.measure import marginal_counts, skellam_share
from fedsynth.flaim.methods.base import (
    _STEP_IDS,
    Context,
    FederatedMethod,
    Plan,
    ServerState,
    _cells,
    _client_rng,
    _newcomers,
)
from fedsynth.flaim.methods.collect import public_pool
from fedsynth.flaim.workload import Clique
from fedsynth.privacy.skellam import skellam_rho_general, skellam_variance
from fedsynth.privacy.zcdp import Budget, cdp_rho

Release = Callable[[Collection[str], np.ndarray], np.ndarray]
MAX_NOISE_ROUNDS = 5


@dataclass
class EncryptedState(ServerState):
    contributed: set[int] = field(default_factory=set)
    collected: bool = False  # at least one collection round had ≥ 2 newcomers
    noise_done: float = 0.0  # fraction of the planned noise that arrived
    noise_rounds: int = 0
    pending: float = 0.0  # fraction asked for in the current noise round


class EncryptedAIM(FederatedMethod[EncryptedState]):
    name = "flaim-he"
    state_type = EncryptedState
    #: keys whose sums stay encrypted (the exchange accumulates them; nothing is returned)
    deferred_keys = ("answers", "noise_preview", "noise_measure")

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.pool = public_pool(ctx)
        self._cells = _cells(self.pool, ctx.sizes)
        offsets = np.cumsum([0] + [int(np.prod([ctx.sizes[a] for a in q])) for q in self.pool])
        self._slots = {q: np.arange(offsets[i], offsets[i + 1]) for i, q in enumerate(self.pool)}
        self.first = list(ctx.initial) if ctx.initial else [(a,) for a in ctx.attrs]
        rho = cdp_rho(ctx.epsilon, ctx.delta)
        k = len(self.pool)
        self.rho_preview = (1 - ctx.alpha) * rho
        self.rho_measure = ctx.alpha * rho / (len(self.first) + ctx.rounds)
        self.mu_preview = skellam_variance(self.rho_preview, k, float(np.sqrt(k)))
        self.mu_measure = skellam_variance(self.rho_measure, 1.0, 1.0)
        self.release: Release | None = None

    def bind(self, release: Release) -> None:
        """The secure sum's ``release`` (aggregator masks, decryptor decrypts noisy cells)."""
        self.release = release

    def init_state(self) -> EncryptedState:
        return EncryptedState(budget=Budget(cdp_rho(self.ctx.epsilon, self.ctx.delta)))

    def _next_step(self, state: EncryptedState) -> tuple[int, str] | None:
        if state.round < self.ctx.rounds:
            return state.round + 1, "answers"
        if state.noise_done < 1 - 1e-9 and state.noise_rounds < MAX_NOISE_ROUNDS and state.collected:
            return state.round + 1, "noise"
        return None

    def plan(self, state: EncryptedState, participants: list[int]) -> Plan | None:
        nxt = self._next_step(state)
        if nxt is None:
            return None
        rnd, step = nxt
        plan = self._plan_header(state, rnd, step, participants)
        if step == "answers":
            plan.senders = _newcomers(participants, state.contributed)
        else:
            state.pending = 1.0 - state.noise_done
            plan.senders = list(participants)
            # σ of each sender's share of the still-missing noise, per cell (preview, measurement)
            plan.sigmas = [
                float(np.sqrt(state.pending * self.mu_preview / len(participants))),
                float(np.sqrt(state.pending * self.mu_measure / len(participants))),
            ]
        return plan

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]:
        assert plan.senders is not None
        if cid not in plan.senders:
            return {}
        if plan.step == "answers":
            return {
                "answers": np.concatenate(
                    [marginal_counts(codes, self.ctx.sizes, q, self.ctx.attrs) for q in self.pool]
                )
            }
        assert plan.sigmas is not None
        rng = _client_rng(self.ctx, plan.round, cid, _STEP_IDS["noise"])
        return {
            "noise_preview": skellam_share(self._cells, plan.sigmas[0] ** 2, rng),
            "noise_measure": skellam_share(self._cells, plan.sigmas[1] ** 2, rng),
        }

    def server_step(self, state: EncryptedState, plan: Plan, sums: dict[str, np.ndarray]) -> EncryptedState:
        """``sums`` holds the survivors of each deferred key (the totals stay encrypted)."""
        assert plan.senders is not None
        state.round, state.step = plan.round, plan.step
        if plan.step == "answers" and plan.senders and "answers" in sums:
            state.contributed.update(int(c) for c in sums["answers"])
            state.collected = True
        elif plan.step == "noise":
            state.noise_rounds += 1
            got = {int(c) for c in sums.get("noise_preview", [])} & {
                int(c) for c in sums.get("noise_measure", [])
            }
            state.noise_done += state.pending * len(got) / len(plan.senders)
        return state

    # -- AIM on releases -------------------------------------------------------------------------
    def _charge(self, state: EncryptedState, rho: float, what: str) -> None:
        assert state.budget is not None
        state.budget.spend(rho, what)

    def finish(self, state: EncryptedState) -> pgm.PGM:
        if self.release is None:
            raise ValueError(
                "flaim-he keeps its sums encrypted: run it with the HE secure sum (--secure-sum he)"
            )
        if not state.collected:
            raise ValueError(
                "no round had two or more new clients, so nothing was collected; raise participation"
            )
        f = state.noise_done
        if f <= 0:
            raise ValueError("no noise shares arrived: nothing can be released")
        ctx, sizes, k = self.ctx, self.ctx.sizes, len(self.pool)
        mu_p, mu_m = f * self.mu_preview, f * self.mu_measure
        rho_p = skellam_rho_general(mu_p, k, float(np.sqrt(k)))
        rho_m = skellam_rho_general(mu_m, 1.0, 1.0)
        sig_p, sig_m = float(np.sqrt(mu_p)), float(np.sqrt(mu_m))
        # 1. the preview: every pool cell once, with Sk(μ_p)
        self._charge(state, rho_p, f"preview of {k} pool marginals")
        everything = np.arange(self._cells)
        preview_vec = self.release(("answers", "noise_preview"), everything).astype(float)
        preview = {q: preview_vec[self._slots[q]] for q in self.pool}
        # 2. the initial marginals, then T rounds of select-on-preview / measure-once
        meas: list[pgm.Measurement] = []
        measured: set[Clique] = set()

        def measure(q: Clique, what: str) -> None:
            self._charge(state, rho_m, what)
            y = self.release(("answers", "noise_measure"), self._slots[q]).astype(float)  # type: ignore[misc]
            meas.append(pgm.Measurement(q, y, sig_m))
            measured.add(q)

        for q in self.first:
            measure(q, f"initial {'/'.join(q)}")
        total = estimate_total(meas)
        model = pgm.fit(sizes, meas, total, iters=ctx.round_iters)
        cands = [q for q in self.pool if q in self.weights]
        filt = CandidateFilter(sizes, cands)
        for t in range(1, ctx.rounds + 1):
            assert state.budget is not None
            limit = ctx.max_model_mb * min(1.0, t / ctx.rounds)
            feas = [q for q in filt.feasible(model, limit) if q not in measured]
            if not feas:
                break
            # the preview's L1 error minus its expected noise (√(2/π)·σ_p per cell)
            scores = [
                self.weights[q]
                * (np.abs(preview[q] - model.counts(q)).sum() - np.sqrt(2 / np.pi) * sig_p * len(preview[q]))
                for q in feas
            ]
            q = feas[int(np.argmax(scores))]
            state.selected.append(q)
            measure(q, f"measure round {t}")
            model = pgm.fit(sizes, meas, total, iters=ctx.round_iters, warm=model)
        model = pgm.fit(sizes, meas, total, iters=ctx.final_iters, warm=model)
        state.measurements, state.model, state.n_hat = meas, model, [total]
        state.sigma = sig_m
        return model
