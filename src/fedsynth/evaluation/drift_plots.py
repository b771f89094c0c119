"""Figures of ``fedsynth bench drift``: how methods degrade as the silos' data drift apart.

Reads the benchmark's JSON, ``{"dataset": ..., "results": [entry, ...]}``, one entry per (method,
generator, split, β, ε) with test metrics in percent (mean and sd over seeds), per-silo accuracies
and, for round-based methods, the per-round history of the global metric. The split's parameter β
is the Dirichlet concentration for ``label-skew`` / ``quantity-skew`` (small β = strong skew, hence
a log axis) and the number K of classes each silo lacks for ``missing-classes`` (a linear axis).

A curve is one label, ``method`` or ``method (generator)``; its colour is fixed by its first
appearance in the results, so it is the same in every figure of one run. NaN values are skipped.
matplotlib is imported only when drawing (Agg, no display).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

METRIC_LABELS = {"accuracy": "Accuracy", "f1": "F1", "auc": "AUC"}


def curve_label(entry: dict[str, Any]) -> str:
    """``method``, or ``method (generator)`` for a synthetic-based method."""
    gen = entry.get("generator")
    return f"{entry['method']} ({gen})" if gen else str(entry["method"])


def _num(value: Any) -> float:
    # JSON may carry None (or be missing) where a metric was not computed: treat as NaN
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _entries(res: dict[str, Any], split: str, beta: float | None = None) -> list[dict[str, Any]]:
    out = [e for e in res.get("results", []) if e.get("split") == split]
    if beta is not None:
        out = [e for e in out if math.isclose(_num(e.get("beta")), beta, rel_tol=1e-9)]
    if not out:
        at = f" at beta={beta:g}" if beta is not None else ""
        splits = sorted({str(e.get("split")) for e in res.get("results", [])})
        raise ValueError(f"no drift results for split {split!r}{at}; splits present: {splits}")
    return out


def _plt() -> Any:
    # lazily, and Agg before pyplot is first imported: figures are written to files, never shown
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(res: dict[str, Any]) -> dict[str, Any]:
    plt = _plt()
    labels = list(dict.fromkeys(curve_label(e) for e in res.get("results", [])))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(k % cmap.N) for k, lab in enumerate(labels)}


def _series(entries: list[dict[str, Any]], y: Any) -> dict[str, list[tuple[float, float, float]]]:
    """{label: [(beta, value, sd)] sorted by beta}, non-finite betas and values dropped."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for e in entries:
        b, (v, sd) = _num(e.get("beta")), y(e)
        if math.isfinite(b) and math.isfinite(v):
            out.setdefault(curve_label(e), []).append((b, v, sd if math.isfinite(sd) else 0.0))
    return {lab: sorted(pts) for lab, pts in out.items()}


