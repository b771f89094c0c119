"""Where central AIM's time and memory go on Adult: per-phase wall time and resident memory.

    python bench/bench_aim_phases.py --seeds 0 1 --json out/aim_phases.json

One fresh interpreter per seed (``--child``), so import cost and peak RSS are the run's own.
Phases (wall seconds, timed by wrapping module attributes that exist in every version since
issue 7, so the same script measures an older checkout: ``PYTHONPATH=OLD/src python ...``):

* ``import`` — ``fedsynth.flaim.runner`` and what it pulls in;
* ``load`` — Adult (pre-binned Private-PGM file), 90/10 split, the 64-marginal workload;
* ``answers`` — the exact candidate marginals M_q(D) (``marginal_counts``);
* ``feasibility`` — the size-cap filter over candidates (``CandidateFilter.feasible``);
* ``fits`` — every Private-PGM fit (``fedsynth.flaim.model.fit``), rounds and final;
* ``aim other`` — selection scores, mechanisms, bookkeeping (AIM total minus the above);
* ``sample`` — synthetic rows, as many as training rows (``PGM.synthetic``);
* ``eval`` — workload L1, NLL and GBDT AUC (not part of AIM; reported apart).

Memory: VmRSS after each phase and the peak (VmHWM), plus the bytes of what the run holds —
the data, the exact answers, the fitted model's potentials and calibrated marginals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _mem() -> tuple[float, float]:
    cur = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def child(seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    rss: dict[str, tuple[float, float]] = {}
    import numpy as np

    from fedsynth.flaim import aim
    from fedsynth.flaim import model as pgm
    from fedsynth.flaim.data import load_flaim_data
    from fedsynth.flaim.metrics import gbdt_auc, nll, workload_l1
    from fedsynth.flaim.workload import downward_closure, make_workload

    phases["import"] = time.perf_counter() - t0
    rss["import"] = _mem()

    spent = {"answers": 0.0, "feasibility": 0.0, "fits": 0.0}

    def timed(key: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t

        return wrapper

    aim.marginal_counts = timed("answers", aim.marginal_counts)  # type: ignore[attr-defined]
    aim.CandidateFilter.feasible = timed("feasibility", aim.CandidateFilter.feasible)  # type: ignore[method-assign]
    pgm.fit = timed("fits", pgm.fit)  # aim calls pgm.fit through the module

    t = time.perf_counter()
    data = load_flaim_data("adult", seed=seed)
    wl = make_workload(data.domain.attrs, "3way-64", target=data.domain.target, seed=seed)
    phases["load"] = time.perf_counter() - t
    rss["load"] = _mem()

    t = time.perf_counter()
    res = aim.run_aim(data.train, data.domain.sizes, wl, epsilon=1.0, delta=1e-5, rounds=10, seed=seed)
    total_aim = time.perf_counter() - t
    phases.update(spent)
    phases["aim other"] = total_aim - sum(spent.values())
    rss["aim"] = _mem()

    t = time.perf_counter()
    synth = res.model.synthetic(len(data.train), seed)
    phases["sample"] = time.perf_counter() - t
    rss["sample"] = _mem()
    wall_to_synthetic = time.perf_counter() - t0

    held = {
        "data MB": (data.train.nbytes + data.test.nbytes) / 2**20,
        "model MB": (
            sum(np.asarray(v).nbytes for v in res.model.potentials.values())
            + sum(np.asarray(v).nbytes for v in res.model.log_marginals.values()) * 2  # log P and P
        )
        / 2**20,
        "synthetic MB": synth.nbytes / 2**20,
    }
    sizes = data.domain.sizes
    cands = downward_closure(wl, data.domain.attrs)
    held["answers MB"] = sum(int(np.prod([sizes[a] for a in q])) * 8 for q in cands) / 2**20

    t = time.perf_counter()
    metrics = {
        "l1": workload_l1(data.train, synth, sizes, cands),
        "nll": nll(res.model, data.test),
        "auc": gbdt_auc(synth, data.test, data.target_index, seed),
    }
    phases["eval"] = time.perf_counter() - t
    return {
        "seed": seed,
        "phases_s": phases,
        "aim_s": total_aim,
        "wall_to_synthetic_s": wall_to_synthetic,
        "rss_after_mb": {k: v[0] for k, v in rss.items()},
        "peak_rss_mb": max(v[1] for v in rss.values()),
        "held": held,
        "metrics": metrics,
        "selected": [list(q) for q in res.selected],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--label", default="HEAD")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    runs = []
    for seed in args.seeds:
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(seed)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["process_wall_s"] = time.perf_counter() - t
        runs.append(r)
    names = list(runs[0]["phases_s"])
    print(f"central AIM on Adult, T=10, ε=1 ({args.label}); seconds per phase, mean over seeds {args.seeds}")
    for k in names:
        vals = [r["phases_s"][k] for r in runs]
        print(f"  {k:<12} {sum(vals) / len(vals):7.2f}")
    for k in ("aim_s", "wall_to_synthetic_s", "process_wall_s", "peak_rss_mb"):
        vals = [r[k] for r in runs]
        print(f"  {k:<20} {sum(vals) / len(vals):8.2f}")
    for k in runs[0]["rss_after_mb"]:
        print(f"  RSS after {k:<8} {sum(r['rss_after_mb'][k] for r in runs) / len(runs):7.0f} MB")
    for k in runs[0]["held"]:
        print(f"  held: {k:<14} {sum(r['held'][k] for r in runs) / len(runs):7.2f}")
    for k in ("l1", "nll", "auc"):
        print(f"  {k:<4} " + "  ".join(f"{r['metrics'][k]:.4f}" for r in runs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"label": args.label, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
