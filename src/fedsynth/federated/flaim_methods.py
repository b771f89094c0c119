"""The FLAIM core's federated methods (:mod:`fedsynth.flaim.methods`) as a Flower ServerApp / ClientApp.

The core expresses every method as ``plan(state, participants)`` → ``client_step(cid, codes, plan)``
→ per-key sums → ``server_step(state, plan, sums)``, run by :func:`fedsynth.flaim.driver.drive`.
Here the driver's exchange sends the :class:`~fedsynth.flaim.methods.base.Plan` to the step's
clients in a Flower message (scalars as JSON, arrays as a ``.npz`` blob, never pickles), each
ClientApp computes ``client_step`` on its own partition, and the per-key sums come back through one
SecAgg+ round (``FlowerSumChannel.keyed``) — exact integers, so a Flower run selects exactly what the
in-process runner (:func:`fedsynth.flaim.runner.run`) selects with the same seed (tested).

Client-side memory between steps (e.g. NaiveFLAIM's locally chosen marginal) lives in the node's
Flower ``Context.state``, since a deployed ClientApp is a fresh process per message.
``aug-oracle`` needs the pooled data on every client (a non-private reference) and is refused here.

Run config (``flwr run --run-config`` or ``run_in_process(..., run_config=...)``): ``method``,
``dataset`` (adult|marketing|census) or ``data`` (+ ``domain`` for pre-binned files), ``epsilon``,
``delta``, ``clients``, ``participation``, ``rounds``, ``split``, ``seed``, ``workload``, ``top``,
``alpha``, ``max-model-mb``, ``split-seed``, ``select-rounds``, ``max-client-rows`` (public bound on
a client's row count), ``rows``,
``evaluate`` (bool), ``out`` (JSON report path), ``secret-client-randomness`` (default true: clients
draw their mechanism randomness and noise shares, and the server its noise, from OS entropy, not
from the public seed).

Note on this one-machine setup: the ServerApp loads the data file only to obtain the public domain
and, after the run, to evaluate the synthetic data; clients read only their own partition.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsynth.federated.secure_rounds import (
    NOISE_TAIL_SIGMAS,
    FlowerSumChannel,
    SecAggSettings,
    SumRequest,
    make_client_app,
    settings_from_config,
)
from fedsynth.flaim.data import FlaimData, load_flaim_data, make_clients
from fedsynth.flaim.driver import drive, poisson_participants
from fedsynth.flaim.methods import Context as MethodContext
from fedsynth.flaim.methods import FederatedMethod, Plan, default_alpha, make_method
from fedsynth.flaim.workload import make_workload

STATE_KEY = "fedsynth.flaim"


# ----------------------------------------------------------------------------- plan transport


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {k: _jsonable(x) for k, x in v.items()}
        # non-string keys (client ids, cliques) would be stringified by JSON: keep them as pairs
        return {"__items__": [[_jsonable(k), _jsonable(x)] for k, x in v.items()]}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, set | frozenset):
        return sorted(_jsonable(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        raise TypeError("arrays belong in plan.arrays")
    return v


def _restore(v: Any) -> Any:
    """Undo ``_jsonable``: pair-encoded dicts, and lists of attribute-name lists back to cliques."""
    if isinstance(v, dict):
        if set(v) == {"__items__"}:
            return {_key(_restore(k)): _restore(x) for k, x in v["__items__"]}
        return {k: _restore(x) for k, x in v.items()}
    if isinstance(v, list):
        if v and all(isinstance(q, list) and q and all(isinstance(a, str) for a in q) for q in v):
            return [tuple(q) for q in v]
        return [_restore(x) for x in v]
    return v


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def encode_plan(plan: Plan) -> tuple[dict[str, Any], bytes]:
    meta = {k: _jsonable(v) for k, v in plan.to_wire().items()}
    buf = io.BytesIO()
    # numpy's stub types **kwds against its own `allow_pickle: bool` parameter
    np.savez(buf, **dict(plan.arrays))  # type: ignore[arg-type]
    return meta, buf.getvalue()


def decode_plan(meta: Mapping[str, Any], blob: bytes) -> Plan:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return Plan.from_wire({k: _restore(v) for k, v in meta.items()}, arrays)


# ----------------------------------------------------------------------------- shared set-up


def _load(cfg: Mapping[str, Any]) -> FlaimData:
    seed = int(cfg.get("seed", 0))
    if cfg.get("data"):
        dom = str(cfg["domain"]) if cfg.get("domain") else None
        return load_flaim_data(path=str(cfg["data"]), domain_json=dom, seed=seed)
    return load_flaim_data(str(cfg.get("dataset", "adult")), seed=seed)


def _method(cfg: Mapping[str, Any], data: FlaimData) -> FederatedMethod:
    name = str(cfg.get("method", "flaim-sa"))
    if name == "aug-oracle":
        raise ValueError("aug-oracle needs the pooled data on every client; it is not run on Flower")
    seed = int(cfg.get("seed", 0))
    wl = make_workload(
        data.domain.attrs, str(cfg.get("workload", "3way-64")), target=data.domain.target, seed=seed
    )
    ctx = MethodContext(
        data.domain.sizes,
        wl,
        float(cfg["epsilon"]),
        float(cfg.get("delta", 1e-5)),
        int(cfg.get("rounds", 10)),
        float(cfg.get("participation", 0.1)),
        alpha=float(cfg["alpha"]) if "alpha" in cfg else default_alpha(name),
        max_model_mb=float(cfg.get("max-model-mb", 80.0)),
        seed=seed,
        # fresh OS entropy per client draw unless a test asks to replay the in-process runner
        client_seed=None if bool(cfg.get("secret-client-randomness", True)) else seed,
        server_seed=None if bool(cfg.get("secret-client-randomness", True)) else seed,
        top=int(cfg.get("top", 1)),
        **_optional(cfg),
    )
    m = make_method(name, ctx)
    if getattr(m, "deferred_keys", ()):
        # its totals must stay encrypted across rounds, which the Flower channel does not do yet
        raise ValueError(f"{name} runs in-process only (fedsynth flaim run --secure-sum he)")
    return m


def _optional(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Method options that only newer cores know (passed only when set)."""
    out: dict[str, Any] = {}
    if cfg.get("select-rounds"):
        out["select_rounds"] = int(cfg["select-rounds"])
    if cfg.get("pool-cells"):
        out["pool_cells"] = int(cfg["pool-cells"])
    return out


