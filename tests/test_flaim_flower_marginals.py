"""FLAIM's client answers (marginal counts) summed through SecAgg+: in-process and as Flower apps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsynth.federated.flaim_app import (
    InProcessMarginalSum,
    LocalTable,
    answer_bound,
    census_algorithm,
    client_answer,
    make_flaim_client_app,
    make_flaim_server_app,
    prebinned_partition,
)
from fedsynth.federated.local import run_in_process
from fedsynth.flaim.measure import marginal_counts
from fedsynth.secagg.secure_sum import SecAggPlusSum, plain_sum

SIZES = {"a": 3, "b": 4, "c": 2}


def _tables(k: int, rows: int, seed: int = 0) -> dict[int, LocalTable]:
    rng = np.random.default_rng(seed)
    hi = np.array(list(SIZES.values()))
    return {p: LocalTable(rng.integers(0, hi, (rows + p, 3)), dict(SIZES)) for p in range(k)}


def test_inprocess_secure_marginals_equal_pooled_counts() -> None:
    tables = _tables(5, 200)
    pooled = np.concatenate([t.codes for t in tables.values()])
    msum = InProcessMarginalSum(tables, SecAggPlusSum(seed=0))
    cliques = [("a",), ("b", "c"), ("a", "b", "c")]
    ans = msum(cliques)
    for q in cliques:
        np.testing.assert_array_equal(ans.counts[q], marginal_counts(pooled, SIZES, q, tuple(SIZES)))
    sub = msum([("a", "b")], participants=[1, 3])
    want = marginal_counts(
        np.concatenate([tables[1].codes, tables[3].codes]), SIZES, ("a", "b"), tuple(SIZES)
    )
    np.testing.assert_array_equal(sub.counts[("a", "b")], want)
    assert sub.result.survivors == [1, 3]


def test_distributed_noise_shares_hide_exact_counts() -> None:
    tables = _tables(4, 100, seed=1)
    exact = InProcessMarginalSum(tables, plain_sum)([("a", "b")]).counts[("a", "b")]
    noisy = InProcessMarginalSum(tables, plain_sum)([("a", "b")], noise_variance=400.0).counts[("a", "b")]
    assert noisy.dtype == np.int64 and not np.array_equal(noisy, exact)
    # 4 shares of variance 400 each -> total noise sd 40; 12 cells: far below 10 sd
    assert np.abs(noisy - exact).max() < 400


def test_client_rejects_unknown_requests() -> None:
    t = _tables(1, 10)[0]
    with pytest.raises(ValueError, match="not in the client's domain"):
        client_answer(t, {"kind": "marginals", "cliques": [["zzz"]]})
    with pytest.raises(ValueError, match="unknown request kind"):
        client_answer(t, {"kind": "gradients"})
    assert answer_bound(1000, 0.0) == 1001 and answer_bound(1000, 100.0) > 1000 + 400


def test_flaim_apps_on_flower_return_exact_marginals_of_the_partitions(tmp_path: Path) -> None:
    # a pre-binned table on disk, split IID over 4 Flower ClientApps by the default loader
    rng = np.random.default_rng(3)
    codes = rng.integers(0, list(SIZES.values()), (2_000, 3))
    codes[:, 0] = np.where(rng.random(2_000) < 0.9, 0, codes[:, 0])  # a heavy cell
    csv, dom = tmp_path / "t.csv", tmp_path / "d.json"
    np.savetxt(csv, codes, fmt="%d", delimiter=",", header="a,b,c", comments="")
    dom.write_text(json.dumps(SIZES))
    out = tmp_path / "census.json"
    cfg = {"data": str(csv), "domain": str(dom), "clients": 4, "split": "iid", "seed": 5,
           "max-client-rows": 2_000, "pairs": "a,b;b,c", "out": str(out)}  # fmt: skip
    server = make_flaim_server_app(census_algorithm, lambda c: SIZES)
    run_in_process(server, make_flaim_client_app(prebinned_partition), 4, run_config=cfg)
    rep = json.loads(out.read_text())
    assert rep["survivors"] == [0, 1, 2, 3]
    for key, q in [("a", ("a",)), ("a|b", ("a", "b")), ("b|c", ("b", "c"))]:
        assert rep["counts"][key] == marginal_counts(codes, SIZES, q, tuple(SIZES)).tolist()
    assert all(v > 0 for v in rep["bytes_sent"].values())
