"""Markdown tables comparing generator families from `fedsynth bench sgde --generator F --json`
outputs (and `bench/sdmetrics_quality.py --json` outputs, if given).

    python bench/family_report.py out/sgde_*_*.json out/sdmetrics_*.json > out/families.md

Per family and dataset, on the test split: the paper's Synthetic (``synthetic_balanced``) and
Local + Synthetic, mean ± sd over seeds; training seconds, artifact bytes per silo, peak RSS; then
which family wins the synthetic AUC per dataset, and the mean over datasets.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

DATASETS = ("titanic", "breast_cancer", "mushroom", "adult", "wine_quality")
FAMILIES = ("dp-vae/1", "dp-gan/1", "pgm/1", "dp-diffusion/1")


def main(paths: list[str]) -> None:
    runs: dict[tuple[str, str], dict] = {}
    quality: dict[tuple[str, str], dict] = {}
    names = {"vae": "dp-vae/1", "gan": "dp-gan/1", "pgm": "pgm/1", "diffusion": "dp-diffusion/1"}
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        if "families" in r:  # an sdmetrics output
            for fam, q in r["families"].items():
                quality[(names.get(fam, fam), r["dataset"])] = q
        else:
            runs[(r.get("generator", "dp-vae/1"), r["dataset"])] = r
    print("| dataset | family | seeds | Synthetic acc / F1 / AUC | Local + Synthetic acc / F1 / AUC | "
          "train s/silo | artifact KB/silo | peak RSS MB | max ε |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for d in DATASETS:
        for fam in FAMILIES:
            r = runs.get((fam, d))
            if r is None:
                continue
            sc, sd = r["scenarios"], r["scenarios_sd"]

            def cells(name: str, sc: dict = sc, sd: dict = sd) -> str:
                v, s = sc[name]["test_eval"], sd[name]["test_eval"]
                return (
                    " / ".join(f"{v[m]:.2f}" for m in ("accuracy", "f1"))
                    + f" / **{v['auc']:.2f}** ± {s['auc']:.2f}"
                )

            print(
                f"| {d} | {fam} | {r['seeds']} | {cells('synthetic_balanced')} | "
                f"{cells('local_plus_synthetic')} | "
                f"{r['timing']['generators_per_silo_s']:.2f} | {r['artifact_bytes_per_silo'] / 1e3:.1f} | "
                f"{r.get('peak_rss_mb', float('nan')):.0f} | {r['epsilon_spent_max']:.4f} |"
            )
    print("\n| family | " + " | ".join(DATASETS) + " | mean Synthetic AUC | beats dp-vae on |")
    print("|---|" + "---|" * (len(DATASETS) + 2))
    means: dict[str, float] = {}
    for fam in FAMILIES:
        row, wins, vals = [], 0, []
        for d in DATASETS:
            r, v = runs.get((fam, d)), runs.get(("dp-vae/1", d))
            if r is None:
                row.append("—")
                continue
            auc = r["scenarios"]["synthetic_balanced"]["test_eval"]["auc"]
            vals.append(auc)
            row.append(f"{auc:.2f}")
            if (
                fam != "dp-vae/1"
                and v is not None
                and auc > v["scenarios"]["synthetic_balanced"]["test_eval"]["auc"]
            ):
                wins += 1
        means[fam] = sum(vals) / len(vals) if len(vals) == len(DATASETS) else float("nan")
        print(
            f"| {fam} | " + " | ".join(row) + f" | {means[fam]:.2f} | {wins if fam != 'dp-vae/1' else '—'} |"
        )
    if quality:
        print("\n| dataset | family | SDMetrics overall | column shapes | column-pair trends |")
        print("|---|---|---|---|---|")
        for d in DATASETS:
            for fam in FAMILIES:
                q = quality.get((fam, d))
                if q:
                    print(
                        f"| {d} | {fam} | {q['overall']:.3f} | {q['column_shapes']:.3f} | "
                        f"{q['column_pair_trends']:.3f} |"
                    )
    by = defaultdict(list)
    for (fam, _d), r in runs.items():
        by[fam].append(r["seeds"])
    print("\nseeds per family: " + ", ".join(f"{f}: {sorted(set(s))}" for f, s in sorted(by.items())))


if __name__ == "__main__":
    main(sys.argv[1:])
