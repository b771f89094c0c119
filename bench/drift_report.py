"""Markdown tables from `fedsynth bench drift --json` outputs (docs/benchmarks.md, issue 14).

python bench/drift_report.py out/drift/drift_*.json > out/drift/drift_tables.md

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


def widened(x: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:+.1f}" for k, v in x.items() if k.endswith("_vs_fedavg"))


def checks(res: dict[str, Any]) -> list[str]:
    out = []
    for c in drift_checks(res["results"], res.get("headline", "auc")):
        b = f"{c['split']} {c['beta']:g}"
        for g in c.get("gain", []):
            rr = " ".join(
                f"rounds ratio {k} {g[f'rounds_ratio_{k}']:.2f};"
                for k in ("accuracy", "auc")
                if f"rounds_ratio_{k}" in g
            )
            out.append(
                f"- {b}: **{g['method']}** vs fedavg: {c['headline']} {g['headline_gain']:+.2f}, worst silo "
                f"{g['worst_gain']:+.1f} → {'met' if g['met'] else 'missed'}; {rr}"
            )
        if "equal_epsilon" in c:
            q = c["equal_epsilon"]
            out.append(
                f"- {b}: at ε {q['epsilon']:.2f}, {q['generator_method']} {q['generator_value']:.2f} "
                f"(worst silo {q['generator_worst']:.1f}) vs dp-fedavg {q['dp_fedavg_value']:.2f} "
                f"(worst silo {q['dp_fedavg_worst']:.1f}) → **{q['winner']}** by {abs(q['margin']):.2f}"
            )
        flagged = [x for x in c.get("bias", []) if x["flag"]]
        if c.get("bias"):
            if flagged:
                out.append(
                    f"- {b}: TPR gap widened by > 2 points over FedAvg: "
                    + "; ".join(f"{x['method']} ({widened(x)})" for x in flagged)
                )
            else:
                out.append(f"- {b}: no method widens a TPR gap by more than 2 points over FedAvg")
    return out


def main(paths: list[str]) -> None:
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
        print("\n".join(checks(res)))


if __name__ == "__main__":
    main(sys.argv[1:])