def _split_seed(cfg: Mapping[str, Any]) -> int:
    return int(cfg.get("split-seed", cfg.get("seed", 0)))


# ----------------------------------------------------------------------------- client


_CLIENT_CACHE: dict[tuple[str, int], tuple[np.ndarray, FederatedMethod]] = {}
_DATA_CACHE: dict[str, tuple[FlaimData, list[np.ndarray]]] = {}  # in-process / simulation: load once


def _client_factory(context: Context, override: Mapping[str, Any] | None = None):
    cfg = dict(override) if override is not None else context.run_config

    def answer(pid: int, payload: Mapping[str, Any]) -> dict[str, np.ndarray]:
        cfg_key = json.dumps(dict(cfg), sort_keys=True, default=str)
        key = (cfg_key, pid)
        if key not in _CLIENT_CACHE:  # one load per process (a deployed ClientApp is one message)
            if cfg_key not in _DATA_CACHE:
                data = _load(cfg)
                k, split = int(cfg.get("clients", 2)), str(cfg.get("split", "iid"))
                _DATA_CACHE.clear()
                _DATA_CACHE[cfg_key] = (data, make_clients(data, k, split, _split_seed(cfg)))
            data, parts = _DATA_CACHE[cfg_key]
            _CLIENT_CACHE[key] = (data.train[parts[pid]], _method(cfg, data))
        codes, method = _CLIENT_CACHE[key]
        rec = context.state.config_records.get(STATE_KEY)
        memory = json.loads(str(rec["memory"])) if rec is not None and "memory" in rec else []
        method.client_memory = {(int(r), int(c)): tuple(q) for r, c, q in memory}
        plan = decode_plan(payload["plan"], payload["_blob"])
        out = method.client_step(pid, codes, plan)
        mem = [[r, c, list(q)] for (r, c), q in method.client_memory.items() if c == pid]
        context.state.config_records[STATE_KEY] = ConfigRecord({"memory": json.dumps(mem)})
        return out

    return answer


