"""Import cost per entry point: wall time, peak RSS, ``-X importtime`` and the heavy modules loaded.

    python bench/bench_imports.py --repeat 5 --json out/imports.json

Each entry point runs in a fresh interpreter ``--repeat`` times (median wall, max peak RSS from
``os.wait4``); one more run under ``python -X importtime`` gives the cumulative import time of
the entry module and the five costliest top-level packages. The whole commands (``train-
generators``, ``push``, ``pull``, a FLAIM client, the hub process) are measured end to end in
bench/bench_silo_footprint.py; the budgets that fail on a heavy import are
tests/test_import_budget.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "jax", "flwr", "pandas", "opacus", "mbi", "sklearn", "tenseal", "umap", "matplotlib")
PROBE = f"\nimport sys\nprint('HEAVY', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
HUB = (
    "import tempfile\n"
    "from fedsynth.exchange.hub.app import create_app\n"
    "from fedsynth.exchange.hub.settings import HubSettings\n"
    "d = tempfile.mkdtemp()\n"
    "create_app(HubSettings(f'sqlite:///{d}/h.db', d + '/s', 'x' * 64))\n"
)
CLI = (
    "import sys\nfrom fedsynth.cli import app\nsys.argv = ['fedsynth', *{args!r}]\n"
    "try:\n    app()\nexcept SystemExit:\n    pass\n"
)
AIM_RUN = ["flaim", "run", "--method", "aim", "--dataset", "adult", "--epsilon", "1"]
AIM_RUN += ["--out", "/tmp/fedsynth-bench-imports-aim.csv", "--overwrite"]
ENTRIES = {
    "python -c pass (baseline)": "pass\n",
    "import fedsynth": "import fedsynth\n",
    "fedsynth --help": CLI.format(args=["--help"]),
    "fedsynth flaim run --help": CLI.format(args=["flaim", "run", "--help"]),
    "import fedsynth.flaim.runner (marginal path)": "import fedsynth.flaim.runner\n",
    # the whole command on Adult (needs FEDSYNTH_DATA): AIM, synthetic rows, L1 / NLL / GBDT AUC
    "fedsynth flaim run --method aim --dataset adult": CLI.format(args=AIM_RUN),
    "import fedsynth.exchange.client (push/pull)": "import fedsynth.exchange.client\n",
    "import fedsynth.generators.pgm.family": "import fedsynth.generators.pgm.family\n",
    "hub app at rest (create_app, SQLite)": HUB,
}


def _peak_rss(code: str) -> float:
    """Peak RSS of a fresh interpreter running ``code`` (ru_maxrss via os.wait4)."""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        raise RuntimeError(f"{code!r} exited with status {status}")
    return ru.ru_maxrss / 1024


def _importtime(err: str) -> tuple[float, list[tuple[str, float]]]:
    """Total import seconds and the costliest top-level packages from ``-X importtime`` output."""
    top: dict[str, float] = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = line.split("|")
        try:
            us = int(cum.strip())
        except ValueError:
            continue
        if not name.startswith("  "):  # level-0 entries are the top-level imports
            top[name.strip()] = top.get(name.strip(), 0) + us / 1e6
    return sum(top.values()), sorted(top.items(), key=lambda kv: -kv[1])[:5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for name, code in ENTRIES.items():
        walls = []
        heavy = ""
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code + PROBE], capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            if out.returncode != 0:
                raise RuntimeError(f"{name} failed: {out.stderr[-2000:]}")
            heavy = next((ln[6:] for ln in out.stdout.splitlines() if ln.startswith("HEAVY ")), "")
        rss = _peak_rss(code)
        it = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
        total, top = _importtime(it.stderr)
        rows.append(
            {
                "entry": name,
                "wall_s": statistics.median(walls),
                "peak_rss_mb": rss,
                "import_s": total,
                "top_imports": [{"module": m, "s": s} for m, s in top],
                "heavy_loaded": [m for m in heavy.split(",") if m],
            }
        )
    w = max(len(r["entry"]) for r in rows)
    print(
        f"{'entry point':<{w}}  {'wall s':>7}  {'RSS MB':>7}  {'import s':>8}  "
        "heavy modules loaded | top imports"
    )
    for r in rows:
        tops = ", ".join(f"{t['module']} {t['s']:.2f}" for t in r["top_imports"][:3])
        heavy = ",".join(r["heavy_loaded"]) or "none"
        print(
            f"{r['entry']:<{w}}  {r['wall_s']:7.2f}  {r['peak_rss_mb']:7.0f}  {r['import_s']:8.2f}  "
            f"{heavy} | {tops}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
