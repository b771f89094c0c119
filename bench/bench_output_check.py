"""Benchmark: the cost of the hub's push-time output check, per generator and family (issue 12).

At push (and at pull) the hub loads every artifact and runs
:func:`fedsynth.generators.base.check_output`: a fixed batch of 256 draws per class through the
generator, refused when non-finite or outside the schema. This script fits one silo's generators
per family (a 5 % share of the dataset, ε = 1, the family's preset), then times the hub's loading
path ``from_artifact`` without and with ``check=True`` (median of ``--repeat`` runs) and reports
the check's share per generator:

    FEDSYNTH_DATA=/work/shared/datasets python bench/bench_output_check.py --out out/bench_output_check.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fedsynth.data.datasets import load_dataset
from fedsynth.data.images import load_images
from fedsynth.data.partition import equal_shares
from fedsynth.generators.base import get_family
from fedsynth.generators.io import from_artifact, to_artifact
from fedsynth.privacy.target import PrivacyTarget

TABULAR = ("dp-vae/1", "dp-gan/1", "pgm/1", "dp-diffusion/1", "fed-merf/1", "fed-pgm/1")
IMAGES = ("dp-conv-vae/1", "fed-merf/1")


def _time(fn: Any, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1000.0


def measure(dataset: str, kinds: tuple[str, ...], repeat: int) -> list[dict[str, Any]]:
    if dataset in ("mnist", "fashion_mnist"):
        img = load_images(dataset)
        schema = img.schema
        part = equal_shares(len(img.train_x), 20, 0.05, seed=0)[0]
        frame = img.frame(part)
    else:
        bench = load_dataset(dataset, seed=0)
        schema = bench.schema
        part = equal_shares(len(bench.train), 20, 0.05, seed=0)[0]
        frame = bench.train.iloc[part].reset_index(drop=True)
    rows = []
    for kind in kinds:
        fam = get_family(kind)
        cfg = fam.default_config(dataset)
        target = PrivacyTarget(1.0, 1e-5 if getattr(fam, "scope", "silo") == "federation" else None)
        t0 = time.perf_counter()
        gs = fam.fit(frame, schema, target, cfg, seed=0)
        fit_s = time.perf_counter() - t0
        arts = [to_artifact(g) for g in gs.generators]
        for a in arts:  # warm the per-spec caches (expected tensors, models) for both timings
            from_artifact(a[0], a[1], schema, check=True)
        load = [_time(lambda a=a: from_artifact(a[0], a[1], schema), repeat) for a in arts]
        check = [_time(lambda a=a: from_artifact(a[0], a[1], schema, check=True), repeat) for a in arts]
        classes = [1 if g.card.class_label is not None else len(schema.classes) for g in gs.generators]
        rows.append(
            {
                "dataset": dataset,
                "family": kind,
                "generators": len(arts),
                "classes_per_generator": classes[0],
                "fit_s": fit_s,
                "bytes_per_generator": float(np.mean([len(c) + len(w) for c, w in arts])),
                "load_ms": float(np.mean(load)),
                "load_and_check_ms": float(np.mean(check)),
                "check_ms": float(np.mean(check) - np.mean(load)),
                "check_ms_per_class": float(
                    np.mean([(c - lo) / k for c, lo, k in zip(check, load, classes, strict=True)])
                ),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["adult", "titanic", "mnist"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("out/bench_output_check.json"))
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for d in args.datasets:
        rows += measure(d, IMAGES if d in ("mnist", "fashion_mnist") else TABULAR, args.repeat)
    t = Table(title="push-time output check (256 draws per class), median of runs, 1 torch thread")
    for c in ("dataset", "family", "gens", "load ms", "load+check ms", "check ms", "check ms/class"):
        t.add_column(c, justify="right" if "ms" in c or c == "gens" else "left")
    for r in rows:
        t.add_row(
            r["dataset"], r["family"], str(r["generators"]), f"{r['load_ms']:.1f}",
            f"{r['load_and_check_ms']:.1f}", f"{r['check_ms']:.1f}", f"{r['check_ms_per_class']:.1f}",
        )  # fmt: skip
    Console(width=110).print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "platform": platform.platform()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
