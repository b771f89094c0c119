"""The SGDE experiment's PNG: grouped test-split bars with sd error bars, from the bench JSON or from
per-seed results, tolerant of missing or unknown scenarios and of a single seed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fedsynth.evaluation.plots import ordered_scenarios, sgde_bars, sgde_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def seed_result(scenarios: list[str], shift: float) -> dict[str, Any]:
    """One seed as :func:`run_seed` returns it (percent)."""
    m = {"accuracy": 70.0 + shift, "f1": 50.0 + 2 * shift, "auc": 80.0 - shift}
    return {"scenarios": {sc: {"local_eval": m, "test_eval": m} for sc in scenarios}}


def bench_doc(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The layout ``fedsynth bench sgde --json`` writes (means and sample sds over seeds)."""
    from fedsynth.evaluation.metrics import mean_sd

    means: dict[str, Any] = {}
    sds: dict[str, Any] = {}
    for sc in runs[0]["scenarios"]:
        stats = {e: mean_sd([r["scenarios"][sc][e] for r in runs]) for e in ("local_eval", "test_eval")}
        means[sc] = {e: {m: v["mean"] for m, v in st.items()} for e, st in stats.items()}
        sds[sc] = {e: {m: v["sd"] for m, v in st.items()} for e, st in stats.items()}
    return {"dataset": "toy", "seeds": len(runs), "scenarios": means, "scenarios_sd": sds, "per_seed": runs}


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000  # axes, bars and a legend, not an empty canvas
    assert not list(path.parent.glob(".*.tmp.png"))  # written atomically, nothing left behind


ALL = ["local", "federated", "synthetic", "synthetic_balanced", "local_plus_synthetic", "pooled_real"]


def test_bench_json_three_seeds(tmp_path: Path) -> None:
    doc = bench_doc([seed_result(ALL, s) for s in (0.0, 1.0, 2.0)])
    out = sgde_bars(doc, tmp_path / "sgde_toy.png", "toy — 3 silos")
    assert out == tmp_path / "sgde_toy.png"
    assert_png(out)
    names, summary, seeds = sgde_summary(doc)
    assert seeds == 3 and names == ALL
    mean, sd = summary["local"]["accuracy"]
    assert mean == pytest.approx(71.0) and sd == pytest.approx(1.0)  # sample sd of 70, 71, 72


def test_per_seed_list_agrees_with_the_bench_json() -> None:
    runs = [seed_result(ALL, s) for s in (0.0, 1.0, 3.0)]
    _, from_list, _ = sgde_summary(runs)
    _, from_doc, _ = sgde_summary(bench_doc(runs))
    for sc in ALL:
        for m in ("accuracy", "f1", "auc"):
            assert from_list[sc][m] == pytest.approx(from_doc[sc][m])


def test_missing_and_unknown_scenarios(tmp_path: Path) -> None:
    """Only some known scenarios, plus one the figure has never heard of (appended last)."""
    runs = [seed_result(["pooled_real", "my_new_idea", "local"], s) for s in (0.0, 2.0)]
    assert ordered_scenarios(list(runs[0]["scenarios"])) == ["local", "pooled_real", "my_new_idea"]
    assert_png(sgde_bars(runs, tmp_path / "partial.png", "partial"))


def test_single_seed_has_no_sd(tmp_path: Path) -> None:
    one = seed_result(["local", "federated", "synthetic"], 0.0)
    _, summary, seeds = sgde_summary(one)
    assert seeds == 1 and summary["local"]["f1"] == (50.0, 0.0)
    assert_png(sgde_bars(one, tmp_path / "one.png", "one seed"))
    doc = bench_doc([one])  # the bench JSON of a one-seed run (what `demo --json` writes)
    assert sgde_summary(doc)[1]["federated"]["auc"] == (80.0, 0.0)
    assert_png(sgde_bars(doc, tmp_path / "nested" / "one_doc.png", "one seed, bench layout"))


def test_nan_metric_is_drawn_without_crashing(tmp_path: Path) -> None:
    runs = [seed_result(["local", "synthetic"], s) for s in (0.0, 1.0)]
    runs[0]["scenarios"]["synthetic"]["test_eval"] = {"accuracy": math.nan, "f1": math.nan, "auc": 75.0}
    _, summary, _ = sgde_summary(runs)
    assert summary["synthetic"]["accuracy"] == (70.0 + 1.0, 0.0)  # NaN ignored, as mean_sd does
    assert_png(sgde_bars(runs, tmp_path / "nan.png", "nan"))


def test_nothing_to_plot_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no SGDE results"):
        sgde_bars([], tmp_path / "x.png", "empty")
    assert not (tmp_path / "x.png").exists()
