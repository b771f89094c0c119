"""A federation-level generator fit (``fed-pgm``, ``fed-merf``, ...) as a Flower ServerApp / ClientApp.

The fit is the family's :class:`~fedsynth.generators.base.FederationFit`: plain steps run by the
one loop :func:`fedsynth.flaim.driver.drive`. Here the driver's exchange sends each step's
:class:`~fedsynth.flaim.methods.base.Plan` to the silos in a Flower message and the per-key sums
come back through one SecAgg+ round (:class:`~fedsynth.federated.secure_rounds.FlowerSumChannel`);
the in-process runner (:func:`fedsynth.generators.federation.run_fit`) differs only in that exchange.

Run config (all public; the hub's round gives them): ``family``, ``schema-json``, ``spec-json``,
``epsilon``, ``delta``, ``silos`` (K joined), ``min-silos``, ``seed``, ``max-client-rows`` (public
bound on a silo's rows, for the secure sum's range), ``dataset`` (optional: the family preset for
local, non-spec settings), ``seeded-noise`` (tests only), ``out`` (folder: the generator set and
``report.json`` are written there for the coordinator to post to the hub).

Each silo's SuperNode is started with ``--node-config "partition-id=P data-path=FILE"``: the
ClientApp reads only that file, validates it against the public schema (wrong schema or a missing
target fails the silo's step, so the silo is dropped, never mis-counted) and answers the steps.
Dropout: a silo lost before or after key sharing is left out of the sum (Flower's SecAgg+ with our
rerun-without-early-dropouts, :mod:`.secure_rounds`); the contributors are the survivors of every
released sum and only they are charged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsynth.data.datasets import load_table
from fedsynth.federated.flaim_methods import decode_plan, encode_plan
from fedsynth.federated.round_fit import REPORT, build_fit
from fedsynth.federated.secure_rounds import (
    FlowerSumChannel,
    SumRequest,
    make_client_app,
    settings_from_config,
)
from fedsynth.flaim.driver import drive
from fedsynth.flaim.methods.base import Plan
from fedsynth.generators.base import FederationFit, GeneratorSet
from fedsynth.generators.federation import FederationReport, everyone

#: a silo's table as the ClientApp gets it: partition id → frame (simulation) or None (read data-path)
FrameSource = Callable[[int], pd.DataFrame]


# ----------------------------------------------------------------------------- client

_CACHE: dict[tuple[str, int], tuple[FederationFit, np.ndarray]] = {}


def _client_factory(context: Context, frames: FrameSource | None, override: Mapping[str, Any] | None):
    cfg = dict(override) if override is not None else dict(context.run_config)

    def answer(pid: int, payload: Mapping[str, Any]) -> dict[str, np.ndarray]:
        key = (json.dumps(cfg, sort_keys=True, default=str), pid)
        if key not in _CACHE:  # one load per process (a deployed ClientApp is one message)
            fit = build_fit(cfg)
            if frames is not None:
                df = frames(pid)
            else:
                path = context.node_config.get("data-path")
                if not path:
                    raise ValueError("the SuperNode has no data-path in its --node-config")
                df = load_table(str(path))
            _CACHE.clear()
            _CACHE[key] = (fit, fit.encode(df))
        fit, codes = _CACHE[key]
        plan = decode_plan(payload["plan"], payload["_blob"])
        return fit.method.client_step(pid, codes, plan)

    return answer


# ----------------------------------------------------------------------------- server


def run_round(grid: Grid, context: Context, run_config: Mapping[str, Any] | None = None) -> FederationReport:
    """Drive the fit over the connected silos; write the generator set + report to ``out``."""
    cfg = dict(run_config) if run_config is not None else dict(context.run_config)
    t0 = time.perf_counter()
    fit = build_fit(cfg)
    silos, min_silos = int(cfg["silos"]), max(2, int(cfg.get("min-silos", 2)))
    max_rows = int(cfg.get("max-client-rows", 10_000_000))
    settings = settings_from_config(cfg, min_nodes=min_silos)
    if fit.min_survivors is not None:  # SecAgg+ must refuse to unmask below the fit's floor
        rt = settings.reconstruction_threshold
        current = rt if isinstance(rt, int) else int(rt * silos) + 1
        settings.reconstruction_threshold = max(current, fit.min_survivors)
    channel = FlowerSumChannel(grid, context, settings)
    pids = [p for p in channel.partitions if p < silos]
    if len(pids) < min_silos:
        raise ValueError(f"{len(pids)} silos connected, the round needs {min_silos}")
    sent: dict[int, int] = {}
    recv: dict[int, int] = {}
    contributors: set[int] = set()

    def exchange(plan: Plan, senders: list[int]) -> dict[str, np.ndarray]:
        senders = [k for k in senders if k in pids]
        if not senders:
            return {}
        meta, blob = encode_plan(plan)
        req = SumRequest({"plan": meta}, fit.sum_bound(plan, max_rows), senders, blob)
        sums, res = channel.keyed(req)
        contributors.update(res.survivors)
        for k, b in res.bytes_sent.items():
            sent[k] = sent.get(k, 0) + b
        for k, b in res.bytes_received.items():
            recv[k] = recv.get(k, 0) + b
        return sums

    connected = list(pids)
    state = drive(fit.method, exchange, lambda _r: connected)
    gset: GeneratorSet = fit.finish(state, sorted(contributors))
    rep = FederationReport(
        silos, sorted(contributors), time.perf_counter() - t0, sent, recv, fit.detail(state)
    )
    out = str(cfg.get("out", ""))
    if out:
        gset.save(str(Path(out) / "generators"))
        (Path(out) / REPORT).write_text(json.dumps(rep.to_dict(), indent=1))
    return rep


def make_apps(
    run_config: Mapping[str, Any] | None = None, frames: FrameSource | None = None
) -> tuple[ServerApp, ClientApp]:
    """(ServerApp, ClientApp) of a federation round; ``frames`` serves the silos' tables in a
    one-process simulation (a deployed ClientApp reads its node's ``data-path``)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_round(grid, context, run_config)

    return server, make_client_app(lambda ctx: _client_factory(ctx, frames, run_config))


# Deployable components: ``fedsynth.federated.fed_round:server_app`` / ``:client_app``
# one assignment per name: `flwr run` finds components by scanning for `NAME = ...` lines
_apps = make_apps()
server_app = _apps[0]
client_app = _apps[1]

__all__ = ["REPORT", "build_fit", "client_app", "everyone", "make_apps", "run_round", "server_app"]
