"""Markdown tables for the federation-level families (issue 11) from `fedsynth bench sgde --json`.

Reads out/sgde_<family>_<dataset>.json for the federation families (and the per-silo families
for comparison), all at ε = 1, 20 silos × 5 %, 3 seeds, test split:

    python bench/fed_report.py out > out/fed_tables.md

1. utility: Local, FedAvg, pooled real, and per family Synthetic / Local + Synthetic, with the
   share of the Local → pooled-real gap that Local + Synthetic closes (accuracy, AUC);
2. the central floor: the same family fitted on the pooled rows in one place at the same ε;
3. communication per silo: the round's messages (from the secure sums), a per-silo family's
   push (its own artifact) and pull (the pool), and FedAvg to convergence.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DATASETS = ("titanic", "breast_cancer", "mushroom", "adult", "wine_quality")
FED = ("fed-pgm", "fed-merf")
SILO = ("pgm", "vae")
EV = "test_eval"


def load(folder: Path, fam: str, ds: str) -> dict | None:
    p = folder / f"sgde_{fam}_{ds}.json"
    return json.loads(p.read_text()) if p.exists() else None


def m(r: dict, sc: str, metric: str) -> tuple[float, float]:
    return r["scenarios"][sc][EV][metric], r["scenarios_sd"][sc][EV][metric]


def closed(r: dict, sc: str, metric: str) -> float:
    lo, hi, v = m(r, "local", metric)[0], m(r, "pooled_real", metric)[0], m(r, sc, metric)[0]
    return 100.0 * (v - lo) / (hi - lo) if hi > lo else float("nan")


def utility(folder: Path) -> None:
    head = (
        "| dataset | Local acc / AUC | FedAvg acc / AUC | pooled real acc / AUC | family "
        "| Synthetic acc / AUC | Local + Synthetic acc / AUC | gap closed acc / AUC | Synth AUC ≥ FedAvg |"
    )
    print(head)
    print("|---|---|---|---|---|---|---|---|---|")
    for ds in DATASETS:
        for fam in FED + SILO:
            r = load(folder, fam, ds)
            if r is None:
                continue

            def c(sc: str, r: dict = r) -> str:
                (a, sa), (u, su) = m(r, sc, "accuracy"), m(r, sc, "auc")
                return f"{a:.2f} ± {sa:.2f} / {u:.2f} ± {su:.2f}"

            fed_ok = m(r, "synthetic", "auc")[0] >= m(r, "federated", "auc")[0]
            ga, gu = closed(r, "local_plus_synthetic", "accuracy"), closed(r, "local_plus_synthetic", "auc")
            gap = f"{ga:.0f} % / {gu:.0f} %"
            print(f"| {ds} | {c('local')} | {c('federated')} | {c('pooled_real')} | {fam} | {c('synthetic')} "
                  f"| {c('local_plus_synthetic')} | {gap} | {'yes' if fed_ok else 'no'} |")  # fmt: skip


def floor(folder: Path) -> None:
    print(
        "\n| dataset | family | federated Synthetic acc / AUC "
        "| central floor (same ε, pooled rows) acc / AUC |"
    )
    print("|---|---|---|---|")
    for ds in DATASETS:
        for fam in FED:
            r = load(folder, fam, ds)
            if r is None or "central_synthetic_test" not in r["per_seed"][0]:
                continue
            cs = [s["central_synthetic_test"] for s in r["per_seed"]]
            ca, cu = np.mean([x["accuracy"] for x in cs]), np.mean([x["auc"] for x in cs])
            sa, su = np.std([x["accuracy"] for x in cs], ddof=1), np.std([x["auc"] for x in cs], ddof=1)
            (a, _), (u, _) = m(r, "synthetic", "accuracy"), m(r, "synthetic", "auc")
            print(f"| {ds} | {fam} | {a:.2f} / {u:.2f} | {ca:.2f} ± {sa:.2f} / {cu:.2f} ± {su:.2f} |")


def communication(folder: Path) -> None:
    head = (
        "\n| dataset | family | round: KB sent / received per silo | round seconds (20 silos, in-process "
        "SecAgg+) | pull: KB per silo | FedAvg to convergence: rounds, KB per silo |"
    )
    print(head)
    print("|---|---|---|---|---|---|")
    for ds in DATASETS:
        for fam in FED + SILO:
            r = load(folder, fam, ds)
            if r is None:
                continue
            seed = r["per_seed"][0]
            fedavg = np.mean([s["fedavg_rounds"] for s in r["per_seed"]])
            # FedAvg: each round a silo receives the model and sends its update (same size)
            fb = 2 * np.mean(
                [s["fedavg_rounds"] * s["fedavg_bytes_per_client_per_round"] for s in r["per_seed"]]
            )
            art = r["artifact_bytes_per_silo"]
            if "round" in seed:
                sent = np.mean([s["round"]["bytes_sent_per_silo"] for s in r["per_seed"]]) / 1e3
                recv = np.mean([s["round"]["bytes_received_per_silo"] for s in r["per_seed"]]) / 1e3
                secs = np.mean([s["round"]["seconds"] for s in r["per_seed"]])
                rnd, pull = f"{sent:.1f} / {recv:.1f}", art / 1e3  # every silo pulls the one artifact
                rs = f"{secs:.1f}"
            else:  # push own set, pull the other 19 silos' sets
                rnd, pull, rs = f"push {art / 1e3:.1f}", art * (r["silos"] - 1) / 1e3, "–"
            print(f"| {ds} | {fam} | {rnd} | {rs} | {pull:.1f} | {fedavg:.0f}, {fb / 1e3:.1f} |")


def main(folder: str) -> None:
    f = Path(folder)
    utility(f)
    floor(f)
    communication(f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out")