def _figure(title: str | None, default: str) -> tuple[Any, Any]:
    fig, ax = _plt().subplots(figsize=(8.0, 4.6))
    ax.set_title(title or default, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def _beta_axis(ax: Any, split: str, xs: list[float]) -> None:
    if split != "missing-classes" and xs and min(xs) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("missing classes K" if split == "missing-classes" else "Dirichlet β")


def _save(fig: Any, ax: Any, path: Path) -> Path:
    plt = _plt()
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")  # atomic: a reader never sees half a PNG
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def metric_vs_beta(
    res: dict[str, Any], path: Path, *, split: str, metric: str = "accuracy", title: str | None = None
) -> Path:
    """Global test ``metric`` against β, one line per curve label, sd-over-seeds error bars."""
    entries = _entries(res, split)
    series = _series(
        entries,
        lambda e: (_num(e.get("global", {}).get(metric)), _num(e.get("global_sd", {}).get(metric))),
    )
    if not series:
        raise ValueError(f"no finite {metric!r} values with a beta for split {split!r}")
    colours = _colours(res)
    name = METRIC_LABELS.get(metric, metric)
    fig, ax = _figure(title, f"{res.get('dataset', '')} — {split}: global {name} vs drift")
    for lab, pts in series.items():
        xs, ys, sds = zip(*pts, strict=True)
        ax.errorbar(xs, ys, yerr=sds, marker="o", ms=4, capsize=3, label=lab, color=colours[lab])
    _beta_axis(ax, split, [p[0] for pts in series.values() for p in pts])
    ax.set_ylabel(f"{name}, test split, percent")
    return _save(fig, ax, path)


def worst_silo_vs_beta(res: dict[str, Any], path: Path, *, split: str, title: str | None = None) -> Path:
    """Worst silo's accuracy against β (solid), the silos' mean accuracy dashed in the same colour."""
    entries = _entries(res, split)
    worst = _series(entries, lambda e: (_num(e.get("per_silo", {}).get("worst_accuracy")), 0.0))
    mean = _series(entries, lambda e: (_num(e.get("per_silo", {}).get("mean_accuracy")), 0.0))
    if not worst and not mean:
        raise ValueError(f"no finite per-silo accuracies with a beta for split {split!r}")
    colours = _colours(res)
    fig, ax = _figure(title, f"{res.get('dataset', '')} — {split}: per-silo accuracy (dashed: mean)")
    for lab in dict.fromkeys([*worst, *mean]):
        if lab in worst:
            xs, ys, _ = zip(*worst[lab], strict=True)
            ax.plot(xs, ys, marker="o", ms=4, label=lab, color=colours[lab])
        if lab in mean:
            xs, ys, _ = zip(*mean[lab], strict=True)
            # labelled only when there is no solid line, so the legend has one row per method
            ax.plot(xs, ys, ls="--", alpha=0.7, color=colours[lab], label=None if lab in worst else lab)
    _beta_axis(ax, split, [p[0] for pts in [*worst.values(), *mean.values()] for p in pts])
    ax.set_ylabel("silo accuracy, percent (solid: worst silo)")
    return _save(fig, ax, path)


def metric_vs_round(
    res: dict[str, Any],
    path: Path,
    *,
    split: str,
    beta: float,
    metric: str = "accuracy",
    title: str | None = None,
) -> Path:
    """Global test ``metric`` after each round for the entries of ``split`` at ``beta``; methods
    without rounds (local, synthetic) are dotted horizontal lines at their final value."""
    curves: list[tuple[str, list[tuple[int, float]]]] = []  # (label, [(round, value)]); [] = no rounds
    levels: list[tuple[str, float]] = []
    for e in _entries(res, split, beta):
        hist = [_num(v) for v in (e.get("history") or {}).get(metric) or []]
        pts = [(r, v) for r, v in enumerate(hist, start=1) if math.isfinite(v)]
        final = _num(e.get("global", {}).get(metric))
        if pts:
            curves.append((curve_label(e), pts))
        elif math.isfinite(final):
            levels.append((curve_label(e), final))
    if not curves and not levels:
        raise ValueError(f"no finite {metric!r} history or value for split {split!r} at beta={beta:g}")
    colours = _colours(res)
    name = METRIC_LABELS.get(metric, metric)
    param = "K" if split == "missing-classes" else "β"
    fig, ax = _figure(title, f"{res.get('dataset', '')} — {split}, {param}={beta:g}: {name} per round")
    for lab, pts in curves:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="." if len(pts) < 30 else None, label=lab, color=colours[lab])
    for lab, level in levels:
        # no rounds: a reference level, visible across the whole round axis
        ax.axhline(level, ls=":", lw=1.5, label=lab, color=colours[lab])
    ax.set_xlabel("round")
    ax.xaxis.get_major_locator().set_params(integer=True)  # rounds are whole numbers
    ax.set_ylabel(f"{name}, test split, percent")
    return _save(fig, ax, path)


def drift_plots(res: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Every figure of a drift run, per split: accuracy and (if any is finite) AUC vs β, the
    per-silo accuracies, and one per-round figure per β. Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = res.get("results", [])
    if not results:
        raise ValueError("the drift results are empty: nothing to plot")
    paths: list[Path] = []
    for split in dict.fromkeys(str(e.get("split")) for e in results):
        entries = _entries(res, split)
        paths.append(metric_vs_beta(res, out_dir / f"{stem}_{split}_accuracy_vs_beta.png", split=split))
        if any(math.isfinite(_num(e.get("global", {}).get("auc"))) for e in entries):
            paths.append(
                metric_vs_beta(res, out_dir / f"{stem}_{split}_auc_vs_beta.png", split=split, metric="auc")
            )
        paths.append(worst_silo_vs_beta(res, out_dir / f"{stem}_{split}_worst_silo.png", split=split))
        betas = sorted({b for b in (_num(e.get("beta")) for e in entries) if math.isfinite(b)})
        for b in betas:
            paths.append(
                metric_vs_round(res, out_dir / f"{stem}_{split}_b{b:g}_rounds.png", split=split, beta=b)
            )
    return paths


__all__ = ["curve_label", "drift_plots", "metric_vs_beta", "metric_vs_round", "worst_silo_vs_beta"]
