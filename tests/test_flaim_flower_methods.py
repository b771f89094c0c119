"""The FLAIM core's federated methods run as Flower apps (SecAgg+ sums) reproduce the in-process runner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fedsynth.federated import flaim_methods as fm
from fedsynth.federated.local import run_in_process
from fedsynth.flaim.data import load_flaim_data
from fedsynth.flaim.methods import Plan
from fedsynth.flaim.runner import run
from fedsynth.secagg.secure_sum import plain_sum

SIZES = {"a": 4, "b": 3, "c": 5, "d": 2}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("flaim")
    rng = np.random.default_rng(0)
    codes = rng.integers(0, list(SIZES.values()), (3000, 4))
    codes[:, 3] = (codes[:, 0] + codes[:, 1] > 3).astype(int)
    np.savetxt(tmp / "t.csv", codes, fmt="%d", delimiter=",", header="a,b,c,d", comments="")
    (tmp / "d.json").write_text(json.dumps(SIZES))
    return tmp / "t.csv", tmp / "d.json"


def _cfg(method: str, csv: Path, dom: Path, out: Path) -> dict:
    return {"method": method, "data": str(csv), "domain": str(dom), "epsilon": 1.0, "clients": 5,
            "participation": 0.6, "rounds": 3, "split": "iid", "seed": 3, "workload": "all-2way",
            "out": str(out), "evaluate": False, "max-client-rows": 3000,
            "secret-client-randomness": False}  # fmt: skip


@pytest.mark.parametrize("method", ["flaim-sa", "flaim-ta", "flaim-da", "naive", "distaim"])
def test_flower_run_equals_inprocess_runner(method: str, table: tuple[Path, Path], tmp_path: Path) -> None:
    csv, dom = table
    out = tmp_path / "report.json"
    run_in_process(fm.server_app, fm.client_app, 5, run_config=_cfg(method, csv, dom, out))
    rep = json.loads(out.read_text())
    data = load_flaim_data(path=str(csv), domain_json=str(dom), seed=3)
    ref = run(data, method, epsilon=1.0, clients=5, participation=0.6, rounds=3, split="iid", seed=3,
              workload="all-2way", secure_sum=plain_sum, evaluate=False)  # fmt: skip
    # exact secure sums + the same seeds: the same marginals selected, the same synthetic data
    assert rep["selected"] == [list(q) for q in ref.selected]
    assert (
        rep["synthetic_sha256"] == hashlib.sha256(np.ascontiguousarray(ref.synthetic).tobytes()).hexdigest()
    )
    assert rep["rho_used"] <= rep["rho"] * (1 + 1e-9)
    assert rep["client_bytes_sent"] > ref.client_bytes_sent  # SecAgg+ keys/shares on top of the payload


def test_secret_client_randomness_still_runs_within_budget(table: tuple[Path, Path], tmp_path: Path) -> None:
    csv, dom = table
    out = tmp_path / "report.json"
    cfg = {**_cfg("flaim-sa", csv, dom, out), "secret-client-randomness": True}
    run_in_process(fm.server_app, fm.client_app, 5, run_config=cfg)
    rep = json.loads(out.read_text())
    assert len(rep["selected"]) >= 1 and rep["rho_used"] <= rep["rho"] * (1 + 1e-9)


def test_plan_transport_roundtrip_and_oracle_refused(table: tuple[Path, Path], tmp_path: Path) -> None:
    arrays = {"cands": np.array([0, 4], dtype=np.int16), "p1": np.ones(3, dtype=np.float32)}
    plan = Plan(
        2, "vote", 1.5, 0.1, 100.0, 3, arrays, cands=[("a",), ("a", "b")], new={1: [("a", "b")], 3: []}
    )
    meta, blob = fm.encode_plan(plan)
    assert "cliques" not in meta and "senders" not in meta  # unset fields do not travel
    back = fm.decode_plan(json.loads(json.dumps(meta)), blob)
    assert back.cands == [("a",), ("a", "b")] and back.new == {1: [("a", "b")], 3: []} and back.sigma == 1.5
    assert back.arrays["cands"].dtype == np.int16 and back.arrays["cands"].tolist() == [0, 4]
    # DistAIM's uploaders travel as "new" (a list of client ids) and come back as uploaders
    dist = Plan(1, "answers", 1.0, 0.1, 1.0, 2, uploaders=[0, 2])
    meta, blob = fm.encode_plan(dist)
    assert meta["new"] == [0, 2]
    assert fm.decode_plan(json.loads(json.dumps(meta)), blob) == dist
    csv, dom = table
    with pytest.raises(ValueError, match="aug-oracle"):
        run_in_process(
            fm.server_app, fm.client_app, 5, run_config=_cfg("aug-oracle", csv, dom, tmp_path / "o.json")
        )


def test_flower_run_over_the_he_secure_sum_equals_the_runner(
    table: tuple[Path, Path], tmp_path: Path
) -> None:
    csv, dom = table
    out = tmp_path / "report.json"
    run_in_process(
        fm.server_app, fm.client_app, 5, run_config={**_cfg("flaim-da", csv, dom, out), "secure-sum": "he"}
    )
    rep = json.loads(out.read_text())
    data = load_flaim_data(path=str(csv), domain_json=str(dom), seed=3)
    ref = run(data, "flaim-da", epsilon=1.0, clients=5, participation=0.6, rounds=3, split="iid", seed=3,
              workload="all-2way", secure_sum=plain_sum, evaluate=False)  # fmt: skip
    # exact HE sums: the very same selections and synthetic data as the plain sum
    assert rep["selected"] == [list(q) for q in ref.selected]
    assert (
        rep["synthetic_sha256"] == hashlib.sha256(np.ascontiguousarray(ref.synthetic).tobytes()).hexdigest()
    )
    assert rep["client_bytes_sent"] > 50_000  # BFV ciphertexts (≈ 81 KB each), not a few KB of masks
