"""Central AIM, ours against the FLAIM authors' reference code, side by side on Adult.

Usage (from the project root, in our venv)::

    FEDSYNTH_DATA=/work/shared/datasets python bench/bench_aim_reference.py \
        --reference /work/flaim-ref --ref-python /work/refenv/bin/python \
        --seeds 0 1 --json out/aim_reference.json

Setting up the reference (once, outside the project)
----------------------------------------------------
1. Get the reference at commit 3e698da (``Samuel-Maddock/flaim``, "Merge pull request #2 ...")::

       git clone https://github.com/Samuel-Maddock/flaim /work/flaim-ref
       git -C /work/flaim-ref checkout 3e698da

   (or, from a bare mirror: ``mkdir /work/flaim-ref && git --git-dir=MIRROR archive 3e698da |
   tar -x -C /work/flaim-ref``). Only its ``synth_fl`` package is used, and it is imported from that
   path at run time: no reference code is vendored into this project.
2. A Python 3.11 environment with the packages the central-AIM code path really uses, at the
   versions the reference's ``requirements.txt`` pins (all have CPython 3.11 wheels; autodp 0.2.3.1
   is the PyPI release of the autodp repository the reference's README points to, and brings
   matplotlib and absl-py with it)::

       python3.11 -m venv /work/refenv
       /work/refenv/bin/pip install --upgrade pip
       /work/refenv/bin/pip install numpy==1.23.4 pandas==1.5.3 scipy==1.9.3 networkx==2.8.8 \
           loguru==0.6.0 disjoint_set==0.7.3 dacite==1.7.0 autodp==0.2.3.1

   torch, jax, sklearn, sdv and pmlb are imported on the reference's import chain but never
   called by its central AIM; ``bench/aim_reference_driver.py`` replaces them with stand-in modules
   that fail if called, and works around three import errors of the reference as shipped (its
   docstring has the details and the reference settings used: T fixed, zCDP, Gaussian, α, PGM
   50/500 iterations as in the paper's sweeps, the hard-coded 80 MB model-size cap).

What is run and timed
---------------------
For each seed: ``load_flaim_data("adult", seed=seed)`` and the workload
``make_workload(attrs, "3way-64", target=..., seed=seed)`` (64 random 3-way marginals), written to a
temporary folder as ``train.npy`` / ``domain.json`` / ``workload.json``. Then, one after the other
(never at once), in alternating order (ours first on even seeds, the reference first on odd ones):

* ours: a fresh ``sys.executable`` running this script's hidden ``--child-ours`` mode, which calls
  ``fedsynth.flaim.runner.run(data, "aim", epsilon, delta, rounds, seed, evaluate=False)``;
* the reference: a fresh ``--ref-python`` running ``bench/aim_reference_driver.py``.

Per side: **wall s**, measured by this process from ``Popen`` to the child's exit (interpreter
start, imports, data loading, fit and sampling, writing the .npy); **fit+sample s**, measured by
the child around the fit-and-sample call alone; **peak RSS MB**, the child's own ``VmHWM`` (the
peak of its address space, which starts afresh at exec). ``os.wait4``'s ``ru_maxrss`` is kept as
``ru_maxrss_mb`` but not used: a child inherits it from this process's memory at fork, and this
process grows with the GBDT scoring between runs. Both synthetic tables have as many rows as the
training split, and both are scored here with our metric code: workload L1 (``workload_l1`` over
the workload's downward closure) and GBDT AUC on the test split (``gbdt_auc``). Ratios are
ours / reference. Both children run with ``PYTHONHASHSEED`` set to the seed, since the
reference's candidate order and sampler depend on set iteration order; with it a seed
reproduces the reference's rows exactly. The JSON (``--json``)
has the settings, every per-seed measurement and the means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DRIVER = Path(__file__).resolve().with_name("aim_reference_driver.py")
REFERENCE_COMMIT = "3e698da"
SIDES = ("ours", "reference")
FIELDS = ("wall_s", "fit_sample_s", "peak_rss_mb", "l1", "auc")
RATIO_FIELDS = ("wall_s", "fit_sample_s", "peak_rss_mb")


# --------------------------------------------------------------------------- child: our side
def vm_hwm_mb() -> float:
    """Peak resident set of this process's address space (VmHWM). Unlike ``ru_maxrss``, which a
    child inherits from its parent's memory at fork, it starts afresh at exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_ours(seed: int, out: Path, epsilon: float, delta: float, rounds: int, alpha: float) -> None:

    from fedsynth.flaim import runner
    from fedsynth.flaim.data import load_flaim_data

    data = load_flaim_data("adult", seed=seed)
    t0 = time.perf_counter()
    r = runner.run(
        data, "aim", epsilon=epsilon, delta=delta, rounds=rounds, seed=seed, alpha=alpha, evaluate=False
    )
    fit_sample_s = time.perf_counter() - t0
    np.save(out, np.asarray(r.synthetic, dtype=np.int64))
    peak_rss_mb = vm_hwm_mb()
    print(json.dumps({"fit_sample_s": fit_sample_s, "peak_rss_mb": peak_rss_mb}), flush=True)


