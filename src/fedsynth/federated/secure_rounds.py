"""Flower ServerApp / ClientApp whose rounds return the exact integer sum of client vectors via SecAgg+.

The apps are thin adapters. All algorithmic state lives in two plain objects:

* server side, a :class:`SumDriver`: ``next_request()`` returns the next :class:`SumRequest` (a JSON-able
  payload for the clients, who participates, the public per-client bound) or ``None`` when done;
  ``receive(result)`` gets the :class:`~fedsynth.secagg.secure_sum.SumResult` (exact sum over the
  survivors, their ids, bytes per client counted from the serialised Flower messages);
* client side, a ``VectorFn``: ``(partition_id, payload) -> int64 vector`` computed from local data.

Each request runs one Flower ``SecAggPlusWorkflow`` (legacy API) with the settings of
:mod:`fedsynth.secagg.exact_sum`; the ClientApp carries ``secaggplus_mod``. A client that fails
after key sharing (e.g. crashes while computing its vector) is dropped and the sum over the survivors
is still exact. A client lost during setup/key sharing makes Flower 1.41 halt the round (it asks the
survivors for key shares the lost client never distributed, and they refuse): we then rerun the round
once without the lost clients (``SecAggSettings.retry_without_early_dropouts``; no share was revealed in
the halted round) or raise :class:`~fedsynth.secagg.secure_sum.SecureSumAborted`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import FitIns, GetPropertiesIns, parameters_to_ndarrays
from flwr.common.constant import MessageTypeLegacy
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import ServerApp
from flwr.serverapp.grid import Grid

from fedsynth.secagg.exact_sum import LimbPlan, decode, encode, plan_exact_sum
from fedsynth.secagg.secure_sum import SecureSumAborted, SumResult

VectorFn = Callable[[int, Mapping[str, Any]], "np.ndarray | Mapping[str, np.ndarray]"]
PARTITION_KEY = "partition-id"
#: a Skellam noise share beyond 40 σ has probability < 1e-300: the secure sum's range treats it as impossible
NOISE_TAIL_SIGMAS = 40.0
KEYS_KEY = "sum-keys"
HE_KEY = "he-public-key"


@dataclass
class SumRequest:
    payload: dict[str, Any]  # JSON-able instruction for the clients (e.g. which marginal to answer)
    bound: int  # public bound on each client's |value|
    participants: list[int] | None = None  # partition ids; None = every connected client
    blob: bytes = b""  # optional binary payload (e.g. numpy arrays); the client sees it as payload["_blob"]


class SumDriver(Protocol):
    def next_request(self) -> SumRequest | None: ...

    def receive(self, result: SumResult) -> None: ...


@dataclass
class SecAggSettings:
    num_shares: int | float = 1.0  # 1.0 = every participant shares with every other (SecAgg)
    reconstruction_threshold: int | float = 0.5
    timeout: float | None = None  # seconds per stage; None waits for every reply
    min_nodes: int = 2
    wait_nodes_s: float = 120.0
    # Flower halts a round when a client is lost during setup/key sharing; we then rerun the round
    # once without the lost clients (nothing was unmasked in the halted round: no share was revealed).
    retry_without_early_dropouts: bool = True
    # "secagg" (Flower's SecAgg+ workflow) or "he" (BFV: clients encrypt under the round's public
    # key, the ServerApp adds ciphertexts, its decryptor — in a deployment a separate service —
    # decrypts the sum: fedsynth.secagg.he_sum)
    backend: str = "secagg"


# ----------------------------------------------------------------------------- traffic counting


def settings_from_config(cfg: Mapping[str, Any], min_nodes: int = 2) -> SecAggSettings:
    """SecAgg+ settings from a Flower run config: ``min-nodes``, ``secagg-timeout`` (seconds per stage;
    unset = wait for every reply — set it in deployments so a dead node cannot stall a round),
    ``secagg-num-shares``, ``secagg-threshold`` (ints = counts, floats = fractions)."""

    def num(v: Any) -> int | float:
        return int(v) if isinstance(v, int) or (isinstance(v, str) and v.isdigit()) else float(v)

    st = SecAggSettings(min_nodes=int(cfg.get("min-nodes", min_nodes)))
    if cfg.get("secagg-timeout"):
        st.timeout = float(cfg["secagg-timeout"])
    if cfg.get("secagg-num-shares"):
        st.num_shares = num(cfg["secagg-num-shares"])
    if cfg.get("secagg-threshold"):
        st.reconstruction_threshold = num(cfg["secagg-threshold"])
    if cfg.get("secure-sum"):
        if cfg["secure-sum"] not in ("secagg", "he"):
            raise ValueError(f"secure-sum must be secagg or he, got {cfg['secure-sum']!r}")
        st.backend = str(cfg["secure-sum"])
    return st


def _stage(msg: Message) -> str:
    cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
    return str(cfg.get(Key.STAGE, "")) if cfg is not None else ""


class CountingGrid(Grid):
    """Delegating Grid that counts the serialised size of every message to/from each node."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.to_node: dict[int, int] = {}
        self.from_node: dict[int, int] = {}
        self.lost: list[tuple[int, str]] = []  # (node, SecAgg+ stage) with no reply or an error reply

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._count_out(messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._count_in(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._count_out(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._count_in(replies)
        ok = {r.metadata.src_node_id for r in replies if not r.has_error()}
        for m in messages:
            if m.metadata.dst_node_id not in ok:
                self.lost.append((m.metadata.dst_node_id, _stage(m)))
        return replies

    def _count_out(self, messages: list[Message]) -> None:
        for m in messages:
            nid = m.metadata.dst_node_id
            self.to_node[nid] = self.to_node.get(nid, 0) + message_to_proto(m).ByteSize()

    def _count_in(self, replies: list[Message]) -> None:
        for m in replies:
            nid = m.metadata.src_node_id
            self.from_node[nid] = self.from_node.get(nid, 0) + message_to_proto(m).ByteSize()


# ----------------------------------------------------------------------------- server side


class _ExactSumStrategy(Strategy):
    """Legacy strategy used for one SecAgg+ round: sends the request, decodes the exact sum."""

    def __init__(self, proxies: list[ClientProxy], config: dict[str, Any], plan: LimbPlan) -> None:
        self.proxies = proxies
        self.config = config
        self.plan = plan
        self.total: np.ndarray | None = None
        self.totals: dict[str, np.ndarray] | None = None  # when clients answer {key: vector}
        self.survivors: list[int] = []
        self.failures = 0

    def initialize_parameters(self, client_manager):
        return None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(p, FitIns(parameters, dict(self.config))) for p in self.proxies]

    def aggregate_fit(self, server_round, results, failures):
        self.failures = len(failures)
        if not results:
            return None, {}
        mean = parameters_to_ndarrays(results[0][1].parameters)
        self.survivors = sorted(int(r.metrics[PARTITION_KEY]) for _, r in results)
        keys = {str(r.metrics.get(KEYS_KEY, "")) for _, r in results}
        if len(keys) != 1:
            raise SecureSumAborted(f"clients answered with different key sets: {sorted(keys)}")
        key_list = json.loads(keys.pop() or "null")
        if key_list is None:
            self.total = decode(np.concatenate([a.reshape(-1) for a in mean]), len(results), self.plan)
        else:
            self.totals = {k: decode(a, len(results), self.plan) for k, a in zip(key_list, mean, strict=True)}
            parts = list(self.totals.values())
            self.total = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def _discover(grid: Grid, settings: SecAggSettings) -> dict[int, int]:
    """Wait for the nodes and ask each for its partition id: node_id -> partition id."""
    deadline = time.monotonic() + settings.wait_nodes_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= settings.min_nodes:
            break
        if time.monotonic() > deadline:
            raise SecureSumAborted(f"only {len(nodes)} nodes connected (need {settings.min_nodes})")
        time.sleep(0.5)
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({}))
    msgs = [Message(content, nid, MessageTypeLegacy.GET_PROPERTIES, group_id="0") for nid in nodes]
    mapping: dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=settings.timeout):
        if reply.has_error():
            continue
        props = compat.recorddict_to_getpropertiesres(reply.content).properties
        mapping[reply.metadata.src_node_id] = int(props[PARTITION_KEY])
    if len(set(mapping.values())) != len(mapping):
        raise SecureSumAborted(f"two nodes claim the same partition id: {sorted(mapping.values())}")
    return mapping


