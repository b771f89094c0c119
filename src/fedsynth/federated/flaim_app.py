"""FLAIM on Flower: clients answer marginal queries on their local table; answers are summed by SecAgg+.

Everything FLAIM's server needs from clients is a sum of integer vectors: marginal counts of the
selected cliques (plus, for distributed DP, each client's integer Skellam noise share), 1-way marginals
(AugFLAIM), or row counts. The interface between a server algorithm and the federation is therefore

    MarginalSum(cliques, participants=None, noise_variance=0.0) -> MarginalAnswer

with two implementations that the same algorithm code can run on unchanged:

* :class:`InProcessMarginalSum` — the clients' tables in this process, summed by any
  :class:`~fedsynth.secagg.secure_sum.SecureSum` (``SecAggPlusSum`` for the real protocol);
* :class:`FlowerMarginalSum` — the clients are Flower ClientApps (simulation or deployment);
  one SecAgg+ round per call through :class:`~fedsynth.federated.secure_rounds.FlowerSumChannel`.

A client only ever sends ``marginal_counts`` of its own rows (int64) plus, if asked, a Skellam share
drawn from OS randomness (the server never sees an exact count then). Per-client values are bounded by
the public ``max_client_rows`` (+ a noise tail), which fixes the SecAgg+ limb plan; a client whose
answer exceeds it refuses to send (it drops out of that round) rather than wrapping.

The ServerApp runs a *server algorithm* ``algorithm(msum, context) -> None`` (a FLAIM method from the
core); :func:`census_algorithm` is a minimal one used by tests and the deployment demo.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsynth.federated.secure_rounds import (
    NOISE_TAIL_SIGMAS,
    FlowerSumChannel,
    SecAggSettings,
    SumRequest,
    make_client_app,
    settings_from_config,
)
from fedsynth.flaim.measure import marginal_counts, skellam_share
from fedsynth.secagg.secure_sum import SecureSum, SumResult

Clique = tuple[str, ...]


@dataclass
class LocalTable:
    codes: np.ndarray  # (n, d) int codes, columns in ``attrs`` order
    sizes: dict[str, int]

    @property
    def attrs(self) -> tuple[str, ...]:
        return tuple(self.sizes)


@dataclass
class MarginalAnswer:
    counts: dict[Clique, np.ndarray]  # int64 per clique (flattened, row-major over the clique)
    result: SumResult  # survivors, bytes per client


class MarginalSum(Protocol):
    def __call__(
        self,
        cliques: Sequence[Clique],
        participants: Sequence[int] | None = None,
        noise_variance: float = 0.0,
    ) -> MarginalAnswer: ...


def client_answer(table: LocalTable, payload: Mapping[str, Any]) -> np.ndarray:
    """Client side: concatenated int64 marginals of the requested cliques (+ optional Skellam share)."""
    if payload.get("kind") != "marginals":
        raise ValueError(f"unknown request kind {payload.get('kind')!r}")
    cliques = [tuple(q) for q in payload["cliques"]]
    unknown = sorted({a for q in cliques for a in q} - set(table.sizes))
    if unknown:
        raise ValueError(f"request names attributes {unknown} not in the client's domain")
    parts = [marginal_counts(table.codes, table.sizes, q, table.attrs) for q in cliques]
    x = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    var = float(payload.get("noise_variance", 0.0))
    if var > 0:
        # fresh OS entropy: the share must be unpredictable to the server
        x = x + skellam_share(x.shape, var, np.random.default_rng())
    return x


def _split(
    total: np.ndarray, cliques: Sequence[Clique], sizes: Mapping[str, int]
) -> dict[Clique, np.ndarray]:
    out, i = {}, 0
    for q in cliques:
        n = int(np.prod([sizes[a] for a in q], dtype=np.int64))
        out[tuple(q)] = total[i : i + n]
        i += n
    if i != len(total):
        raise ValueError(f"sum has {len(total)} entries, cliques need {i}")
    return out


def answer_bound(max_client_rows: int, noise_variance: float) -> int:
    """Public bound on one client's entry: its row count plus a (never reached) noise tail."""
    return int(max_client_rows + math.ceil(NOISE_TAIL_SIGMAS * math.sqrt(max(noise_variance, 0.0))) + 1)


class InProcessMarginalSum:
    """All client tables in this process; each call sums their answers with ``secure_sum``."""

    def __init__(self, tables: Mapping[int, LocalTable], secure_sum: SecureSum) -> None:
        if not tables:
            raise ValueError("no client tables")
        self.tables = dict(tables)
        self.secure_sum = secure_sum
        self.sizes = next(iter(self.tables.values())).sizes

    def __call__(
        self,
        cliques: Sequence[Clique],
        participants: Sequence[int] | None = None,
        noise_variance: float = 0.0,
    ) -> MarginalAnswer:
        pids = sorted(self.tables) if participants is None else sorted(participants)
        payload = {
            "kind": "marginals",
            "cliques": [list(q) for q in cliques],
            "noise_variance": noise_variance,
        }
        res = self.secure_sum({p: client_answer(self.tables[p], payload) for p in pids})
        return MarginalAnswer(_split(res.total, cliques, self.sizes), res)


