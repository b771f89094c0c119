"""The same exact-sum apps on Flower's simulation engine (ray); slow because ray starts up (~15 s)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.federated.demo_app import demo_vector
from fedsynth.federated.secure_rounds import ScriptedDriver, SumRequest, make_client_app, make_server_app


def _client(context):  # type: ignore[no-untyped-def]
    return lambda pid, payload: demo_vector(7, int(payload["round"]), pid, 3000, 100_000)


@pytest.mark.slow
def test_secaggplus_on_simulation_engine_is_exact() -> None:
    from flwr.simulation import run_simulation

    driver = ScriptedDriver([SumRequest({"round": r}, bound=100_000) for r in range(2)])
    run_simulation(
        make_server_app(lambda c: driver),
        make_client_app(_client),
        num_supernodes=5,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
    )
    assert len(driver.results) == 2
    for r, res in enumerate(driver.results):
        assert res.survivors == list(range(5))
        np.testing.assert_array_equal(res.total, sum(demo_vector(7, r, p, 3000, 100_000) for p in range(5)))