class FlowerSumChannel:
    """Server-side handle for an imperative algorithm: ``channel(request) -> SumResult`` runs one round.

    Built inside a ServerApp's ``main`` (it discovers the connected nodes and their partition ids
    once). ``channel.partitions`` lists the connected partition ids.
    """

    def __init__(self, grid: Grid, context: Context, settings: SecAggSettings | None = None) -> None:
        self.settings = settings or SecAggSettings()
        self.context = context
        self.grid = CountingGrid(grid)
        self.node_to_pid = _discover(self.grid, self.settings)
        self.pid_to_node = {p: n for n, p in self.node_to_pid.items()}
        self.manager = SimpleClientManager()
        self.proxies = {nid: GridClientProxy(nid, self.grid, grid.run.run_id) for nid in self.node_to_pid}
        for proxy in self.proxies.values():
            self.manager.register(proxy)
        self.rounds = 0
        self._keyed: dict[str, np.ndarray] = {}
        self._decryptor: Any = None

    @property
    def partitions(self) -> list[int]:
        return sorted(self.pid_to_node)

    def __call__(self, req: SumRequest) -> SumResult:
        pids = self.partitions if req.participants is None else sorted(req.participants)
        missing = [p for p in pids if p not in self.pid_to_node]
        if missing:
            raise SecureSumAborted(f"participants {missing} are not connected")
        self.rounds += 1
        if self.settings.backend == "he":
            return self._he_round(req, pids)
        return _one_round(
            self.grid,
            self.context,
            self.manager,
            self.proxies,
            self.pid_to_node,
            self.node_to_pid,
            req,
            pids,
            self.rounds,
            self.settings,
            self._keyed,
        )

    def _he_round(self, req: SumRequest, pids: list[int]) -> SumResult:
        """One HE round over Flower messages (``get_properties``, which SecAgg+'s mod leaves alone):
        the round key goes out, each client returns its encrypted vector(s), the aggregator adds
        them and the decryptor decrypts the sums; a client that fails or sends a faulty upload is
        left out (exact sum over the others), fewer than 2 accepted uploads abort the round."""
        from fedsynth.secagg.he_sum import Aggregator, Decryptor, HEError, Upload

        if self._decryptor is None:
            self._decryptor = Decryptor()
        dec = self._decryptor
        if len(pids) * req.bound > dec.params.max_abs:
            raise SecureSumAborted(
                f"{len(pids)} clients × bound {req.bound} exceed the HE plaintext range ±{dec.params.max_abs}"
            )
        key = dec.open_round()
        agg = Aggregator(dec.public_context, dec.params)
        before_to, before_from = dict(self.grid.to_node), dict(self.grid.from_node)
        config: dict[str, Any] = {
            "request": json.dumps(req.payload),
            HE_KEY: dec.public_context,
            "he-round": key.round_id,
            "he-fingerprint": key.fingerprint,
            "he-nonces": json.dumps(list(key.nonces)),
        }
        if req.blob:
            config["blob"] = req.blob
        content = compat.getpropertiesins_to_recorddict(GetPropertiesIns(config))
        msgs = [
            Message(content, self.pid_to_node[p], MessageTypeLegacy.GET_PROPERTIES, group_id=str(self.rounds))
            for p in pids
        ]
        totals: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        accepted: list[int] = []
        keys_seen: list[str] | None = None
        for reply in self.grid.send_and_receive(msgs, timeout=self.settings.timeout):
            if reply.has_error():
                continue
            pid = self.node_to_pid[reply.metadata.src_node_id]
            props = compat.recorddict_to_getpropertiesres(reply.content).properties
            keys = json.loads(str(props.get(KEYS_KEY, "[]")))
            if keys_seen is None:
                keys_seen = keys
            if keys != keys_seen:
                raise SecureSumAborted(f"clients answered with different key sets: {keys} vs {keys_seen}")
            try:
                ups = {k: Upload.from_bytes(bytes(props[f"he:{k}"]), max_bytes=64 << 20) for k in keys}  # type: ignore[arg-type]
                parsed = {k: agg.parse(pid, u, key, sizes.setdefault(k, u.size)) for k, u in ups.items()}
            except (HEError, KeyError):
                continue  # a faulty upload: this client is left out of every key's sum
            for k, cts in parsed.items():
                totals[k] = agg.add(totals.get(k), cts, key.round_id, sizes[k])
            accepted.append(pid)
        if len(accepted) < 2 or keys_seen is None:
            raise SecureSumAborted(f"HE round {self.rounds}: only {len(accepted)} uploads accepted (need 2)")
        sums = {k: dec.decrypt(totals[k]) for k in keys_seen}
        self._keyed.clear()
        self._keyed.update(sums)
        total = sums[keys_seen[0]] if keys_seen else np.zeros(0, dtype=np.int64)
        sent = {self.node_to_pid[n]: v - before_from.get(n, 0) for n, v in self.grid.from_node.items()}
        recv = {self.node_to_pid[n]: v - before_to.get(n, 0) for n, v in self.grid.to_node.items()}
        return SumResult(
            total, sorted(accepted), {p: sent.get(p, 0) for p in pids}, {p: recv.get(p, 0) for p in pids}
        )

    def keyed(self, req: SumRequest) -> tuple[dict[str, np.ndarray], SumResult]:
        """One round where every client answers ``{key: int64 vector}``: exact sums per key."""
        res = self(req)
        return dict(self._keyed), res


