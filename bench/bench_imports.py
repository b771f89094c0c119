"""Import cost per entry point: wall time, peak RSS, ``-X importtime`` and the heavy modules loaded.

    python bench/bench_imports.py --repeat 5 --json out/imports.json

Each entry point runs in a fresh interpreter ``--repeat`` times (median wall; peak RSS = the
largest VmHWM the child reports from ``/proc/self/status`` as it exits — not ``ru_maxrss`` from
``os.wait4``, which a child inherits from this process at fork); one more run under ``python -X
importtime`` gives the cumulative import time and the five costliest top-level packages. ``fedsynth
pull`` runs against a real hub this script starts (SQLite, on 127.0.0.1) holding two Adult silos'
pgm generator sets, pushed with ``fedsynth push --generator pgm``. The whole silo commands
(``train-generators`` per family, ``push``, ``pull`` of a 40-generator pool, a FLAIM client, the hub
process) are measured end to end in bench/bench_silo_footprint.py; the budgets that fail on a heavy
import are tests/test_import_budget.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HEAVY = ("torch", "jax", "flwr", "pandas", "opacus", "mbi", "sklearn", "tenseal", "umap", "matplotlib")
PROBE = (
    f"\nimport sys\nprint('HEAVY', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    "print(next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')))\n"
)
HUB = (
    "import tempfile\n"
    "from fedsynth.exchange.hub.app import create_app\n"
    "from fedsynth.exchange.hub.settings import HubSettings\n"
    "d = tempfile.mkdtemp()\n"
    "create_app(HubSettings(f'sqlite:///{d}/h.db', d + '/s', 'x' * 64))\n"
)
CLI = (
    "import sys\nfrom fedsynth.cli import app\nsys.argv = ['fedsynth', *{args!r}]\n"
    "try:\n    app()\nexcept SystemExit as e:\n    if e.code:\n        raise\n"
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


@contextmanager
def pulled_pool(tmp: Path) -> Iterator[list[str]]:
    """A real hub with two Adult silos' pgm sets pushed through the CLI; yields ``pull``'s argv."""
    from fedsynth.data.datasets import load_dataset
    from fedsynth.exchange.client import HubAdmin
    from fedsynth.exchange.process import run_hub
    from fedsynth.generators.base import get_family

    data, fam = load_dataset("adult", seed=0), get_family("pgm")
    spec = fam.spec_for(data.schema, fam.default_config("adult")).to_dict()
    with run_hub(f"sqlite:///{tmp}/hub.db", tmp / "store") as hub:
        with HubAdmin(hub.url, hub.admin_token) as adm:
            adm.create_federation("imports", data.schema, {fam.kind: spec}, max_epsilon=1.0, max_delta=1e-4)
            tokens = [adm.add_silo("imports", f"s{i}") for i in range(3)]
        for i in range(2):
            csv = tmp / f"silo{i}.csv"
            data.train.iloc[i * 2000 : (i + 1) * 2000].to_csv(csv, index=False)
            push = ["push", "--hub", hub.url, "--token", tokens[i], "--data", str(csv), "--target", "income"]
            push += ["--generator", "pgm"]
            out = subprocess.run([sys.executable, "-c", CLI.format(args=push)], capture_output=True)
            if out.returncode != 0:
                tail = (out.stdout + out.stderr)[-2000:].decode(errors="replace")
                raise RuntimeError(f"push failed: {tail}")
        yield ["pull", "--hub", hub.url, "--token", tokens[2], "--rows", "5000", "--out", f"{tmp}/pool.csv"]


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
    with tempfile.TemporaryDirectory(prefix="fedsynth-imports-") as tmp, pulled_pool(Path(tmp)) as pull:
        pull_code = CLI.format(args=[*pull, "--overwrite"])
        entries = {**ENTRIES, "fedsynth pull (2 pgm sets, 5,000 rows)": pull_code}
        rows = [_measure(name, code, args.repeat) for name, code in entries.items()]
    _report(rows, args.json)


def _measure(name: str, code: str, repeat: int) -> dict:
    walls, hwm = [], 0.0
    heavy = ""
    for _ in range(repeat):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code + PROBE], capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise RuntimeError(f"{name} failed: {out.stderr[-2000:]}")
        lines = out.stdout.splitlines()
        heavy = next((ln[6:] for ln in lines if ln.startswith("HEAVY ")), "")
        hwm = max(hwm, int(next(ln for ln in lines if ln.startswith("VmHWM")).split()[1]) / 1024)
    it = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    total, top = _importtime(it.stderr)
    return {
        "entry": name,
        "wall_s": statistics.median(walls),
        "peak_rss_mb": hwm,
        "import_s": total,
        "top_imports": [{"module": m, "s": s} for m, s in top],
        "heavy_loaded": [m for m in heavy.split(",") if m],
    }


def _report(rows: list[dict], json_path: Path | None) -> None:
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
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
