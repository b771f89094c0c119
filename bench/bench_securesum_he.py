"""SecAgg+ vs homomorphic encryption (BFV) as the secure sum: cost side by side (issue 15).

    python bench/bench_securesum_he.py --json out/bench_securesum_he.json

For 10 / 100 clients × 6,500 / 65,000-entry int64 vectors (values in [0, 1000]: counts), each
setting runs in a fresh subprocess (so the peak RSS is that setting's own) and reports: bytes per
client both ways (from the serialised messages), seconds per client (HE: encryption of its
vector; SecAgg+: the whole in-process protocol divided by the clients — its stages interleave),
server seconds (HE: aggregator parse + add, and the decryptor), the round's wall time, peak RSS,
and the dropout cases: one client lost before uploading (HE) / before key sharing (SecAgg+): left
out of the sum; one lost after uploading (HE: nothing to do; SecAgg+: lost in the unmasking stage,
the others' Shamir shares stand in for it): in the sum.
Every sum is checked against the plain int64 sum; the run fails otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CLIENTS = (10, 100)
SIZES = (6500, 65_000)


def _vectors(clients: int, size: int) -> dict[int, np.ndarray]:
    return {c: np.random.default_rng([7, c]).integers(0, 1001, size, dtype=np.int64) for c in range(clients)}


def one(backend: str, clients: int, size: int, drop: str) -> dict[str, Any]:
    """One setting in this process: ``drop`` is none | before | after."""
    from fedsynth.secagg.secure_sum import SecAggPlusSum, plain_sum

    vecs = _vectors(clients, size)
    lost = {0} if drop != "none" else set()
    want = plain_sum({k: v for k, v in vecs.items() if not (drop == "before" and k in lost)}).total
    t0 = time.perf_counter()
    row: dict[str, Any] = {"backend": backend, "clients": clients, "size": size, "drop": drop}
    if backend == "he":
        from fedsynth.secagg.he_sum import Decryptor, HESum

        tk = time.perf_counter()
        dec = Decryptor()
        row["keygen_s"] = time.perf_counter() - tk
        ss = HESum(
            decryptor=dec,
            bound=1000,
            drop_before_upload=lost if drop == "before" else (),
            drop_after_upload=lost if drop == "after" else (),
        )
        t0 = time.perf_counter()
        res = ss(vecs)
        row["client_s"] = float(np.mean(list(ss.last_timing["client_s"].values())))
        row["aggregator_s"] = ss.last_timing["aggregator_s"]
        row["decryptor_s"] = ss.last_timing["decryptor_s"]
    else:
        # SecAgg+ proper beyond 10 clients: each client shares keys with 10 ring neighbours
        # (classic all-pairs SecAgg costs O(n²): 48 s per 6,500-entry round at 100 clients)
        shares = None if clients <= 10 else 10
        row["num_shares"] = shares or clients
        sa = SecAggPlusSum(bound=2**53, seed=0, num_shares=shares)
        # before uploading = before key sharing (left out); after uploading its masked vector = lost
        # in the unmasking stage (in the sum: the others' Shamir shares stand in for it)
        kw: dict[str, Any] = {}
        if drop == "before":
            kw["drop_before_keys"] = lost
        elif drop == "after":
            kw["drop_in_unmask"] = lost
        res = sa(vecs, **kw)
    row["round_s"] = time.perf_counter() - t0
    if backend != "he":
        row["client_s"] = row["round_s"] / clients
    if not np.array_equal(res.total, want):
        raise SystemExit(
            f"{backend} sum differs from the plain sum ({clients} clients, {size} entries, drop {drop})"
        )
    row["survivors"] = len(res.survivors)
    row["kb_sent_per_client"] = float(np.mean(list(res.bytes_sent.values()))) / 1e3
    row["kb_received_per_client"] = float(np.mean(list(res.bytes_received.values()))) / 1e3
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path("bench_securesum_he.json"))
    ap.add_argument("--one", nargs=4, metavar=("BACKEND", "CLIENTS", "SIZE", "DROP"), help=argparse.SUPPRESS)
    ap.add_argument("--clients", type=int, nargs="*", default=list(CLIENTS))
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = ap.parse_args()
    if args.one:
        b, c, s, d = args.one
        print(json.dumps(one(b, int(c), int(s), d)))
        return
    rows = []
    for clients in args.clients:
        for size in args.sizes:
            for backend in ("secagg", "he"):
                for drop in ("none", "before", "after"):
                    cmd = [sys.executable, __file__, "--one", backend, str(clients), str(size), drop]
                    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if r.returncode:
                        raise SystemExit(r.stderr[-2000:])
                    rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                    x = rows[-1]
                    print(
                        f"{backend:>6} {clients:>4} clients {size:>6} entries drop {drop:<6} "
                        f"round {x['round_s']:7.2f} s  client {x['client_s']:.3f} s  "
                        f"sent {x['kb_sent_per_client']:8.1f} KB  "
                        f"recv {x['kb_received_per_client']:7.1f} KB  "
                        f"RSS {x['peak_rss_mb']:.0f} MB",
                        flush=True,
                    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
