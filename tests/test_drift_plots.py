"""Figures of ``fedsynth bench drift``: every expected PNG is written from a fake result document
with two splits, several betas and methods (round histories, generators, NaN AUC, no-round
references), and bad input raises a clear ValueError."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fedsynth.evaluation.drift_plots import (
    curve_label,
    drift_plots,
    metric_vs_beta,
    metric_vs_round,
    worst_silo_vs_beta,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROUNDS = 5


def entry(
    method: str, split: str, beta: float, *, generator: str | None = None, auc: float = 80.0
) -> dict[str, Any]:
    """One result entry as the drift benchmark writes it (percent, mean / sd over seeds)."""
    rounds = method.startswith("fed") or method == "dp-fedavg"
    acc = 60.0 + 10.0 * math.log10(1.0 + beta)
    return {
        "method": method,
        "generator": generator,
        "split": split,
        "beta": beta,
        "epsilon": 1.0 if generator else None,
        "seeds": 3,
        "global": {"accuracy": acc, "f1": acc - 10.0, "auc": auc},
        "global_sd": {"accuracy": 1.0, "f1": 1.5, "auc": 0.5},
        "per_silo": {"mean_accuracy": acc - 2.0, "worst_accuracy": acc - 8.0},
        "rounds_to_95": 3.0 if rounds else None,
        "bytes_per_silo": 1e5,
        "fairness": None,
        "history": (
            {"accuracy": [acc - 5.0 + r for r in range(ROUNDS)], "auc": [auc] * ROUNDS} if rounds else None
        ),
    }


def fake_results() -> dict[str, Any]:
    results = []
    for split, betas in (("label-skew", (0.1, 1.0, 10.0)), ("missing-classes", (0.0, 1.0))):
        for b in betas:
            results += [
                entry("fedavg", split, b),
                entry("fedprox", split, b),
                entry("fedavg+synthetic", split, b, generator="vae"),
                entry("synthetic", split, b, generator="fed-pgm"),
                entry("local", split, b, auc=math.nan),  # AUC not computed for this reference
            ]
    return {"dataset": "adult", "results": results}


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000  # axes, lines and a legend, not an empty canvas
    assert not list(path.parent.glob(".*.tmp.png"))  # written atomically, nothing left behind


def test_drift_plots_writes_every_figure(tmp_path: Path) -> None:
    out_dir = tmp_path / "figs"  # created by drift_plots
    paths = drift_plots(fake_results(), out_dir, "adult")
    expected = {
        "adult_label-skew_accuracy_vs_beta.png",
        "adult_label-skew_auc_vs_beta.png",
        "adult_label-skew_worst_silo.png",
        "adult_label-skew_b0.1_rounds.png",
        "adult_label-skew_b1_rounds.png",
        "adult_label-skew_b10_rounds.png",
        "adult_missing-classes_accuracy_vs_beta.png",
        "adult_missing-classes_auc_vs_beta.png",
        "adult_missing-classes_worst_silo.png",
        "adult_missing-classes_b0_rounds.png",
        "adult_missing-classes_b1_rounds.png",
    }
    assert {p.name for p in paths} == expected and len(paths) == len(expected)
    for p in paths:
        assert p.parent == out_dir
        assert_png(p)


def test_auc_figure_skipped_when_no_auc_is_finite(tmp_path: Path) -> None:
    res = fake_results()
    for e in res["results"]:
        e["global"]["auc"] = math.nan
        if e["history"]:
            e["history"]["auc"] = [math.nan] * ROUNDS
    names = {p.name for p in drift_plots(res, tmp_path, "x")}
    assert not any("auc" in n for n in names)
    assert "x_label-skew_accuracy_vs_beta.png" in names


def test_single_figures_and_nan_values(tmp_path: Path) -> None:
    res = fake_results()
    res["results"][0]["global"]["accuracy"] = math.nan  # one point of one curve dropped
    res["results"][0]["history"]["accuracy"][2] = math.nan  # one round dropped
    out = metric_vs_beta(res, tmp_path / "acc.png", split="label-skew", title="custom")
    assert out == tmp_path / "acc.png"
    assert_png(out)
    assert_png(worst_silo_vs_beta(res, tmp_path / "worst.png", split="missing-classes"))
    assert_png(metric_vs_round(res, tmp_path / "r.png", split="label-skew", beta=0.1, metric="auc"))


def test_curve_label() -> None:
    assert curve_label({"method": "fedavg", "generator": None}) == "fedavg"
    assert curve_label({"method": "fedavg+synthetic", "generator": "vae"}) == "fedavg+synthetic (vae)"


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    res = fake_results()
    with pytest.raises(ValueError, match=r"no drift results for split 'quantity-skew'.*label-skew"):
        metric_vs_beta(res, tmp_path / "a.png", split="quantity-skew")
    with pytest.raises(ValueError, match="no drift results for split 'quantity-skew'"):
        worst_silo_vs_beta(res, tmp_path / "b.png", split="quantity-skew")
    with pytest.raises(ValueError, match=r"beta=0\.5"):
        metric_vs_round(res, tmp_path / "c.png", split="label-skew", beta=0.5)
    with pytest.raises(ValueError, match="empty"):
        drift_plots({"dataset": "adult", "results": []}, tmp_path, "x")
    assert not list(tmp_path.glob("*.png"))
