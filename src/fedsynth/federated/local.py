"""In-process Flower runtime for tests and the in-process runner: a Grid that calls ClientApps directly.

Each message is serialised to Flower's protobuf and parsed back on both legs, as the SuperLink would
do, so the apps see real (independent) messages and byte counts are those of the wire format. No ray,
no gRPC: a 10-client SecAgg+ round runs in well under a second. Client exceptions become error replies
(as on a SuperNode), which the SecAgg+ workflow treats as dropouts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import ServerApp
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


def _roundtrip(msg: Message) -> Message:
    return message_from_proto(message_to_proto(msg))


class LocalGrid(Grid):
    """``drop(partition_id, message) -> bool`` simulates a node that never answers that message."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_id: int = 1,
        node_config: list[dict] | None = None,
        drop: Callable[[int, Message], bool] | None = None,
        run_config: dict | None = None,
    ):
        self.client_app = client_app
        self.drop = drop
        self._run = Run.create_empty(run_id)
        ids = itertools.count(1001)
        self.contexts: dict[int, Context] = {}
        for pid in range(num_nodes):
            nid = next(ids)
            cfg: dict[str, bool | float | int | str] = {"partition-id": pid, "num-partitions": num_nodes}
            if node_config is not None:
                cfg.update(node_config[pid])
            self.contexts[nid] = Context(
                run_id=run_id,
                node_id=nid,
                node_config=cfg,
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("LocalGrid is synchronous: use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LocalGrid is synchronous: use send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            delivered = _roundtrip(msg)
            ctx = self.contexts[delivered.metadata.dst_node_id]
            if self.drop is not None and self.drop(int(ctx.node_config["partition-id"]), delivered):
                continue  # lost node: no reply at all (what a timeout looks like to the workflow)
            try:
                reply = self.client_app(delivered, ctx)
            except Exception as exc:  # a crashing client is a dropout, as on a SuperNode
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc).__name__}: {exc}"),
                    reply_to=delivered,
                )
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            replies.append(_roundtrip(reply))
        return replies


def run_in_process(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    drop: Callable[[int, Message], bool] | None = None,
    run_config: dict | None = None,
) -> LocalGrid:
    """Run a ServerApp against ``num_nodes`` in-process ClientApps; returns the grid (for inspection)."""
    grid = LocalGrid(client_app, num_nodes, drop=drop, run_config=run_config)
    # what the SuperLink's ServerApp runner sets before calling the app (messages read it)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = grid.run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    ctx = Context(
        run_id=grid.run.run_id,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )
    server_app(grid, ctx)
    return grid