# ----------------------------------------------------------------------------- server


def run_method(
    grid: Grid,
    context: Context,
    settings: SecAggSettings | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one FLAIM method over the connected ClientApps; returns (and optionally writes) a report.

    ``run_config`` overrides ``context.run_config`` (Flower's ``run_simulation`` passes none)."""
    cfg = dict(run_config) if run_config is not None else context.run_config
    t0 = time.perf_counter()
    data = _load(cfg)
    method = _method(cfg, data)
    clients, seed = int(cfg.get("clients", 2)), int(cfg.get("seed", 0))
    participation = float(cfg.get("participation", 0.1))
    max_rows = int(cfg.get("max-client-rows", 10_000_000))
    channel = FlowerSumChannel(grid, context, settings or settings_from_config(cfg, min_nodes=clients))
    if channel.partitions != list(range(clients)):
        raise ValueError(f"expected partitions 0..{clients - 1}, connected: {channel.partitions}")

    sent: dict[int, int] = {}
    recv: dict[int, int] = {}
    secagg_rounds = 0

    def exchange(plan: Plan, senders: list[int]) -> dict[str, np.ndarray]:
        """One SecAgg+ round over the step's senders (none: nothing to sum)."""
        nonlocal secagg_rounds
        if not senders:
            return {}
        meta, blob = encode_plan(plan)
        bound = int(max_rows + math.ceil(NOISE_TAIL_SIGMAS * plan.sigma) + 1)  # counts + Skellam-share tail
        sums, res = channel.keyed(SumRequest({"plan": meta}, bound, [int(k) for k in senders], blob))
        secagg_rounds += 1
        for k, b in res.bytes_sent.items():
            sent[k] = sent.get(k, 0) + b
        for k, b in res.bytes_received.items():
            recv[k] = recv.get(k, 0) + b
        return sums

    # the same participation draws as fedsynth.flaim.runner.run
    state = drive(method, exchange, poisson_participants(clients, participation, seed))
    model = method.finish(state)
    assert state.budget is not None
    report: dict[str, Any] = {
        "method": method.name,
        "epsilon": float(cfg["epsilon"]),
        "rho_used": state.budget.used,
        "rho": state.budget.rho,
        "selected": [list(q) for q in state.selected],
        "secagg_rounds": secagg_rounds,
        "client_bytes_sent": float(np.mean(list(sent.values()))) if sent else 0.0,
        "client_bytes_received": float(np.mean(list(recv.values()))) if recv else 0.0,
        "participants": len(sent),
    }
    rows = int(cfg.get("rows", len(data.train)))
    synth = model.synthetic(rows, seed)
    if bool(cfg.get("evaluate", True)):
        from fedsynth.flaim.metrics import gbdt_auc, nll, workload_l1
        from fedsynth.flaim.workload import downward_closure

        report["l1"] = workload_l1(
            data.train, synth, data.domain.sizes, downward_closure(method.ctx.workload, data.domain.attrs)
        )
        report["nll"] = nll(model, data.test)
        report["auc"] = (
            gbdt_auc(synth, data.test, data.target_index, seed) if data.domain.target else float("nan")
        )
    report["seconds"] = time.perf_counter() - t0
    report["synthetic_sha256"] = (
        __import__("hashlib").sha256(np.ascontiguousarray(synth).tobytes()).hexdigest()
    )
    out = str(cfg.get("out", ""))
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return report


def make_apps(run_config: Mapping[str, Any] | None = None) -> tuple[ServerApp, ClientApp]:
    """(ServerApp, ClientApp) for the FLAIM methods; ``run_config`` fixes the configuration (for
    ``flwr.simulation.run_simulation``), else each side reads its Flower ``Context.run_config``."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_method(grid, context, run_config=run_config)

    return server, make_client_app(lambda ctx: _client_factory(ctx, run_config))


# Deployable components: ``fedsynth.federated.flaim_methods:server_app`` / ``:client_app``
# one assignment per name: `flwr run` finds components by scanning for `NAME = ...` lines
_apps = make_apps()
server_app = _apps[0]
client_app = _apps[1]