def run_secure_sum_rounds(
    grid: Grid, context: Context, driver: SumDriver, settings: SecAggSettings | None = None
) -> list[SumResult]:
    """Server main loop: one SecAgg+ round per driver request until the driver returns None."""
    channel = FlowerSumChannel(grid, context, settings)
    history: list[SumResult] = []
    while (req := driver.next_request()) is not None:
        res = channel(req)
        driver.receive(res)
        history.append(res)
    return history


def _one_round(
    cgrid: CountingGrid,
    context: Context,
    manager: SimpleClientManager,
    proxies: dict[int, GridClientProxy],
    pid_to_node: dict[int, int],
    node_to_pid: dict[int, int],
    req: SumRequest,
    pids: list[int],
    rnd: int,
    settings: SecAggSettings,
    last_keyed: dict[str, np.ndarray],
) -> SumResult:
    before_to, before_from = dict(cgrid.to_node), dict(cgrid.from_node)
    attempt_pids = list(pids)
    for attempt in range(2 if settings.retry_without_early_dropouts else 1):
        plan = plan_exact_sum(req.bound, max(2, len(attempt_pids)))
        config: dict[str, Any] = {"request": json.dumps(req.payload), **plan.to_config()}
        if req.blob:
            config["blob"] = req.blob
        strategy = _ExactSumStrategy([proxies[pid_to_node[p]] for p in attempt_pids], config, plan)
        lctx = LegacyContext(context, strategy=strategy, client_manager=manager)
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd})
        context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
        cgrid.lost.clear()
        workflow = SecAggPlusWorkflow(
            settings.num_shares,
            settings.reconstruction_threshold,
            timeout=settings.timeout,
            **plan.workflow_kwargs(),  # type: ignore[arg-type]
        )
        workflow(cgrid, lctx)
        if strategy.total is not None:
            break
        early = {node_to_pid[n] for n, st in cgrid.lost if st in (Stage.SETUP, Stage.SHARE_KEYS)}
        attempt_pids = [p for p in attempt_pids if p not in early]
        if attempt == 0 and early and len(attempt_pids) >= 2 and settings.retry_without_early_dropouts:
            continue
        raise SecureSumAborted(
            f"SecAgg+ round {rnd} halted (clients lost before key sharing: {sorted(early) or 'none'})"
        )
    assert strategy.total is not None
    last_keyed.clear()
    if strategy.totals is not None:
        last_keyed.update(strategy.totals)
    sent = {node_to_pid[n]: v - before_from.get(n, 0) for n, v in cgrid.from_node.items() if n in node_to_pid}
    recv = {node_to_pid[n]: v - before_to.get(n, 0) for n, v in cgrid.to_node.items() if n in node_to_pid}
    return SumResult(
        strategy.total,
        strategy.survivors,
        {p: sent.get(p, 0) for p in pids},
        {p: recv.get(p, 0) for p in pids},
    )


