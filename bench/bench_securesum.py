"""Secure-sum cost: plain sum vs in-process SecAgg+ vs Flower SecAgg+ (in-process grid, ray simulation).

    python bench/bench_securesum.py --clients 10 --size 10000 --repeats 5 --json bench_securesum.json
    python bench/bench_securesum.py --simulation   # also the ray simulation engine (slow start-up)

Prints one row per setting (median seconds per round, bytes sent / received per client) and writes
JSON. Every secure result is checked against the plain int64 sum (the run fails otherwise).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.federated.local import run_in_process
from fedsynth.federated.secure_rounds import ScriptedDriver, SumRequest, make_client_app, make_server_app
from fedsynth.secagg.secure_sum import SecAggPlusSum, plain_sum


def _vectors(clients: int, size: int, seed: int) -> dict[int, np.ndarray]:
    return {
        c: np.random.default_rng([seed, c]).integers(0, 100_000, size, dtype=np.int64) for c in range(clients)
    }


def _row(name: str, secs: list[float], sent: dict[int, int], recv: dict[int, int], **extra: Any) -> dict:
    return {
        "setting": name,
        "seconds_per_round_median": statistics.median(secs),
        "seconds_per_round_min": min(secs),
        "rounds": len(secs),
        "client_bytes_sent_mean": float(np.mean(list(sent.values()))) if sent else 0.0,
        "client_bytes_received_mean": float(np.mean(list(recv.values()))) if recv else 0.0,
        **extra,
    }


def bench_inprocess(clients: int, size: int, repeats: int) -> list[dict]:
    rows = []
    vecs = _vectors(clients, size, 0)
    expected = plain_sum(vecs).total
    secs = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = plain_sum(vecs)
        secs.append(time.perf_counter() - t)
    rows.append(_row("plain sum (no security)", secs, res.bytes_sent, res.bytes_received, size=size))
    for label, kw in [
        ("in-process SecAgg+ (all shares)", {}),
        ("in-process SecAgg+ (1 dropped after keys)", {}),
    ]:
        ss = SecAggPlusSum(seed=0)
        drop = {0} if "dropped" in label else set()
        secs = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = ss(vecs, drop_after_keys=drop)
            secs.append(time.perf_counter() - t)
            want = expected - (vecs[0] if drop else 0)
            assert np.array_equal(res.total, want), "secure sum differs from the plain sum"
        rows.append(_row(label, secs, res.bytes_sent, res.bytes_received, size=size, **kw))
    return rows


def bench_flaim_like(clients: int, size: int, rounds: int) -> dict:
    """A whole federated run's worth of sums (one per round) through the in-process SecAgg+."""
    ss = SecAggPlusSum(seed=1)
    t = time.perf_counter()
    for r in range(rounds):
        vecs = _vectors(clients, size, 100 + r)
        assert np.array_equal(ss(vecs).total, plain_sum(vecs).total)
    total = time.perf_counter() - t
    return {"setting": f"in-process SecAgg+, {rounds} rounds", "total_seconds": total, "size": size}


def _flower_driver(clients: int, size: int, rounds: int) -> tuple[ScriptedDriver, Any]:
    driver = ScriptedDriver([SumRequest({"round": r}, bound=100_000) for r in range(rounds)])
    stamps: list[float] = []
    orig = driver.next_request

    def next_request() -> SumRequest | None:
        stamps.append(time.perf_counter())
        return orig()

    driver.next_request = next_request  # type: ignore[method-assign]

    def client_factory(context: Any) -> Any:
        return lambda pid, payload: _vectors(clients, size, 100 + int(payload["round"]))[pid]

    return driver, (stamps, client_factory)


def bench_flower(clients: int, size: int, rounds: int, simulation: bool) -> dict:
    driver, (stamps, client_factory) = _flower_driver(clients, size, rounds)
    t0 = time.perf_counter()
    server, client = make_server_app(lambda c: driver), make_client_app(client_factory)
    if simulation:
        from flwr.simulation import run_simulation

        run_simulation(
            server,
            client,
            clients,
            backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
        )
        name = "Flower SecAgg+ on the simulation engine (ray)"
    else:
        run_in_process(server, client, clients)
        name = "Flower SecAgg+ on the in-process grid"
    wall = time.perf_counter() - t0
    for r, res in enumerate(driver.results):
        assert np.array_equal(res.total, plain_sum(_vectors(clients, size, 100 + r)).total)
    secs = [b - a for a, b in itertools.pairwise(stamps)]
    last = driver.results[-1]
    return _row(
        name,
        secs,
        last.bytes_sent,
        last.bytes_received,
        size=size,
        wall_seconds_including_startup=wall,
        startup_seconds=stamps[0] - t0,
    )


