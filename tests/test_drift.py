"""A tiny end-to-end drift run (every method, a per-silo and a federation-level family), its JSON
layout, the ε semantics, dp-fedavg's ε re-derived, the pool fallback and the CLI's bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.evaluation.drift import (
    METHODS,
    DriftConfig,
    Pool,
    aggregate,
    drift_checks,
    load_task,
    run_drift_seed,
)
from fedsynth.evaluation.drift_pool import draw
from fedsynth.generators.base import get_family
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.dpsgd import epsilon_spent
from fedsynth.privacy.target import PrivacyTarget
from tests.conftest import has_data_dir

pytestmark = pytest.mark.skipif(not has_data_dir(), reason="needs the benchmark data directory")

TINY = {
    "rounds": 3,
    "alone_epochs": 2,
    "finetune_epochs": 1,
    "pooled_epochs": 2,
    "synthetic_rows": 400,
    "min_aug": 50,
    "batch_size": 16,
    "local_epochs": 2,
    "min_rows": 10,
}


@pytest.fixture(scope="module")
def titanic_run() -> tuple[object, list[dict], list[dict]]:
    task = load_task("titanic")
    cfg = DriftConfig(silos=4, generators=("pgm", "fed-pgm"), **TINY)  # type: ignore[arg-type]
    runs = [run_drift_seed(task, cfg, "label-skew", 0.5, seed) for seed in (0, 1)]
    return task, runs, aggregate(runs, "label-skew", 0.5)


def test_every_method_reports_the_issue_layout(titanic_run) -> None:
    _, _runs, results = titanic_run
    synthetic = {
        "synthetic",
        "synthetic+finetune",
        "fedavg+synthetic",
        "synthetic-regulariser",
        "personalised",
    }
    expected = {(m, None) for m in METHODS if m not in synthetic} | {
        (m, g) for m in synthetic for g in ("pgm", "fed-pgm")
    }
    assert {(e["method"], e["generator"]) for e in results} == expected
    for e in results:
        assert e["split"] == "label-skew" and e["beta"] == 0.5 and e["seeds"] == 2
        assert set(e["global"]) == {"accuracy", "f1", "auc"}
        assert 0 <= e["global"]["accuracy"] <= 100
        assert e["per_silo"]["worst_accuracy"] <= e["per_silo"]["mean_accuracy"]
        assert {"rounds_to_95", "bytes_per_silo", "fairness", "epsilon"} <= set(e)
        federated = e["method"] in {
            "fedavg",
            "fedprox",
            "fedavgm",
            "dp-fedavg",
            "fedavg+synthetic",
            "synthetic-regulariser",
        }
        assert (e["history"] is not None) == federated
        if federated:
            assert len(e["history"]["accuracy"]) == 3 and 1 <= e["rounds_to_95"] <= 3
    json.dumps(results)  # plain JSON, no numpy scalars


def test_epsilon_per_record_is_stated_per_method(titanic_run) -> None:
    _, _runs, results = titanic_run
    by = {(e["method"], e["generator"]): e for e in results}
    assert by[("local", None)]["epsilon"] == 0.0  # nothing leaves a silo
    for m in ("fedavg", "fedprox", "fedavgm", "pooled"):
        assert by[(m, None)]["epsilon"] is None and not by[(m, None)]["private"]
    for g in ("pgm", "fed-pgm"):
        assert 0.9 < by[("synthetic", g)]["epsilon"] <= 1.0 + 1e-6  # the generators' accountant
        assert by[("fedavg+synthetic", g)]["epsilon"] is None  # it also ships non-private updates
    assert by[("synthetic", "fed-pgm")]["bytes_per_silo"] > 0
    assert by[("local", None)]["bytes_per_silo"] == 0


def test_dp_fedavg_epsilon_is_rederived_from_its_recorded_parameters(titanic_run) -> None:
    _, _runs, results = titanic_run
    dp = next(e for e in results if e["method"] == "dp-fedavg")
    rederived = []
    for seed_accounts in dp["dp_accounts"]:
        for a in seed_accounts:
            assert a["steps"] > 0 and a["noise_multiplier"] > 0
            rederived.append(epsilon_spent(a["noise_multiplier"], a["sample_rate"], a["steps"], a["delta"]))
            assert rederived[-1] == pytest.approx(a["epsilon"], rel=1e-6)
    assert dp["epsilon"] == pytest.approx(max(rederived), rel=1e-6)
    assert dp["epsilon"] <= 1.0 + 0.01


def test_checks_compare_against_fedavg_and_dp_fedavg(titanic_run) -> None:
    _, _, results = titanic_run
    (row,) = drift_checks(results, "auc")
    by = {(e["method"], e["generator"]): e for e in results}
    gain = next(g for g in row["gain"] if g["method"] == "fedavg+synthetic (fed-pgm)")
    want = by[("fedavg+synthetic", "fed-pgm")]["global"]["auc"] - by[("fedavg", None)]["global"]["auc"]
    assert gain["headline_gain"] == pytest.approx(want)
    q = row["equal_epsilon"]
    assert q["dp_fedavg_value"] == pytest.approx(by[("dp-fedavg", None)]["global"]["auc"])
    assert q["winner"] == ("generators" if q["margin"] > 0 else "dp-fedavg")


def test_a_pool_without_the_silos_classes_falls_back_to_balanced_rows() -> None:
    task = load_task("titanic")
    s = task.schema
    train = task.frames(np.arange(len(task.y_train)))
    vae = get_family("vae")
    gset = vae.fit(train, s, PrivacyTarget(1.0, None), vae.default_config("titanic"), seed=0)
    only = [g for g in gset.generators if g.card.class_label == s.classes[0]]
    pool = Pool("dp-vae/1", "vae", GeneratorPool(s, only), 1.0, [0.0], 0.0, 0.0, [s.classes[1]])
    x, y, fell_back = draw(task, pool, 50, 0, mix=np.array([0.0, 1.0]))  # wants only the missing class
    assert fell_back and len(x) == 50 and set(y.tolist()) == {0}
    x, y, fell_back = draw(task, pool, 50, 0, mix=np.array([0.5, 0.5]))
    assert not fell_back and set(y.tolist()) == {0}


def test_cli_drift_writes_json_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "drift.json"
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    r = CliRunner().invoke(
        app,
        ["bench", "drift", "--dataset", "titanic", "--silos", "3", "--seeds", "1", "--betas", "1.0",
         "--generator", "fed-pgm", "--methods", "fedavg,dp-fedavg,synthetic,fedavg+synthetic",
         "--json", str(out), "--plot", str(tmp_path / "png"), *sets],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["split"] == "label-skew" and {e["method"] for e in res["results"]} == {
        "fedavg", "dp-fedavg", "synthetic", "fedavg+synthetic"
    }  # fmt: skip
    assert "at ε" in r.output  # the equal-ε line
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert "drift_label-skew_accuracy_vs_beta.png" in pngs and "drift_label-skew_b1_rounds.png" in pngs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--betas", "0"], "β must be > 0"),
        (["--betas", "-0.5"], "β must be > 0"),
        (["--split", "missing-classes"], "needs K"),
        (["--split", "label-skew:0.1", "--betas", "0.5"], "already names its parameter"),
        (["--split", "zipf"], "unknown split"),
        (["--set", "nope=1"], "unknown setting"),
        (["--set", "rounds=ten"], "must be JSON"),
        (["--set", 'distill_teacher="oracle"'], "distill_teacher must be"),
        (["--methods", "fedavg,magic"], "unknown methods"),
        (["--silos", "200", "--betas", "0.5"], "exceed"),  # titanic: 712 rows, 20 per silo
        (["--dataset", "nope"], "unknown dataset"),
    ],
)
def test_cli_drift_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["bench", "drift", "--dataset", "titanic", "--seeds", "1", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_images_missing_classes_with_the_cnn_and_dp_sgd() -> None:
    # the image path: the CNN, missing-classes split, DP-SGD through Opacus' per-sample gradients
    task = load_task("mnist", max_train_rows=600)
    assert task.spec.kind == "cnn" and task.x_train.dtype == np.uint8 and len(task.x_train) == 600
    task.x_test, task.y_test = task.x_test[:500], task.y_test[:500]  # CPU time: score on 500
    cfg = DriftConfig(
        silos=4,
        methods=("local", "fedavg", "dp-fedavg"),
        rounds=2,
        alone_epochs=1,
        min_rows=10,
        history_rows=500,
    )
    run = run_drift_seed(task, cfg, "missing-classes", 5, seed=0)
    assert run["rows_topped_up"] == 0 and sum(run["silo_rows"]) == 600
    by = {e["method"]: e for e in run["entries"]}
    assert set(by) == {"local", "fedavg", "dp-fedavg"}
    for a in by["dp-fedavg"]["dp_accounts"]:
        assert epsilon_spent(a["noise_multiplier"], a["sample_rate"], a["steps"], a["delta"]) <= 1.0 + 0.01
        assert a["steps"] > 0
    assert len(by["fedavg"]["history"]["accuracy"]) == 2
    assert len(by["local"]["per_silo"]["accuracies"]) == 4
