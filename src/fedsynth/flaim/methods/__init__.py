"""Federated AIM variants as plain client / server steps (no transport); the registry.

The protocol (:class:`~fedsynth.flaim.methods.base.Plan`, ``client_step``, ``server_step``) is in
:mod:`.base`; :func:`fedsynth.flaim.driver.drive` runs it::

    method = make_method("flaim-sa", ctx)          # ctx: domain sizes, workload, budget, seed
    state = drive(method, exchange, participants_for)   # exchange: how one step's vectors are summed
    model = method.finish(state)

Methods (ρ from (ε, δ); T rounds; d attributes; σ, ε_exp from the fixed-T calibration
:func:`~fedsynth.privacy.zcdp.fixed_t_calibration`), each with its privacy argument in its module:

* :mod:`.voting` — ``naive`` (NaiveFLAIM), ``aug-oracle``, ``aug-private`` (AugFLAIM);
* :mod:`.accumulate` — ``flaim-sa`` (ours: votes as in naive, the most-voted marginals measured from
  *every* sampled client once, each adding an integer Skellam share of the noise, so the server
  never sees an exact count; N̂ estimated, N is not public) and ``flaim-ta`` (ours, trusted
  aggregator: exact running sums released once);
* :mod:`.collect` — ``distaim`` (DistAIM) and ``flaim-da`` (ours: collect, then central AIM once).
* :mod:`.encrypted` — ``flaim-he`` (ours: collect under HE, noise from the clients, AIM on noisy
  releases only; the server never sees an exact sum).
"""

from __future__ import annotations

from typing import Any

from fedsynth.flaim.methods.accumulate import AccumulateState, FlaimSA, FlaimTA
from fedsynth.flaim.methods.base import METHODS, Context, FederatedMethod, Plan, ServerState
from fedsynth.flaim.methods.collect import CollectState, DeferredAIM, DistAIM
from fedsynth.flaim.methods.encrypted import EncryptedAIM, EncryptedState
from fedsynth.flaim.methods.voting import AugOracle, AugPrivate, Naive, VotingMethod, VotingState

METHOD_CLASSES: dict[str, type[FederatedMethod[Any]]] = {
    "distaim": DistAIM,
    "naive": Naive,
    "aug-oracle": AugOracle,
    "aug-private": AugPrivate,
    "flaim-sa": FlaimSA,
    "flaim-ta": FlaimTA,
    "flaim-da": DeferredAIM,
    "flaim-he": EncryptedAIM,
}


def default_alpha(name: str) -> float:
    """The measurement share α a method uses when the caller leaves it unset."""
    return METHOD_CLASSES[name].default_alpha if name in METHOD_CLASSES else FederatedMethod.default_alpha


def make_method(name: str, ctx: Context) -> FederatedMethod[Any]:
    table = METHOD_CLASSES
    if name not in table:
        raise ValueError(f"unknown federated method {name!r}; choose one of {sorted(table)}")
    return table[name](ctx)


__all__ = [
    "METHODS",
    "METHOD_CLASSES",
    "AccumulateState",
    "AugOracle",
    "AugPrivate",
    "CollectState",
    "Context",
    "DeferredAIM",
    "DistAIM",
    "EncryptedAIM",
    "EncryptedState",
    "FederatedMethod",
    "FlaimSA",
    "FlaimTA",
    "Naive",
    "Plan",
    "ServerState",
    "VotingMethod",
    "VotingState",
    "default_alpha",
    "make_method",
]
