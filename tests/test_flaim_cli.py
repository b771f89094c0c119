"""``fedsynth flaim run`` / ``fedsynth bench flaim`` on a tiny table: output written, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app


@pytest.fixture()
def toy_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 400
    a = rng.integers(0, 3, n)
    df = pd.DataFrame(
        {
            "a": a,
            "b": (a + rng.integers(0, 2, n)) % 3,
            "x": rng.normal(0, 1, n),
            "y": np.where(a > 0, "yes", "no"),
        }
    )
    p = tmp_path / "toy.csv"
    df.to_csv(p, index=False)
    return p


def test_run_writes_synthetic_csv(toy_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "syn.csv"
    r = CliRunner().invoke(
        app,
        [
            "flaim",
            "run",
            "--data",
            str(toy_csv),
            "--target",
            "y",
            "--method",
            "flaim-sa",
            "--epsilon",
            "2",
            "--clients",
            "4",
            "--participation",
            "0.5",
            "--rounds",
            "2",
            "--split",
            "iid",
            "--rows",
            "50",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns) == ["a", "b", "x", "y"] and len(df) == 50
    assert set(df["y"]) <= {"yes", "no"}
    assert "sent" in r.output


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--method", "magic", "--epsilon", "1"], "unknown method"),
        (["--method", "aim", "--epsilon", "0"], "epsilon"),
        (["--method", "naive", "--epsilon", "1", "--clients", "100000", "--split", "iid"], "rows"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(
    toy_csv: Path, tmp_path: Path, args: list[str], msg: str
) -> None:
    out = tmp_path / "syn.csv"
    r = CliRunner().invoke(
        app, ["flaim", "run", "--data", str(toy_csv), "--target", "y", "--out", str(out), *args]
    )
    assert r.exit_code == 2
    assert msg in r.output
    assert not out.exists()


def test_single_valued_column_refused(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    pd.DataFrame({"c": ["k"] * 20, "y": ["a", "b"] * 10}).to_csv(p, index=False)
    out = tmp_path / "syn.csv"
    r = CliRunner().invoke(
        app,
        [
            "flaim",
            "run",
            "--data",
            str(p),
            "--target",
            "y",
            "--method",
            "aim",
            "--epsilon",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 2 and "single value" in r.output and not out.exists()


def test_bench_writes_json(toy_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bench takes dataset names; point a name at the toy table through the data loader.
    from fedsynth.flaim import data

    real = data.load_flaim_data
    monkeypatch.setattr(
        data, "load_flaim_data", lambda name, seed=0: real(None, toy_csv, target="y", seed=seed)
    )
    js = tmp_path / "r.json"
    r = CliRunner().invoke(
        app,
        [
            "bench",
            "flaim",
            "--dataset",
            "toy",
            "--methods",
            "aim",
            "--methods",
            "naive",
            "--epsilons",
            "2",
            "--seeds",
            "1",
            "--clients",
            "4",
            "--participation",
            "0.5",
            "--rounds",
            "2",
            "--split",
            "iid",
            "--secure-sum",
            "plain",
            "--json",
            str(js),
            "--plot",
            str(tmp_path / "plots"),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(js.read_text())
    assert {"dataset", "split", "clients", "participation", "rounds", "results"} <= set(doc)
    row = doc["results"][0]
    assert {
        "method",
        "epsilon",
        "l1",
        "nll",
        "auc",
        "client_bytes_sent",
        "client_bytes_received",
        "seconds",
    } <= set(row)
    assert (tmp_path / "plots" / "utility_vs_epsilon.png").stat().st_size > 0


@pytest.mark.parametrize("method", ["flaim-da", "flaim-sa"])
def test_run_through_the_he_secure_sum(toy_csv: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / "syn.csv"
    args = ["flaim", "run", "--data", str(toy_csv), "--target", "y", "--method", method, "--epsilon", "2",
            "--clients", "4", "--participation", "0.5", "--rounds", "2", "--split", "iid", "--rows", "50",
            "--secure-sum", "he", "--out", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(out)) == 50
    # BFV ciphertexts up and the public key down: far more than SecAgg+'s masked vectors
    assert "sent" in r.output and "KB" in r.output
    bad = CliRunner().invoke(app, [*args[:-4], "--secure-sum", "fhe", "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and "secagg, he or plain" in bad.output
