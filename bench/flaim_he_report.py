"""Markdown table of `fedsynth bench flaim --json` outputs, one row per (dataset, method):
L1 / AUC / NLL mean ± sd over seeds, per-seed L1, KB sent / received per participating client,
seconds per run (mean / max) — docs/benchmarks.md, issue 15.

python bench/flaim_he_report.py out/flaim_he_adult.json out/flaim_he_only_adult.json ...

A (dataset, method) present in several files is taken from the last one (a rerun overrides).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(paths: list[str]) -> None:
    cols = ["dataset", "method", "L1 (3 seeds)", "per seed", "AUC", "NLL", "KB sent / received", "s per run"]
    print("| " + " | ".join(cols) + " |")
    print("|---|---|---|---|---|---|---|---|")
    runs: dict[tuple[str, str], list[dict]] = {}
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        for m in dict.fromkeys(r["method"] for r in res["results"]):
            runs[(res["dataset"], m)] = [r for r in res["results"] if r["method"] == m]
    order = ["flaim-he", "flaim-da", "flaim-sa"]

    def rank(item: tuple[tuple[str, str], list[dict]]) -> tuple[str, int]:
        (dataset, m), _ = item
        return dataset, order.index(m) if m in order else len(order)

    for (dataset, m), rs in sorted(runs.items(), key=rank):
        if rs:
            l1 = np.array([r["l1"] for r in rs])
            auc, nll = np.array([r["auc"] for r in rs]), np.array([r["nll"] for r in rs])
            secs = np.array([r["seconds"] for r in rs])
            name = f"**{m}**" if m == "flaim-he" else m
            print(
                f"| {dataset} | {name} | {l1.mean():.3f} ± {l1.std(ddof=1):.3f} "
                f"| {' / '.join(f'{v:.3f}' for v in l1)} | {auc.mean():.3f} | {nll.mean():.1f} "
                f"| {np.mean([r['client_bytes_sent'] for r in rs]) / 1e3:.0f} / "
                f"{np.mean([r['client_bytes_received'] for r in rs]) / 1e3:.0f} "
                f"| {secs.mean():.1f} / {secs.max():.1f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
