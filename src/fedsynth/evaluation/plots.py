"""Figures of the SGDE experiment: test-split accuracy / F1 / AUC per scenario, mean ± sd over seeds.

Reads what ``fedsynth bench sgde --json`` writes (``scenarios`` means and ``scenarios_sd``
sample sds over seeds, percent), a list of per-seed results (:func:`run_seed` outputs, each with
``scenarios``), or one such result. matplotlib is imported only when drawing (Agg, no display).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

#: Plain names of the experiment's scenarios, in the order tables and figures show them
#: (:data:`fedsynth.evaluation.sgde_experiment.SCENARIOS`); the CLI tables use the same names.
SCENARIO_LABELS: dict[str, str] = {
    "local": "Local",
    "federated": "FedAvg",
    "synthetic": "Synthetic",
    "synthetic_balanced": "Synthetic (SGDE protocol)",
    "local_plus_synthetic": "Local + Synthetic",
    "local_plus_synthetic_rows": "Local + Synthetic rows",
    "pooled_real": "Pooled real",
}
METRIC_LABELS = {"accuracy": "Accuracy", "f1": "F1", "auc": "AUC"}


def scenario_label(name: str) -> str:
    """The plain name of a scenario; an unknown one is shown as its key with spaces."""
    return SCENARIO_LABELS.get(name, name.replace("_", " "))


def ordered_scenarios(names: list[str]) -> list[str]:
    """Known scenarios in their canonical order, then any others in the order given."""
    known = [s for s in SCENARIO_LABELS if s in names]
    return known + [s for s in names if s not in SCENARIO_LABELS]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    # Same convention as evaluation.metrics.mean_sd: NaNs ignored, sample sd, 0 for one value.
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, 0.0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def sgde_summary(
    results: list[dict[str, Any]] | dict[str, Any], evaluation: str = "test_eval"
) -> tuple[list[str], dict[str, dict[str, tuple[float, float]]], int]:
    """(scenarios in display order, {scenario: {metric: (mean, sd)}}, number of seeds)."""
    if isinstance(results, dict) and "scenarios_sd" in results:
        means, sds = results["scenarios"], results["scenarios_sd"]
        seeds = int(results.get("seeds", len(results.get("per_seed", [])) or 1))
        summary = {
            sc: {
                m: (
                    float(means[sc][evaluation].get(m, math.nan)),
                    float(sds.get(sc, {}).get(evaluation, {}).get(m, 0.0)) if seeds > 1 else 0.0,
                )
                for m in METRIC_LABELS
            }
            for sc in means
        }
        return ordered_scenarios(list(means)), summary, seeds
    runs = [results] if isinstance(results, dict) else list(results)
    if not runs:
        raise ValueError("no SGDE results to plot")
    names: list[str] = []
    for r in runs:
        names += [sc for sc in r["scenarios"] if sc not in names]
    summary = {
        sc: {
            m: _mean_sd(
                [r["scenarios"][sc][evaluation].get(m, math.nan) for r in runs if sc in r["scenarios"]]
            )
            for m in METRIC_LABELS
        }
        for sc in names
    }
    return ordered_scenarios(names), summary, len(runs)


def sgde_bars(results: list[dict[str, Any]] | dict[str, Any], path: Path, title: str) -> Path:
    """Grouped bars (accuracy, F1, AUC) of every scenario on the test split; error bars = sd over
    seeds (none with one seed). Written atomically to ``path`` (PNG); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios, summary, seeds = sgde_summary(results)
    if not scenarios:
        raise ValueError("the SGDE results have no scenarios to plot")
    metrics = list(METRIC_LABELS)
    n = len(scenarios)
    width = 0.8 / n
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 + 0.45 * n * len(metrics)), 4.8))
    colors = plt.get_cmap("tab10")
    known = list(SCENARIO_LABELS)
    extra = [sc for sc in scenarios if sc not in SCENARIO_LABELS]
    for k, sc in enumerate(scenarios):
        # a scenario keeps its colour in every figure, whichever others are present
        color = colors((known.index(sc) if sc in SCENARIO_LABELS else len(known) + extra.index(sc)) % 10)
        means = [summary[sc][m][0] for m in metrics]
        sds = [summary[sc][m][1] for m in metrics]
        ax.bar(
            x - 0.4 + width * (k + 0.5),
            means,
            width,
            yerr=sds if seeds > 1 else None,
            capsize=3,
            label=scenario_label(sc),
            color=color,
            edgecolor="black",
            linewidth=0.4,
        )
    ax.set_xticks(x, [METRIC_LABELS[m] for m in metrics])
    ax.set_ylabel("test split, percent")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    sub = f"mean ± sd over {seeds} seeds" if seeds > 1 else "one seed (no error bars)"
    ax.set_title(f"{title}\n{sub}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["SCENARIO_LABELS", "ordered_scenarios", "scenario_label", "sgde_bars", "sgde_summary"]