class FlowerMarginalSum:
    """Clients are Flower ClientApps; one SecAgg+ round per call (inside a ServerApp's main)."""

    def __init__(self, channel: FlowerSumChannel, sizes: Mapping[str, int], max_client_rows: int) -> None:
        self.channel = channel
        self.sizes = dict(sizes)
        self.max_client_rows = int(max_client_rows)

    def __call__(
        self,
        cliques: Sequence[Clique],
        participants: Sequence[int] | None = None,
        noise_variance: float = 0.0,
    ) -> MarginalAnswer:
        payload = {
            "kind": "marginals",
            "cliques": [list(q) for q in cliques],
            "noise_variance": noise_variance,
        }
        bound = answer_bound(self.max_client_rows, noise_variance)
        res = self.channel(SumRequest(payload, bound, None if participants is None else list(participants)))
        return MarginalAnswer(_split(res.total, cliques, self.sizes), res)


# ----------------------------------------------------------------------------- apps

TableFactory = Callable[[Context], LocalTable]
ServerAlgorithm = Callable[[MarginalSum, Context], None]


def prebinned_partition(context: Context) -> LocalTable:
    """Default client data: partition ``partition-id`` of a pre-binned table (run config keys
    ``data``, ``domain``, ``clients``, ``split`` = iid|label-skew:β, ``seed``)."""
    from fedsynth.data.partition import dirichlet_label_skew, iid, parse_split
    from fedsynth.flaim.domain import load_prebinned

    cfg = context.run_config
    codes, dom = load_prebinned(str(cfg["data"]), str(cfg["domain"]))
    k, seed = int(cfg.get("clients", 2)), int(cfg.get("seed", 0))
    kind, beta = parse_split(str(cfg.get("split", "iid")))
    if kind == "iid":
        parts = iid(len(codes), k, seed)
    elif kind == "label-skew":
        assert beta is not None and dom.target is not None
        parts = dirichlet_label_skew(codes[:, dom.attrs.index(dom.target)], k, beta, seed)
    else:
        raise ValueError(f"split {kind!r} is not supported by the Flower client loader")
    pid = int(context.node_config["partition-id"])
    return LocalTable(codes[parts[pid]], dom.sizes)


def make_flaim_client_app(table_factory: TableFactory = prebinned_partition):
    cache: dict[int, LocalTable] = {}

    def vector_fn_factory(context: Context):
        def f(pid: int, payload: Mapping[str, Any]) -> np.ndarray:
            if pid not in cache:  # load once per process (deployment runs one process per message)
                cache[pid] = table_factory(context)
            return client_answer(cache[pid], payload)

        return f

    return make_client_app(vector_fn_factory)


def make_flaim_server_app(
    algorithm: ServerAlgorithm,
    sizes_factory: Callable[[Context], Mapping[str, int]],
    settings: SecAggSettings | None = None,
) -> ServerApp:
    """ServerApp running ``algorithm`` against a :class:`FlowerMarginalSum` over the connected nodes.

    ``sizes_factory`` gives the public domain (attribute -> size); run config ``max-client-rows`` is
    the public bound on any client's row count.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = context.run_config
        st = settings or settings_from_config(cfg)
        channel = FlowerSumChannel(grid, context, st)
        msum = FlowerMarginalSum(channel, sizes_factory(context), int(cfg.get("max-client-rows", 1_000_000)))
        algorithm(msum, context)

    return app


def census_algorithm(msum: MarginalSum, context: Context) -> None:
    """Minimal server algorithm: securely sum every 1-way marginal (and the 2-way ``pairs`` from the run
    config, "a,b;c,d"), optionally with distributed noise; write them as JSON to run config ``out``."""
    cfg = context.run_config
    sizes = dict(getattr(msum, "sizes", {}))
    cliques: list[Clique] = [(a,) for a in sizes]
    pairs = str(cfg.get("pairs", ""))
    cliques += [tuple(p.split(",")) for p in pairs.split(";") if p]
    ans = msum(cliques, noise_variance=float(cfg.get("noise-variance", 0.0)))
    out = str(cfg.get("out", ""))
    if out:
        Path(out).write_text(
            json.dumps(
                {
                    "counts": {"|".join(q): v.tolist() for q, v in ans.counts.items()},
                    "survivors": ans.result.survivors,
                    "bytes_sent": {str(k): v for k, v in ans.result.bytes_sent.items()},
                    "bytes_received": {str(k): v for k, v in ans.result.bytes_received.items()},
                }
            )
        )


def _prebinned_sizes(context: Context) -> Mapping[str, int]:
    return json.loads(Path(str(context.run_config["domain"])).read_text())


# Deployable components (``fedsynth.federated.flaim_app:server_app`` / ``:client_app``)
server_app = make_flaim_server_app(census_algorithm, _prebinned_sizes)
client_app = make_flaim_client_app()