def make_server_app(
    driver_factory: Callable[[Context], SumDriver], settings: SecAggSettings | None = None
) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_secure_sum_rounds(grid, context, driver_factory(context), settings)

    return app


# ----------------------------------------------------------------------------- client side


class _SumClient(NumPyClient):
    def __init__(self, pid: int, vector_fn: VectorFn) -> None:
        self.pid = pid
        self.vector_fn = vector_fn

    def get_properties(self, config: dict) -> dict:
        if "he-round" not in config:  # discovery
            return {PARTITION_KEY: self.pid}
        # an HE round: encrypt every named vector under the round's public key
        from fedsynth.secagg.he_sum import HEParams, RoundKey, encrypt_vector

        payload = json.loads(cast(str, config["request"]))
        if "blob" in config:
            payload["_blob"] = config["blob"]
        x = self.vector_fn(self.pid, payload)
        named = dict(x) if isinstance(x, Mapping) else {"": x}
        nonces = json.loads(cast(str, config["he-nonces"]))
        key = RoundKey(
            cast(bytes, config[HE_KEY]),
            cast(str, config["he-fingerprint"]),
            cast(str, config["he-round"]),
            (int(nonces[0]), int(nonces[1])),
            HEParams(),
        )
        out: dict[str, Any] = {PARTITION_KEY: self.pid, KEYS_KEY: json.dumps(sorted(named))}
        for k, v in named.items():
            out[f"he:{k}"] = encrypt_vector(key, np.asarray(v, dtype=np.int64)).to_bytes()
        return out

    def fit(self, parameters: list, config: dict) -> tuple[list[np.ndarray], int, dict]:
        plan = LimbPlan.from_config(config)
        payload = json.loads(cast(str, config["request"]))
        if "blob" in config:
            payload["_blob"] = config["blob"]
        x = self.vector_fn(self.pid, payload)
        metrics: dict[str, Any] = {PARTITION_KEY: self.pid}
        if isinstance(x, Mapping):  # several named vectors: one SecAgg+ array each, same round
            keys = sorted(x)
            metrics[KEYS_KEY] = json.dumps(keys)
            arrays = [encode(x[k], plan) for k in keys]
        else:
            arrays = [encode(x, plan)]
        # num_examples == max_weight (1): the weight factor is exactly one quantum, see exact_sum
        return arrays, 1, metrics


def partition_id(context: Context) -> int:
    if PARTITION_KEY not in context.node_config:
        raise ValueError(f"node_config has no '{PARTITION_KEY}' (start the SuperNode with --node-config)")
    return int(context.node_config[PARTITION_KEY])


def make_client_app(vector_fn_factory: Callable[[Context], VectorFn]) -> ClientApp:
    def client_fn(context: Context):
        return _SumClient(partition_id(context), vector_fn_factory(context)).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


@dataclass
class ScriptedDriver:
    """A driver that sends a fixed list of requests and keeps the results (tests, benchmarks)."""

    requests: list[SumRequest]
    results: list[SumResult] = field(default_factory=list)

    def next_request(self) -> SumRequest | None:
        i = len(self.results)
        return self.requests[i] if i < len(self.requests) else None

    def receive(self, result: SumResult) -> None:
        self.results.append(result)


__all__ = [
    "CountingGrid",
    "FlowerSumChannel",
    "ScriptedDriver",
    "SecAggSettings",
    "SumDriver",
    "SumRequest",
    "VectorFn",
    "make_client_app",
    "make_server_app",
    "partition_id",
    "run_secure_sum_rounds",
    "settings_from_config",
]
