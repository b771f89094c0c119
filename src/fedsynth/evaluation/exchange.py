"""How the SGDE experiment moves generators between silos.

* :func:`in_process_exchange` — the pool is simply every silo's generators (benchmarks: fast).
* :class:`HubExchange` — the real protocol: a hub process on 127.0.0.1 (SQLite by default), one
  registered silo per partition; every silo subscribes, pushes its generator set over HTTP and
  pulls the pool back (hash-verified, spec-checked). Bytes pushed and pulled per silo are
  counted from the HTTP bodies. For a federation-level family, :meth:`HubExchange.federate` runs
  the round instead: the admin opens it, every silo joins (budget checked first), the fit runs on
  Flower (in-process SuperNodes, SecAgg+) and the artifact lands in the pool; every silo pulls it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsynth.data.schema import Schema
from fedsynth.generators.base import Generator, GeneratorSet


def in_process_exchange(sets: list[GeneratorSet]) -> list[Generator]:
    return [g for k, gs in enumerate(sets) for g in gs.as_loaded(f"silo-{k}")]


@dataclass
class HubExchange:
    url: str
    admin_token: str
    federation: str
    tokens: list[str]
    bytes_pushed: list[int] = field(default_factory=list)
    bytes_pulled: list[int] = field(default_factory=list)

    def __call__(self, sets: list[GeneratorSet]) -> list[Generator]:
        from fedsynth.exchange.client import HubClient

        clients = [HubClient(self.url, t) for t in self.tokens]
        try:
            for c, gs in zip(clients, sets, strict=True):
                c.subscribe()
                c.push(gs)
                self.bytes_pushed.append(c.bytes_sent)  # HTTP request bodies, as sent
            pools = []
            for c in clients:
                before = c.bytes_received
                pools.append(c.pull())
                self.bytes_pulled.append(c.bytes_received - before)  # listing + every card and weight
        finally:
            for c in clients:
                c.close()
        hashes = {tuple(sorted(g.card.weights_sha256 for g in p)) for p in pools}
        if len(hashes) != 1:
            raise RuntimeError("silos pulled different pools from the hub")
        return pools[0]

    def federate(
        self, family: Any, frames: list[Any], schema: Schema, target: Any, config: Any, seed: int
    ) -> tuple[list[Generator], dict[str, Any]]:
        """One federation round through the hub (see the module docstring); returns the pool every
        silo pulled and the round's report."""
        from fedsynth.exchange.client import HubAdmin, HubClient
        from fedsynth.rounds.coordinator import join, run_round

        names = [f"silo-{i:02d}" for i in range(len(frames))]
        with HubAdmin(self.url, self.admin_token) as admin:
            info = admin.open_round(
                self.federation, family.name, epsilon=target.epsilon, delta=target.delta,
                min_silos=2, deadline_s=3600, spec=family.spec_for(schema, config).to_dict(),
            )  # fmt: skip
            clients = [HubClient(self.url, t) for t in self.tokens]
            try:
                for c, df in zip(clients, frames, strict=True):
                    join(c, info.id, df)
                by_name = dict(zip(names, frames, strict=True))
                out = run_round(admin, self.federation, info.id, by_name, seed=seed)
                pools = []
                for c in clients:
                    before = c.bytes_received
                    pools.append(c.pull())
                    self.bytes_pulled.append(c.bytes_received - before)
            finally:
                for c in clients:
                    c.close()
        return pools[0], out.report


@contextmanager
def hub_exchange(
    schema: Schema,
    families: dict[str, dict[str, Any]],
    silos: int,
    *,
    max_epsilon: float,
    max_delta: float,
    db_url: str | None = None,
    store: str | Path | None = None,
) -> Iterator[HubExchange]:
    """Start a hub, create a federation for ``schema`` accepting ``families`` (kind -> spec) and
    register ``silos`` silos."""
    from fedsynth.exchange.client import HubAdmin
    from fedsynth.exchange.process import run_hub

    with ExitStack() as stack:
        if store is None:
            store = stack.enter_context(tempfile.TemporaryDirectory(prefix="fedsynth-hub-"))
        db = db_url or f"sqlite:///{Path(store) / 'hub.sqlite'}"
        hub = stack.enter_context(run_hub(db, store))
        admin = stack.enter_context(HubAdmin(hub.url, hub.admin_token))
        admin.create_federation(
            "demo",
            schema,
            families,
            max_epsilon=max_epsilon,
            max_delta=max_delta,
            silo_epsilon_budget=max_epsilon,
        )
        tokens = [admin.add_silo("demo", f"silo-{i:02d}") for i in range(silos)]
        yield HubExchange(hub.url, hub.admin_token, "demo", tokens)
