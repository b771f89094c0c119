"""Markdown tables from `fedsynth bench sgde --json` outputs, next to the SGDE paper's Table I.

python bench/sgde_report.py out/sgde_*.json > out/sgde_tables.md
"""

from __future__ import annotations

import json
import sys

from fedsynth.cli.sgde import PAPER_TABLE_I
from fedsynth.evaluation.metrics import METRICS
from fedsynth.evaluation.sgde_experiment import SCENARIOS as ORDER


def cell(mean: float, sd: float) -> str:
    return f"{mean:.2f} ± {sd:.2f}"


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def main(paths: list[str]) -> None:
    for ev, title in (
        ("local_eval", "evaluated on each silo's local data (Table I)"),
        ("test_eval", "evaluated on the test split (Table III)"),
    ):
        print(f"\n#### {title}\n")
        print("| dataset | scenario | accuracy | F1 | AUC | paper acc / F1 / AUC |")
        print("|---|---|---|---|---|---|")
        for p in paths:
            r = load(p)
            paper = PAPER_TABLE_I.get(r["dataset"], {})
            for sc in ORDER:
                if sc not in r["scenarios"]:
                    continue
                v = r["scenarios"][sc][ev]
                ref = paper.get(sc) if ev == "local_eval" else None
                ref_s = " / ".join(f"{ref[m]:.2f}" for m in METRICS) if ref else ""
                sd = r["scenarios_sd"][sc][ev]
                cells = " | ".join(cell(v[m], sd[m]) for m in METRICS)
                print(f"| {r['dataset']} | {sc} | {cells} | {ref_s} |")
    print("\n#### privacy and time\n")
    print("| dataset | seeds | max ε spent (accountant) | max δ | generators/silo s | wall s/seed |")
    print("|---|---|---|---|---|---|")
    for p in paths:
        r = load(p)
        t = r["timing"]
        print(
            f"| {r['dataset']} | {r['seeds']} | {r['epsilon_spent_max']:.4f} | {r['delta']:.1g} | "
            f"{t['generators_per_silo_s']:.2f} | {t['per_seed_s']:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
