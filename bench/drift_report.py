"""Markdown tables from `fedsynth bench drift --json` outputs (docs/benchmarks.md, issue 14).

python bench/drift_report.py out/drift/drift_*.json > out/drift/drift_tables.md
python bench/drift_report.py --summary out/drift/drift_*.json     # one row per β

Per file and split parameter: one row per method (and generator family) with global accuracy /
F1 / AUC (mean ± sd over seeds), mean and worst per-silo accuracy, rounds to 95 % (accuracy,
AUC), KB per silo, ε per record and — where the data have them — the TPR gaps between groups;
then the issue's checks (:func:`fedsynth.evaluation.drift.drift_checks`, recomputed here from the
results so the tables and the verdicts come from the same numbers).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from fedsynth.cli.drift import check_lines
from fedsynth.evaluation.drift import drift_checks


def num(v: Any, fmt: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, fmt)


def eps(e: dict[str, Any]) -> str:
    if e["epsilon"] is None:
        return "none (∞)"
    return "0" if e["epsilon"] == 0 else f"{e['epsilon']:.2f}"


def table(entries: list[dict[str, Any]]) -> list[str]:
    fair = any(e.get("fairness") for e in entries)
    head = "| method | gen. | ε | accuracy | F1 | AUC | silo mean | silo worst | r95 acc / AUC | KB/silo |"
    rule = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    if fair:
        head += " TPR gap sex / race |"
        rule += "---:|"
    lines = [head, rule]
    for e in entries:
        g, sd = e["global"], e.get("global_sd", {})
        row = (
            f"| {e['method']} | {e.get('generator') or ''} | {eps(e)} "
            f"| {num(g['accuracy'])} ± {num(sd.get('accuracy'), '.1f')} | {num(g['f1'])} "
            f"| {num(g['auc'])} ± {num(sd.get('auc'), '.1f')} | {num(e['per_silo']['mean_accuracy'], '.1f')} "
            f"| {num(e['per_silo']['worst_accuracy'], '.1f')} "
            f"| {num(e.get('rounds_to_95'), '.1f')} / {num(e.get('rounds_to_95_auc'), '.1f')} "
            f"| {num(e['bytes_per_silo'] / 1e3, '.0f')} |"
        )
        if fair:
            fa = e.get("fairness") or {}
            sex, race = (num(fa.get(a, {}).get("tpr_gap"), ".1f") for a in ("sex", "race"))
            row += f" {sex} / {race} |"
        lines.append(row)
    return lines


def summary(res: dict[str, Any]) -> list[str]:
    """One row per split parameter: the headline metric / worst-silo accuracy of the methods the
    issue compares (the best generator family per method)."""
    h = res.get("headline", "auc")
    cols = ["fedavg", "fedprox", "fedavgm", "dp-fedavg", "synthetic", "fedavg+synthetic", "personalised"]
    lines = [
        f"| {res['split']} | " + " | ".join(cols) + " | rounds to 95 % AUC: fedavg → fedavg+synthetic |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for b in dict.fromkeys(e["beta"] for e in res["results"]):
        es = [e for e in res["results"] if e["beta"] == b]
        cells = []
        best: dict[str, dict[str, Any]] = {}
        for m in cols:
            cand = [e for e in es if e["method"] == m]
            if not cand:
                cells.append("–")
                continue
            e = max(cand, key=lambda e: e["global"][h])
            best[m] = e
            g = f" ({e['generator']})" if e.get("generator") else ""
            cells.append(f"{e['global'][h]:.1f} / {e['per_silo']['worst_accuracy']:.0f}{g}")
        r95 = "–"
        if "fedavg" in best and "fedavg+synthetic" in best:
            a, z = (num(best[m].get("rounds_to_95_auc"), ".1f") for m in ("fedavg", "fedavg+synthetic"))
            r95 = f"{a} → {z}"
        lines.append(f"| {b:g} | " + " | ".join(cells) + f" | {r95} |")
    return lines


def main(paths: list[str]) -> None:
    if paths and paths[0] == "--summary":
        for path in paths[1:]:
            with open(path) as f:
                res = json.load(f)
            print(f"\n{res['dataset']} ({res.get('headline', 'auc')} / worst-silo accuracy, best family):\n")
            print("\n".join(summary(res)))
        return
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        print(
            f"\n#### {res['dataset']}: {res['split']}, {res['silos']} silos, {res['seeds']} seeds, "
            f"ε = {res['epsilon']:g} (`{path}`, {res['timing']['total_s'] / 60:.0f} min)\n"
        )
        for b in dict.fromkeys(e["beta"] for e in res["results"]):
            print(f"\n{res['split']} {b:g}:\n")
            print("\n".join(table([e for e in res["results"] if e["beta"] == b])))
        print()
        print("\n".join(check_lines(drift_checks(res["results"], res.get("headline", "auc")), markdown=True)))


if __name__ == "__main__":
    main(sys.argv[1:])
