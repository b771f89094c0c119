"""Classification metrics as the SGDE paper reports them (percent).

accuracy; F1 of the positive class for binary tasks, macro-F1 for multiclass; ROC AUC (one-vs-rest,
macro, for multiclass). Probabilities are columns in the order of ``classes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

METRICS = ("accuracy", "f1", "auc")


def score(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], positive: str | None = None
) -> dict[str, float]:
    """Metrics in percent. ``proba`` has one column per entry of ``classes``."""
    y_true = np.asarray(y_true).astype(str)
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)].astype(str)
    out = {"accuracy": 100.0 * accuracy_score(y_true, pred)}
    present = np.unique(y_true)
    if len(classes) == 2:
        pos = positive if positive is not None else classes[1]
        k = classes.index(pos)
        out["f1"] = 100.0 * f1_score(y_true, pred, pos_label=pos, zero_division=0)
        out["auc"] = 100.0 * roc_auc_score(y_true == pos, proba[:, k]) if len(present) == 2 else float("nan")
    else:
        out["f1"] = 100.0 * f1_score(y_true, pred, labels=classes, average="macro", zero_division=0)
        if len(present) < 2:
            out["auc"] = float("nan")
        else:
            cols = [classes.index(c) for c in present]
            p = proba[:, cols]
            p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
            out["auc"] = 100.0 * (
                roc_auc_score(y_true == present[1], p[:, 1])
                if len(present) == 2
                else roc_auc_score(y_true, p, multi_class="ovr", labels=list(present))
            )
    return out


def mean_sd(values: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample sd of each metric over runs (NaNs ignored)."""
    out: dict[str, dict[str, float]] = {}
    for m in METRICS:
        v = np.array([d[m] for d in values if m in d], dtype=float)
        v = v[np.isfinite(v)]
        out[m] = {
            "mean": float(v.mean()) if len(v) else float("nan"),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        }
    return out


def aggregate_runs(
    runs: list[dict[str, Any]], scenarios: tuple[str, ...], evals: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and sd over seeds, each as {scenario: {evaluation: {metric: percent}}} — the
    ``scenarios`` / ``scenarios_sd`` entries of ``fedsynth bench sgde --json``. Scenarios absent
    from the runs, and evaluations a scenario lacks in any run, are left out."""
    if not runs:
        raise ValueError("no runs to aggregate")
    means: dict[str, Any] = {}
    sds: dict[str, Any] = {}
    for sc in [sc for sc in scenarios if sc in runs[0]["scenarios"]]:
        present = [e for e in evals if all(e in r["scenarios"][sc] for r in runs)]
        stats = {e: mean_sd([r["scenarios"][sc][e] for r in runs]) for e in present}
        means[sc] = {e: {m: v["mean"] for m, v in st.items()} for e, st in stats.items()}
        sds[sc] = {e: {m: v["sd"] for m, v in st.items()} for e, st in stats.items()}
    return means, sds
