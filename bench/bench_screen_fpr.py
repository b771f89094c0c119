"""Benchmark: false positives of the pull-time pool screen on honest pools (issue 12, defect 4).

Per benchmark dataset: the table is split into 20 equal silos (5 % each). Silos 0..S−1 train
honest generators at ε = 1 (one set per family: dp-vae per class, pgm joint) and push them; the
last silo (index 19, never in the pool) screens the pool with its own rows (``screen_pool``,
default thresholds). Screened pools: each family alone and all families mixed. Reported per pool:
honest generators dropped (the FPR: every generator is honest, so every drop is a false
positive), generators flagged but kept as the last of their class, and classes lost.

    FEDSYNTH_DATA=/work/shared/datasets nice -n 10 python bench/bench_screen_fpr.py \\
        --out out/bench_screen_fpr.json

``--compare FILE`` also screens every pool with ``screen_pool`` of another copy of ``poison.py``
(e.g. ``git show HEAD~1:src/fedsynth/audit/poison.py > /tmp/old_poison.py``): before/after of a
threshold change on the same trained generators. A screen that raises is reported as a crash.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from fedsynth.audit.poison import screen_pool
from fedsynth.audit.training import train_generators
from fedsynth.data.datasets import load_dataset
from fedsynth.data.partition import equal_shares
from fedsynth.generators.base import Generator, classes_of

DATASETS = ["titanic", "breast_cancer", "mushroom", "adult", "wine_quality"]
console = Console(width=130)


def _screen_fn(path: Path) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location("poison_under_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod.screen_pool  # type: ignore[no-any-return]


def _pool_row(screen: Callable[..., Any], gens: list[Generator], ds: Any, val: Any, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        res = screen(gens, ds.schema, val, n_samples=n)
    except Exception as e:  # the old screener's IndexError on all-continuous schemas, say
        return {"pool": len(gens), "crash": f"{type(e).__name__}: {e}"[:200]}
    sec = time.perf_counter() - t0
    bad = {s.index for s in res.scores if s.flagged}
    rescued = set(getattr(res, "kept_for_class", {}))
    kept_classes = {c for g in res.kept for c in classes_of(g, ds.schema)}
    pooled = {c for g in gens for c in classes_of(g, ds.schema)}
    # reason kinds without their numbers (a short summary of why honest generators were flagged)
    kinds = {
        re.sub(r"^[0-9.]+%? ", "", r.split(" (")[0].split(" matches")[0])
        for s in res.scores
        if s.flagged
        for r in s.reasons
    }
    reasons = sorted(kinds)
    return {
        "pool": len(gens),
        "dropped": len(res.dropped),
        "fpr": len(res.dropped) / len(gens),
        "flagged": len(bad),
        "kept_for_class": len(rescued),
        "classes_lost": sorted(pooled - kept_classes),
        "reasons": reasons[:8],
        "screen_seconds": sec,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--families", default="vae,pgm")
    ap.add_argument("--silos", type=int, default=19, help="silos in the pool (of 20 equal shares)")
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", type=Path, default=None, help="poison.py copy to screen with too")
    ap.add_argument("--out", type=Path, default=Path("out/bench_screen_fpr.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    screens: dict[str, Callable[..., Any]] = {"current": screen_pool}
    if args.compare is not None:
        screens["compared"] = _screen_fn(args.compare)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if not 3 <= args.silos <= 19:
        raise SystemExit("--silos must be in 3..19 (silo 19 screens)")
    t_all = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        ds = load_dataset(name, seed=args.seed)
        parts = equal_shares(len(ds.frame), 20, seed=args.seed)
        val = ds.frame.iloc[parts[19]].reset_index(drop=True)
        by_fam: dict[str, list[Generator]] = {}
        t0 = time.perf_counter()
        for fam in families:
            by_fam[fam] = [
                g
                for s in range(args.silos)
                for g in train_generators(
                    ds.frame.iloc[parts[s]].reset_index(drop=True), ds.schema,
                    epsilon=args.epsilon, delta=None, seed=args.seed * 1000 + s, family=fam,
                )
            ]  # fmt: skip
        train_sec = time.perf_counter() - t0
        pools = dict(by_fam)
        if len(families) > 1:
            pools["mixed"] = [g for f in families for g in by_fam[f]]
        for pname, gens in pools.items():
            for sname, screen in screens.items():
                row = {"dataset": name, "silo_rows": len(parts[0]), "family": pname, "screener": sname,
                       **_pool_row(screen, gens, ds, val, args.n_samples)}  # fmt: skip
                rows.append(row)
                console.print(f"  {name} {pname} {sname}: {row}")
        console.print(f"{name}: trained in {train_sec:.0f} s")

    t = Table(title=f"honest pools screened by silo 19 ({args.silos} silos × 5 %, ε = {args.epsilon:g})")
    cols = ("dataset", "pool", "screener", "generators", "dropped (FPR)", "kept as last of class")
    for c in (*cols, "classes lost"):
        t.add_column(c)
    for r in rows:
        if "crash" in r:
            crash = f"CRASH {r['crash'][:40]}"
            t.add_row(r["dataset"], r["family"], r["screener"], str(r["pool"]), crash, "", "")
            continue
        t.add_row(
            r["dataset"], r["family"], r["screener"], str(r["pool"]), f"{r['dropped']} ({r['fpr']:.1%})",
            str(r["kept_for_class"]), ", ".join(r["classes_lost"]) or "none",
        )  # fmt: skip
    console.print(t)
    overall: dict[str, float | None] = {}
    for sname in screens:
        ok = [r for r in rows if r["screener"] == sname and "crash" not in r and r["family"] != "mixed"]
        total, dropped = sum(r["pool"] for r in ok), sum(r["dropped"] for r in ok)
        overall[sname] = dropped / total if total else None
        crashes = sum(1 for r in rows if r["screener"] == sname and "crash" in r)
        console.print(
            f"{sname}: single-family pools {dropped} of {total} dropped"
            + (f" = {dropped / total:.1%}" if total else "")
            + f"; {crashes} pools crashed"
        )
    out = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds": time.perf_counter() - t_all,
        "rows": rows,
        "overall_fpr": overall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    console.print(f"wrote {args.out} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