def bench_flaim(method: str, clients: int, participation: float, rounds: int, simulation: bool) -> list[dict]:
    """One FLAIM run on Adult (ε=1, IID split): plain sum vs in-process SecAgg+ vs Flower (grid / ray)."""
    import tempfile

    from fedsynth.federated import flaim_methods as fm
    from fedsynth.flaim.data import load_flaim_data
    from fedsynth.flaim.runner import run

    data = load_flaim_data("adult", seed=0)
    kw = dict(epsilon=1.0, clients=clients, participation=participation, rounds=rounds, split="iid", seed=0)
    rows = []
    ref_selected = None
    for label, ssum in [("runner + plain sum", plain_sum), ("runner + in-process SecAgg+", SecAggPlusSum())]:
        t = time.perf_counter()
        r = run(data, method, secure_sum=ssum, evaluate=False, **kw)  # type: ignore[arg-type]
        rows.append(
            {
                "setting": f"{method}: {label}",
                "seconds": time.perf_counter() - t,
                "client_bytes_sent": r.client_bytes_sent,
                "client_bytes_received": r.client_bytes_received,
                "selected": [list(q) for q in r.selected],
            }
        )
        ref_selected = ref_selected or rows[-1]["selected"]
    engines = ["grid"] + (["ray"] if simulation else [])
    for engine in engines:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {
                "method": method,
                "dataset": "adult",
                "out": f"{tmp}/r.json",
                "evaluate": False,
                "max-client-rows": len(data.train),
                "secret-client-randomness": False,  # same draws as the runner: selections comparable
                **{k: v for k, v in kw.items()},
            }
            t = time.perf_counter()
            if engine == "grid":
                run_in_process(fm.server_app, fm.client_app, clients, run_config=cfg)
            else:
                from flwr.simulation import run_simulation

                server, client = fm.make_apps(cfg)  # run_simulation passes no run config
                run_simulation(
                    server,
                    client,
                    clients,
                    backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
                )
            secs = time.perf_counter() - t
            rep = json.loads(Path(cfg["out"]).read_text())
        rows.append(
            {
                "setting": f"{method}: Flower SecAgg+ ({'in-process grid' if engine == 'grid' else 'ray'})",
                "seconds": secs,
                "client_bytes_sent": rep["client_bytes_sent"],
                "client_bytes_received": rep["client_bytes_received"],
                "selected": rep["selected"],
            }
        )
    for r in rows:
        r["same_selection_as_plain"] = r["selected"] == ref_selected
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--big-size", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--simulation", action="store_true", help="also run on the ray simulation engine")
    ap.add_argument("--json", type=Path, default=Path("bench_securesum.json"))
    ap.add_argument("--flaim", default="", help="also time one FLAIM run on Adult with this method")
    ap.add_argument("--flaim-only", action="store_true", help="skip the secure-sum micro-benchmarks")
    ap.add_argument("--flaim-clients", type=int, default=20)
    ap.add_argument("--flaim-participation", type=float, default=0.5)
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)

    rows: list[dict] = []
    flaim: dict = {}
    if not args.flaim_only:
        rows = bench_inprocess(args.clients, args.size, args.repeats)
        rows += bench_inprocess(args.clients, args.big_size, max(1, args.repeats // 2))[1:2]
        flaim = bench_flaim_like(args.clients, args.size, args.rounds)
        rows.append(bench_flower(args.clients, args.size, 3, simulation=False))
        rows.append(bench_flower(args.clients, args.big_size, 2, simulation=False))
        if args.simulation:
            rows.append(bench_flower(args.clients, args.size, 3, simulation=True))

    print(f"\n{args.clients} clients, int64 vectors; median seconds per round; bytes per client (mean)")
    print(f"{'setting':<50} {'entries':>8} {'s/round':>9} {'KB sent':>9} {'KB recv':>9}")
    for r in rows:
        print(
            f"{r['setting']:<50} {r['size']:>8} {r['seconds_per_round_median']:>9.3f} "
            f"{r['client_bytes_sent_mean'] / 1024:>9.1f} {r['client_bytes_received_mean'] / 1024:>9.1f}"
        )
        if "startup_seconds" in r:
            print(
                f"{'':<50} start-up {r['startup_seconds']:.1f} s, "
                f"wall {r['wall_seconds_including_startup']:.1f} s"
            )
    if flaim:
        print(f"{flaim['setting']} ({flaim['size']} entries): {flaim['total_seconds']:.2f} s total")
    flaim_rows = []
    if args.flaim:
        flaim_rows = bench_flaim(
            args.flaim, args.flaim_clients, args.flaim_participation, args.rounds, args.simulation
        )
        print(
            f"\nFLAIM {args.flaim} on Adult, eps=1, K={args.flaim_clients}, p={args.flaim_participation}, "
            f"T={args.rounds}, IID (no evaluation)"
        )
        print(f"{'setting':<50} {'seconds':>8} {'KB sent':>9} {'KB recv':>9} {'same selection':>15}")
        for r in flaim_rows:
            print(
                f"{r['setting']:<50} {r['seconds']:>8.1f} {r['client_bytes_sent'] / 1024:>9.1f} "
                f"{r['client_bytes_received'] / 1024:>9.1f} {r['same_selection_as_plain']!s:>15}"
            )
    out = {
        "clients": args.clients,
        "flaim": flaim_rows,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "rows": rows,
        "flaim_like_run": flaim,
    }
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
