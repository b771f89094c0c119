"""Generator-hub benchmark: concurrent pushes and pulls against real hub processes, and the
per-silo communication of the SGDE exchange next to FedAvg's.

    python bench/bench_hub.py --json bench-hub.json            # SQLite (1 process) + PostgreSQL (2 processes)
    FEDSYNTH_TEST_PG_URL=postgresql+psycopg://... python bench/bench_hub.py ...

Scenarios (each against a fresh database and store):
* 20 silos push a generator set (one ≈100 KB decoder per class) concurrently, one thread each;
* then ``--pulls`` pulls (GET weights) of those generators with 200 (and 20) in flight, spread over
  the 20 silo tokens, driven by ``curl --parallel``; every downloaded file is then checked against
  its SHA-256 (a mismatch counts as an error). A warm-up pass runs first.
The load generator runs on the same machine as the hub(s), so it competes for the same cores.

Communication (Adult, 20 silos): every silo subscribes, pushes its set and pulls the whole pool
through a real hub; bytes are the HTTP bodies counted by :class:`HubClient`. Decoders have the
default architecture (``VAEConfig()``) for the Adult schema; their size does not depend on the
training, so randomly initialised weights are used. FedAvg's figure is the payload of the
logistic-regression model over the same one-hot features (float64, as Flower sends NumPy arrays),
once down and once up per round.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest_hub import make_set, vae_fams

from fedsynth.data.datasets import load_dataset
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema
from fedsynth.exchange.client import HubAdmin, HubClient
from fedsynth.exchange.process import run_hub
from fedsynth.generators.vae.nets import DecoderSpec
from fedsynth.generators.vae.train import VAEConfig


def spec_near(schema: Schema, target_bytes: int) -> DecoderSpec:
    """Decoder spec (two equal hidden layers) whose safetensors file is closest to ``target_bytes``."""
    layout = TableEncoder(schema).layout()
    best = None
    for h in range(16, 513, 4):
        spec = VAEConfig(latent_dim=8, hidden=(h, h)).decoder_spec(layout)
        w = spec.output_dim
        n = 4 * (8 * h + h + h * h + h + h * w + w)
        if best is None or abs(n - target_bytes) < best[0]:
            best = (abs(n - target_bytes), spec)
    assert best
    return best[1]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def push_load(url: str, tokens: list[str], schema: Schema, spec: DecoderSpec) -> dict[str, Any]:
    sets = [make_set(schema, spec, epsilon=1.0, seed=100 + i) for i in range(len(tokens))]
    clients = [HubClient(url, t, timeout=120) for t in tokens]
    lat: list[float] = []
    errors: list[str] = []

    def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            clients[i].push(sets[i])
            lat.append(time.perf_counter() - t0)
        except Exception as e:
            errors.append(repr(e))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(tokens)) as ex:
        list(ex.map(one, range(len(tokens))))
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    return {
        "pushes": len(tokens),
        "errors": len(errors),
        "error_samples": errors[:3],
        "wall_s": wall,
        "p50_ms": 1e3 * pct(lat, 50),
        "p99_ms": 1e3 * pct(lat, 99),
        "max_ms": 1e3 * max(lat, default=0),
    }


def pull_load(
    url: str, fed: str, tokens: list[str], entries: list[Any], concurrency: int, n: int, tmp: Path
) -> dict[str, Any]:
    """``n`` pulls with ``concurrency`` in flight, driven by ``curl --parallel`` (a C client, so the
    load generator does not eat the cores the hub needs; a Python asyncio client topped out at
    ~70 requests/s here). Every downloaded file is then checked against its SHA-256."""
    if not shutil.which("curl"):
        raise RuntimeError("the pull benchmark needs curl (>= 7.66 for --parallel)")
    # pulled files go to RAM (/dev/shm) when there is one: the clients' disk writes would
    # otherwise compete with the hub for the same two cores
    shm = Path("/dev/shm")
    out_dir = Path(tempfile.mkdtemp(prefix=f"pulls-{concurrency}-", dir=shm if shm.is_dir() else tmp))
    cfg = tmp / f"curl-{concurrency}.cfg"
    want = {}
    blocks = []
    for i in range(n):
        e = entries[i % len(entries)]
        want[i] = e.weights_sha256
        blocks.append(
            f'url = "{url}/v1/federations/{fed}/generators/{e.id}/weights"\n'
            f'output = "{out_dir / str(i)}"\n'
            f'header = "Authorization: Bearer {tokens[i % len(tokens)]}"\n'
            'write-out = "%{http_code} %{time_total}\\n"\n'
        )
    # "next" between transfers: per-transfer options (else curl sends every header on every
    # request); none after the last one (an empty transfer aborts the whole run)
    cfg.write_text("next\n".join(blocks))
    # warm-up: open connections, fill caches
    subprocess.run(
        ["curl", "-s", "--parallel", "--parallel-max", str(concurrency), "-K", str(cfg), "-o", "/dev/null"],
        capture_output=True,
        check=False,
    )
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            "curl",
            "-s",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            str(concurrency),
            "-K",
            str(cfg),
            "-w",
            "%{http_code} %{time_total}\n",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    rows = [line.split() for line in res.stdout.splitlines() if line.strip()]
    lat = [float(r[1]) for r in rows if r[0] == "200"]
    errors = [r[0] for r in rows if r[0] != "200"] + ["missing"] * (n - len(rows))
    bad_hash = sum(
        1
        for i, h in want.items()
        if not (out_dir / str(i)).exists() or hashlib.sha256((out_dir / str(i)).read_bytes()).hexdigest() != h
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "pulls": n,
        "concurrency": concurrency,
        "errors": len(errors) + bad_hash,
        "hash_mismatches": bad_hash,
        "error_samples": errors[:3],
        "wall_s": wall,
        "pulls_per_s": n / wall,
        "p50_ms": 1e3 * pct(lat, 50),
        "p99_ms": 1e3 * pct(lat, 99),
        "max_ms": 1e3 * max(lat, default=0),
        "mb_per_s": sum(e.size for e in entries) / len(entries) * n / wall / 1e6,
    }


def hub_rss(procs: list[subprocess.Popen]) -> list[dict[str, float]]:
    """VmRSS and VmHWM (MB) of each serving process (the checker worker is not one of them)."""
    out = []
    for p in procs:
        fields = {}
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(line.split()[1]) / 1024
        out.append(fields)
    return out


def scenario(
    name: str,
    db_url: str,
    processes: int,
    schema: Schema,
    spec: DecoderSpec,
    silos: int,
    concurrency: list[int],
    pulls_n: int,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp,
        run_hub(db_url, Path(tmp) / "store", processes=processes, rate_per_s=50.0, rate_burst=400) as hub,
    ):
        adm = HubAdmin(hub.url, hub.admin_token)
        adm.create_federation(
            "bench", schema, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0
        )
        tokens = [adm.add_silo("bench", f"silo-{i:02d}") for i in range(silos)]
        rss = {"at rest": hub_rss(hub.procs)}
        push = push_load(hub.url, tokens, schema, spec)
        rss["after pushes"] = hub_rss(hub.procs)
        print(f"[{name}] push: {push}", flush=True)
        entries = HubClient(hub.url, tokens[0]).list_pool()
        pulls = [pull_load(hub.url, "bench", tokens, entries, c, pulls_n, Path(tmp)) for c in concurrency]
        rss["after pulls"] = hub_rss(hub.procs)
        print(f"[{name}] serving-process memory (VmRSS / VmHWM MB per process): {rss}", flush=True)
        adm.close()
    size = entries[0].size if entries else 0
    return {
        "name": name,
        "processes": processes,
        "generator_bytes": size,
        "pool_generators": len(entries),
        "push": push,
        "pull": pulls,
        "serving_rss_mb": rss,
    }


def communication(silos: int, rounds_assumed: list[int]) -> dict[str, Any]:
    data = load_dataset("adult", seed=0)
    schema = data.schema
    spec = VAEConfig().decoder_spec(TableEncoder(schema).layout())
    with (
        tempfile.TemporaryDirectory(prefix="bench-hub-comm-") as tmp,
        run_hub(f"sqlite:///{tmp}/hub.db", Path(tmp) / "store") as hub,
    ):
        adm = HubAdmin(hub.url, hub.admin_token)
        adm.create_federation(
            "adult", schema, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=1.5
        )
        clients = [HubClient(hub.url, adm.add_silo("adult", f"silo-{i:02d}")) for i in range(silos)]
        for i, c in enumerate(clients):
            c.subscribe()
            c.push(make_set(schema, spec, epsilon=1.0, seed=i))
        sent0 = [c.bytes_sent for c in clients]
        recv0 = [c.bytes_received for c in clients]
        for c in clients:
            c.pull()
        pushed = [c.bytes_sent for c in clients]
        pulled = [c.bytes_received - r for c, r in zip(clients, recv0, strict=True)]
        subscribed = recv0
        n_gen = len(clients[0].list_pool())
        for c in clients:
            c.close()
        adm.close()
    d = spec.output_dim
    k = len(schema.classes)
    model_bytes = 8 * (d * k + k)  # FedAvg params as in fedsynth.evaluation.fedavg: W (d×k) + b (k), float64
    weights_bytes = 4 * sum(int(np.prod(s)) for s in _shapes(spec))
    return {
        "dataset": "adult",
        "silos": silos,
        "decoder_spec": {"latent_dim": spec.latent_dim, "hidden": list(spec.hidden), "output_dim": d},
        "decoder_weights_bytes": weights_bytes,
        "pool_generators": n_gen,
        "sgde_per_silo": {
            "pushed_bytes": statistics.mean(pushed),
            "pulled_bytes": statistics.mean(pulled),
            "subscribe_bytes": statistics.mean(subscribed),
            "requests_sent_bytes": statistics.mean(sent0),
        },
        "fedavg_per_silo": {
            "model_bytes": model_bytes,
            "per_round_sent": model_bytes,
            "per_round_received": model_bytes,
            "by_rounds": {
                str(r): {"sent": r * model_bytes, "received": r * model_bytes} for r in rounds_assumed
            },
        },
    }


def _shapes(spec: DecoderSpec) -> list[tuple[int, ...]]:
    from fedsynth.generators.vae.nets import expected_tensors

    return list(expected_tensors(spec).values())


def fresh_pg(base_url: str) -> tuple[str, str]:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(base_url)
    name = "hubbench_" + secrets.token_hex(4)
    with psycopg.connect(
        u.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return u.set(database=name).render_as_string(hide_password=False), name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--silos", type=int, default=20)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[200, 20])
    ap.add_argument("--pulls", type=int, default=1000, help="measured pulls per concurrency level")
    ap.add_argument("--sqlite-processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pg-url", default=os.environ.get("FEDSYNTH_TEST_PG_URL"))
    ap.add_argument("--skip-comm", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    schema = load_dataset("adult", seed=0).schema
    spec = spec_near(schema, 100_000)
    out: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "scenarios": [],
    }
    for n_proc in a.sqlite_processes:
        with tempfile.TemporaryDirectory(prefix="bench-hub-db-") as tmp:
            out["scenarios"].append(
                scenario(
                    f"sqlite, {n_proc} process{'es' if n_proc > 1 else ''}",
                    f"sqlite:///{tmp}/hub.db",
                    n_proc,
                    schema,
                    spec,
                    a.silos,
                    a.concurrency,
                    a.pulls,
                )
            )
    if a.pg_url:
        url, _name = fresh_pg(a.pg_url)
        out["scenarios"].append(
            scenario("postgresql, 2 processes", url, 2, schema, spec, a.silos, a.concurrency, a.pulls)
        )
    else:
        print("(no --pg-url / FEDSYNTH_TEST_PG_URL: PostgreSQL scenario skipped)")
    if not a.skip_comm:
        out["communication"] = communication(a.silos, [10, 30, 60])

    print(
        f"\ngenerator ≈ {out['scenarios'][0]['generator_bytes'] / 1000:.0f} KB; "
        f"{a.silos} silos; load generator on the same machine"
    )
    print(
        f"{'scenario':26} {'push wall s':>11} {'push p99 ms':>11} {'push err':>8} | {'conc':>4} {'pulls':>6} "
        f"{'pulls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}"
    )
    for sc in out["scenarios"]:
        p = sc["push"]
        for i, pl in enumerate(sc["pull"]):
            head = (
                f"{sc['name']:26} {p['wall_s']:11.2f} {p['p99_ms']:11.0f} {p['errors']:8d}"
                if i == 0
                else " " * 59
            )
            print(
                f"{head} | {pl['concurrency']:4d} {pl['pulls']:6d} {pl['pulls_per_s']:8.0f} "
                f"{pl['p50_ms']:7.1f} {pl['p99_ms']:7.1f} {pl['errors']:4d}"
            )
    if "communication" in out:
        c = out["communication"]
        s, f = c["sgde_per_silo"], c["fedavg_per_silo"]
        print(
            f"\nper-silo communication, Adult, {c['silos']} silos (decoder {c['decoder_weights_bytes']} B, "
            f"pool of {c['pool_generators']}):"
        )
        print(
            f"  SGDE (once): pushed {s['pushed_bytes'] / 1e3:.1f} KB, pulled {s['pulled_bytes'] / 1e3:.1f} KB"
        )
        for r, v in f["by_rounds"].items():
            print(
                f"  FedAvg logistic regression, {r:>2} rounds: sent {v['sent'] / 1e3:.1f} KB, received "
                f"{v['received'] / 1e3:.1f} KB  ({f['model_bytes']} B per model)"
            )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