# --------------------------------------------------------------------------- parent
def run_child(cmd: list[str], workdir: Path, label: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` to completion; wall time from Popen to exit and the child's rusage via wait4."""
    out_path, err_path = workdir / f"{label}.stdout", workdir / f"{label}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen consistent
    stdout = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{label} exited with {proc.returncode}: {' '.join(cmd)}\n{tail}")
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"{label} printed no JSON line; stdout was:\n{stdout[-2000:]}")
    report = json.loads(lines[-1])
    return {
        "wall_s": wall_s,
        "fit_sample_s": float(report["fit_sample_s"]),
        "peak_rss_mb": float(report["peak_rss_mb"]),  # the child's VmHWM
        "ru_maxrss_mb": usage.ru_maxrss / 1024,  # includes this (parent) process's RSS at fork
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        **{k: v for k, v in report.items() if k not in ("fit_sample_s", "peak_rss_mb")},
    }


def write_inputs(folder: Path, data: Any, workload: list[tuple[str, ...]]) -> None:
    attrs = list(data.domain.attrs)
    np.save(folder / "train.npy", np.ascontiguousarray(data.train, dtype=np.int64))
    domain = {
        "attrs": attrs,
        "sizes": {a: int(data.domain.sizes[a]) for a in attrs},
        "target": data.domain.target,
    }
    (folder / "domain.json").write_text(json.dumps(domain))
    (folder / "workload.json").write_text(json.dumps([list(cl) for cl in workload]))


def bench_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from fedsynth.flaim.data import load_flaim_data
    from fedsynth.flaim.metrics import gbdt_auc, workload_l1
    from fedsynth.flaim.workload import downward_closure, make_workload

    data = load_flaim_data("adult", seed=seed)
    wl = make_workload(data.domain.attrs, "3way-64", target=data.domain.target, seed=seed)
    closure = downward_closure(wl, data.domain.attrs)
    common = ["--seed", str(seed), "--epsilon", str(args.epsilon), "--delta", str(args.delta)]
    common += ["--rounds", str(args.rounds), "--alpha", str(args.alpha)]
    order = SIDES if seed % 2 == 0 else SIDES[::-1]
    # Both children get the hash seed (the reference's set iteration order depends on it).
    env = {**os.environ, "PYTHONHASHSEED": str(seed % 2**32)}
    row: dict[str, Any] = {"seed": seed, "order": list(order), "train_rows": len(data.train)}
    with tempfile.TemporaryDirectory(prefix="aim-ref-bench-") as tmp:
        work = Path(tmp)
        write_inputs(work, data, wl)
        ours_cmd = [sys.executable, str(Path(__file__).resolve()), "--child-ours"]
        ref_cmd = [str(args.ref_python), str(DRIVER), "--reference", str(args.reference)]
        cmds = {
            "ours": [*ours_cmd, "--out", str(work / "ours.npy"), *common],
            "reference": [*ref_cmd, "--inputs", str(work), "--out", str(work / "reference.npy"), *common],
        }
        for side in order:
            print(f"seed {seed}: running {side} ...", file=sys.stderr, flush=True)
            row[side] = run_child(cmds[side], work, side, env)
        for side in SIDES:
            synth = np.load(work / f"{side}.npy")
            if synth.shape != data.train.shape:
                raise RuntimeError(
                    f"{side} synthetic data has shape {synth.shape}, expected {data.train.shape}"
                )
            row[side]["l1"] = workload_l1(data.train, synth, data.domain.sizes, closure)
            row[side]["auc"] = gbdt_auc(synth, data.test, data.target_index, seed)
    row["ratio"] = {f: row["ours"][f] / row["reference"][f] for f in RATIO_FIELDS}
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    mean: dict[str, Any] = {
        side: {f: float(np.mean([r[side][f] for r in rows])) for f in FIELDS} for side in SIDES
    }
    mean["ratio"] = {f: mean["ours"][f] / mean["reference"][f] for f in RATIO_FIELDS}
    return mean


def print_table(title: str, entry: dict[str, Any]) -> None:
    header = ["side", "wall s", "fit+sample s", "peak RSS MB", "L1", "AUC"]
    body = [
        [side, *(f"{entry[side][f]:.3f}" if f in ("l1", "auc") else f"{entry[side][f]:.1f}" for f in FIELDS)]
        for side in SIDES
    ]
    ratio = entry["ratio"]
    body.append(["ours/ref", *(f"{ratio[f]:.2f}" for f in RATIO_FIELDS), "", ""])
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain fallback
        print(title)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for r in [header, *body]:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in body:
        table.add_row(*r)
    Console().print(table)


def git_state(root: Path) -> dict[str, Any]:
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": head, "dirty": bool(dirty)}


def ref_python_version(ref_python: Path) -> dict[str, str]:
    code = (
        "import json, sys, numpy, pandas, scipy, networkx, autodp; print(json.dumps({'python': "
        "sys.version.split()[0], 'numpy': numpy.__version__, 'pandas': pandas.__version__, "
        "'scipy': scipy.__version__, 'networkx': networkx.__version__}))"
    )
    out = subprocess.run([str(ref_python), "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--reference", type=Path, default=Path("/work/flaim-ref"), help="flaim checkout (3e698da)"
    )
    ap.add_argument("--ref-python", type=Path, default=Path("/work/refenv/bin/python"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--child-ours", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child_ours:
        assert args.out is not None
        child_ours(args.seed, args.out, args.epsilon, args.delta, args.rounds, args.alpha)
        return

    if not args.ref_python.exists():
        ap.error(f"--ref-python {args.ref_python} does not exist (see the setup steps in --help)")
    if not (args.reference / "synth_fl").is_dir():
        ap.error(f"--reference {args.reference} is not a flaim checkout (see the setup steps in --help)")
    args.reference = args.reference.resolve()

    rows = []
    for seed in args.seeds:
        row = bench_seed(seed, args)
        rows.append(row)
        print_table(f"seed {seed} (first: {row['order'][0]})", row)
    mean = summarise(rows)
    if len(rows) > 1:
        print_table(f"mean over seeds {' '.join(map(str, args.seeds))}", mean)

    if args.json is not None:
        doc = {
            "benchmark": "central AIM, fedsynth vs Samuel-Maddock/flaim reference",
            "dataset": "adult",
            "workload": "3way-64",
            "epsilon": args.epsilon,
            "delta": args.delta,
            "rounds": args.rounds,
            "alpha": args.alpha,
            "seeds": args.seeds,
            "reference": {
                "path": str(args.reference),
                "commit": REFERENCE_COMMIT,
                "python": str(args.ref_python),
                "versions": ref_python_version(args.ref_python),
                "pgm_train_iters": 50,
                "pgm_final_iters": 500,
            },
            "ours": {"python": sys.executable, "git": git_state(Path(__file__).resolve().parents[1])},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "results": rows,
            "mean": mean,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
