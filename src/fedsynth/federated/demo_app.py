"""A self-checking secure-sum Flower App for deployment smoke tests and benchmarks.

Every client answers each round with a pseudo-random int64 vector derived from (seed, round, partition
id); the server, which for this demo alone can regenerate those vectors, checks that SecAgg+ returned
the exact sum over the survivors and writes a JSON report (``run_config["out"]``). The FLAIM apps in
:mod:`fedsynth.federated.flaim_app` use the same round machinery with real local data.

Run config keys (``flwr run --run-config``): ``rounds`` (int), ``size`` (vector length), ``bound``
(public per-client |x| bound), ``seed``, ``min-nodes``, ``out`` (JSON path, empty = none).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsynth.federated.secure_rounds import (
    SumRequest,
    make_client_app,
    run_secure_sum_rounds,
    settings_from_config,
)
from fedsynth.secagg.secure_sum import SumResult


def demo_vector(seed: int, rnd: int, pid: int, size: int, bound: int) -> np.ndarray:
    rng = np.random.default_rng([seed, rnd, pid])
    return rng.integers(-bound, bound, size, endpoint=True, dtype=np.int64)


class DemoDriver:
    def __init__(self, rounds: int, size: int, bound: int, seed: int) -> None:
        self.rounds, self.size, self.bound, self.seed = rounds, size, bound, seed
        self.reports: list[dict[str, Any]] = []
        self._t = time.perf_counter()

    def next_request(self) -> SumRequest | None:
        r = len(self.reports)
        if r >= self.rounds:
            return None
        self._t = time.perf_counter()
        return SumRequest({"round": r, "size": self.size, "seed": self.seed}, bound=self.bound)

    def receive(self, result: SumResult) -> None:
        r = len(self.reports)
        expected = sum(demo_vector(self.seed, r, p, self.size, self.bound) for p in result.survivors)
        self.reports.append(
            {
                "round": r,
                "exact": bool(np.array_equal(result.total, expected)),
                "survivors": result.survivors,
                "bytes_sent": {str(k): v for k, v in result.bytes_sent.items()},
                "bytes_received": {str(k): v for k, v in result.bytes_received.items()},
                "seconds": time.perf_counter() - self._t,
            }
        )


def _demo_client(context: Context):
    def f(pid: int, payload: Mapping[str, Any]) -> np.ndarray:
        bound = int(context.run_config.get("bound", 1_000_000))
        return demo_vector(int(payload["seed"]), int(payload["round"]), pid, int(payload["size"]), bound)

    return f


server_app = ServerApp()
client_app = make_client_app(_demo_client)


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    driver = DemoDriver(
        int(cfg.get("rounds", 2)),
        int(cfg.get("size", 1000)),
        int(cfg.get("bound", 1_000_000)),
        int(cfg.get("seed", 0)),
    )
    settings = settings_from_config(cfg)
    run_secure_sum_rounds(grid, context, driver, settings)
    out = str(cfg.get("out", ""))
    if out:
        Path(out).write_text(json.dumps({"rounds": driver.reports}, indent=1))
