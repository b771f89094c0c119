"""One FLAIM run end to end: data → federation → method → model → synthetic data → metrics.

Federation: the training codes are split over K clients (:func:`fedsynth.flaim.data.make_clients`);
the method runs in :func:`fedsynth.flaim.driver.drive` with Poisson participation and an
:class:`~fedsynth.flaim.driver.InProcessExchange`: every client→server vector goes through
``secure_sum`` (SecAgg+ in-process by default), and per-client bytes come from its messages plus
the broadcast plan arrays.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

import numpy as np

from fedsynth.flaim import aim
from fedsynth.flaim.data import FlaimData, make_clients
from fedsynth.flaim.driver import InProcessExchange, drive, poisson_participants
from fedsynth.flaim.methods import METHODS, Context, default_alpha, make_method
from fedsynth.flaim.metrics import gbdt_auc, nll, workload_l1
from fedsynth.flaim.model import PGM
from fedsynth.flaim.workload import Clique, downward_closure, make_workload
from fedsynth.privacy.target import check_epsilon_delta
from fedsynth.secagg.secure_sum import SecureSum, plain_sum

CENTRAL = ("aim", "aim-adaptive")
ALL_METHODS = CENTRAL + METHODS


def default_secure_sum() -> SecureSum:
    try:
        from fedsynth.secagg.secure_sum import SecAggPlusSum

        return SecAggPlusSum()
    except ImportError:  # pragma: no cover - only while the SecAgg+ implementation is absent
        return plain_sum


@dataclass
class RunResult:
    method: str
    epsilon: float
    model: PGM
    synthetic: np.ndarray
    seconds: float
    rho_used: float
    rho: float
    selected: list[Clique]
    client_bytes_sent: float = 0.0  # mean over participating clients
    client_bytes_received: float = 0.0
    participants: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def run(
    data: FlaimData,
    method: str,
    *,
    epsilon: float,
    delta: float = 1e-5,
    clients: int = 100,
    participation: float = 0.1,
    rounds: int = 10,
    split: str = "cluster",
    seed: int = 0,
    workload: str = "3way-64",
    alpha: float | None = None,
    rows: int | None = None,
    secure_sum: SecureSum | None = None,
    top: int = 1,
    select_rounds: int | None = None,
    oneway_weight: float = 2.0,
    marginals: int | None = None,
    preview_share: float = 0.3,
    vote_on: str = "workload",
    pool_cells: int = 6500,
    split_seed: int | None = None,
    max_model_mb: float = 80.0,
    evaluate: bool = True,
) -> RunResult:
    """Run one method and (optionally) evaluate it.

    ``seed`` drives the workload draw, client sampling and all mechanisms; ``split_seed`` (default:
    ``seed``) the client partition, so benchmarks can reuse one cached cluster split across seeds.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    check_epsilon_delta(epsilon, delta)
    t0 = time.perf_counter()
    if alpha is None:  # AIM's 0.9 unless the method has its own default (flaim-ta)
        alpha = default_alpha(method)
    sizes = data.domain.sizes
    wl = make_workload(data.domain.attrs, workload, target=data.domain.target, seed=seed)
    sent: dict[int, int] = {}
    recv: dict[int, int] = {}
    if method in CENTRAL:
        res = aim.run_aim(
            data.train,
            sizes,
            wl,
            epsilon=epsilon,
            delta=delta,
            alpha=alpha,
            seed=seed,
            rounds=None if method == "aim-adaptive" else rounds,
            max_model_mb=max_model_mb,
        )
        model, budget, selected = res.model, res.budget, res.selected
    else:
        parts = make_clients(data, clients, split, seed if split_seed is None else split_seed)
        client_codes = [data.train[p] for p in parts]
        ctx = Context(
            sizes,
            wl,
            epsilon,
            delta,
            rounds,
            participation,
            alpha=alpha,
            seed=seed,
            client_seed=seed,  # one-process simulation: reproducible; deployments leave it None
            server_seed=seed,
            top=top,
            select_rounds=select_rounds,
            oneway_weight=oneway_weight,
            marginals=marginals,
            preview_share=preview_share,
            vote_on=vote_on,
            pool_cells=pool_cells,
            max_model_mb=max_model_mb,
            global_codes=data.train if method == "aug-oracle" else None,
        )
        m = make_method(method, ctx)
        ssum = secure_sum or default_secure_sum()
        if hasattr(m, "bind"):  # flaim-he: releases go through the secure sum's decryptor
            release = getattr(ssum, "release", None)
            if release is None:
                raise ValueError(
                    f"{method} keeps its sums encrypted: use the HE secure sum (--secure-sum he)"
                )
            m.bind(release)
        exchange = InProcessExchange(m, client_codes, ssum)
        state = drive(m, exchange, poisson_participants(clients, participation, seed))
        model = m.finish(state)
        budget, selected = state.budget, state.selected
        sent, recv = exchange.sent, exchange.received
    assert budget is not None
    n_rows = rows if rows is not None else len(data.train)
    synth = model.synthetic(n_rows, seed)
    out = RunResult(
        method,
        epsilon,
        model,
        synth,
        0.0,
        budget.used,
        budget.rho,
        selected,
        float(np.mean(list(sent.values()))) if sent else 0.0,
        float(np.mean(list(recv.values()))) if recv else 0.0,
        len(sent),
    )
    out.seconds = time.perf_counter() - t0
    if evaluate:
        out.metrics = {
            "l1": workload_l1(data.train, synth, sizes, downward_closure(wl, data.domain.attrs)),
            "nll": nll(model, data.test),
            "auc": gbdt_auc(synth, data.test, data.target_index, seed)
            if data.domain.target
            else float("nan"),
        }
    out.metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out
