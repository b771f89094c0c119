"""Deployment path: real flower-superlink / flower-supernode processes on 127.0.0.1 (TLS + node auth)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsynth.federated.deploy import LocalDeployment, write_app


@pytest.mark.slow
def test_secure_sum_over_real_superlink_and_supernodes_with_tls_and_node_auth(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    app = write_app(
        tmp_path / "app",
        "fedsynth.federated.demo_app:server_app",
        "fedsynth.federated.demo_app:client_app",
        {"rounds": 1, "size": 2000, "bound": 1_000_000, "seed": 11, "min-nodes": 3, "out": str(out)},
        name="fedsynth-securesum-demo",
    )
    with LocalDeployment(tmp_path / "fed", num_nodes=3, tls=True, node_auth=True) as dep:
        res = dep.run_app(app, timeout=420)
        link_log = (dep.logs / "superlink.log").read_text()
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "https://127.0.0.1" in link_log  # TLS on
    assert "SuperNode authentication is disabled" not in link_log
    report = json.loads(out.read_text())
    (rnd,) = report["rounds"]
    assert rnd["exact"] is True  # server re-derived the expected sum: SecAgg+ result is exact
    assert rnd["survivors"] == [0, 1, 2]
    assert all(v > 8 * 2000 for v in rnd["bytes_sent"].values())
