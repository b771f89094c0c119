"""The one loop that runs a federated method, whatever carries the client vectors.

Per step: the method's plan is broadcast to the step's senders (the round's participants, or the
subset ``plan.senders`` names), their vectors are summed per key by an :data:`Exchange`, and the
server step consumes the sums. Participants are drawn once per round. The in-process runner
(:class:`InProcessExchange`: client steps in this process, sums through a
:class:`~fedsynth.secagg.secure_sum.SecureSum`), the Flower ServerApp (one SecAgg+ round per step,
:mod:`fedsynth.federated.flaim_methods`) and the tests only differ in their exchange.

Participation (:func:`draw_participants`): each round every client participates independently
with probability p (Poisson sampling); a round with fewer than two participants is topped up at
random to two, because a secure sum over one client would reveal its vector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from fedsynth.flaim.methods.base import Plan
from fedsynth.secagg.secure_sum import SecureSum, SumResult

S = TypeVar("S")


class SteppedMethod(Protocol[S]):
    """What :func:`drive` runs: a server state machine whose steps are answered by client vectors.

    Every FLAIM method (:class:`~fedsynth.flaim.methods.base.FederatedMethod`) is one; so are the
    federation-level generator fits (``fedsynth.generators``), which reuse this loop, the
    in-process exchange and the Flower apps unchanged."""

    name: str

    def init_state(self) -> S: ...

    def upcoming_round(self, state: S) -> int | None: ...

    def plan(self, state: S, participants: list[int]) -> Plan | None: ...

    def client_step(self, cid: int, codes: np.ndarray, plan: Plan) -> dict[str, np.ndarray]: ...

    def server_step(self, state: S, plan: Plan, sums: dict[str, np.ndarray]) -> S: ...


# (plan, senders) -> {key: sum over the senders' vectors for that key}
Exchange = Callable[[Plan, list[int]], dict[str, np.ndarray]]
# round -> the clients sampled for it (called once per round, in round order)
ParticipantsFor = Callable[[int], list[int]]


def draw_participants(rng: np.random.Generator, clients: int, participation: float) -> list[int]:
    """Poisson participation: each client independently with probability p; topped up to two at
    random, because a secure sum over a single client would reveal its vector."""
    participants = [int(k) for k in np.flatnonzero(rng.random(clients) < participation)]
    while len(participants) < min(2, clients):
        extra = int(rng.integers(clients))
        if extra not in participants:
            participants.append(extra)
    return sorted(participants)


def poisson_participants(clients: int, participation: float, seed: int) -> ParticipantsFor:
    """The participation draws of a run with ``seed`` (the same in the runner and on Flower)."""
    rng = np.random.default_rng(seed + 7)
    return lambda _round: draw_participants(rng, clients, participation)


def drive(method: SteppedMethod[S], exchange: Exchange, participants_for: ParticipantsFor) -> S:
    """Run ``method`` from its initial state until it has no more plans; returns the final state
    (the caller runs ``method.finish(state)``)."""
    state = method.init_state()
    participants: list[int] = []
    cur_round = 0
    while True:
        nxt_round = method.upcoming_round(state)
        if nxt_round is not None and nxt_round != cur_round:  # Poisson participation, once per round
            cur_round = nxt_round
            participants = participants_for(nxt_round)
        plan = method.plan(state, participants)
        if plan is None:
            return state
        # a plan may name the subset of participants that take part in this step
        senders = plan.senders if plan.senders is not None else participants
        state = method.server_step(state, plan, exchange(plan, senders))


@dataclass
class InProcessExchange:
    """Client steps computed here on each client's codes; per-key sums through ``secure_sum``.

    Traffic per client: the secure sum's messages (both directions) plus the broadcast plan arrays
    every sender receives."""

    method: SteppedMethod[Any]
    client_codes: Sequence[np.ndarray]
    secure_sum: SecureSum
    sent: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    received: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    # clients whose vector is in at least one released sum (a dropped client's is not)
    contributors: set[int] = field(default_factory=set)

    def __call__(self, plan: Plan, senders: list[int]) -> dict[str, np.ndarray]:
        bcast = sum(int(a.nbytes) for a in plan.arrays.values())
        vectors = {k: self.method.client_step(k, self.client_codes[k], plan) for k in senders}
        sums: dict[str, np.ndarray] = {}
        deferred = getattr(self.method, "deferred_keys", ())
        for key in sorted({key for v in vectors.values() for key in v}):
            if key in deferred:
                # the total stays encrypted at the aggregator; the method learns who is in it
                accumulate = getattr(self.secure_sum, "accumulate", None)
                if accumulate is None:
                    raise ValueError(f"{self.method.name} keeps its sums encrypted: use --secure-sum he")
                r: SumResult = accumulate(key, {k: v[key] for k, v in vectors.items()})
                sums[key] = np.asarray(r.survivors, dtype=np.int64)
            else:
                r = self.secure_sum({k: v[key] for k, v in vectors.items()})
                sums[key] = r.total
            self.contributors.update(r.survivors)
            for k, b in r.bytes_sent.items():
                self.sent[k] += b
            for k, b in r.bytes_received.items():
                self.received[k] += b
        for k in senders:
            self.received[k] += bcast
        return sums
