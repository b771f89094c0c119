"""DP vs non-private training time of one Adult silo's class generators (one CPU thread).

Prints a table and writes JSON. Both runs use the same model, data, batch size and number of
steps; the ratio is measured in one process, alternating DP / non-DP `--repeats` times, so
machine noise affects both alike.

    python bench/bench_dp_speed.py --rows 2200 --repeats 3 --json out/dp_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fedsynth.data.datasets import load_dataset
from fedsynth.data.encoders import TableEncoder
from fedsynth.generators.vae.train import preset_for, train_class_vae
from fedsynth.privacy.dpsgd import default_delta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    b = load_dataset("adult")
    silo = b.train.iloc[np.random.default_rng(0).choice(len(b.train), args.rows, replace=False)]
    enc = TableEncoder(b.schema)
    cfg = preset_for("adult")
    spec = cfg.decoder_spec(enc.layout())
    per_class = [(c, enc.transform(silo[silo[b.schema.target] == c])) for c in b.schema.classes]
    times: dict[str, list[float]] = {"dp": [], "non_dp": []}
    steps = {}
    for rep in range(args.repeats):
        for mode in ("dp", "non_dp"):
            t0 = time.perf_counter()
            for c, x in per_class:
                _, r = train_class_vae(
                    x,
                    spec,
                    cfg,
                    class_label=c,
                    seed=rep,
                    epsilon=args.epsilon if mode == "dp" else None,
                    delta=default_delta(len(x)) if mode == "dp" else None,
                )
                if r.account:
                    steps[c] = r.account.steps
            times[mode].append(time.perf_counter() - t0)
    dp, nd = statistics.median(times["dp"]), statistics.median(times["non_dp"])
    res = {
        "rows": args.rows,
        "classes": {c: len(x) for c, x in per_class},
        "steps": steps,
        "dp_seconds_median": dp,
        "non_dp_seconds_median": nd,
        "ratio": dp / nd,
        "all": times,
        "torch_threads": torch.get_num_threads(),
        "config": {k: str(v) for k, v in cfg.__dict__.items()},
    }
    print(f"{'rows':>6} {'DP s':>8} {'non-DP s':>9} {'ratio':>6}")
    print(f"{args.rows:>6} {dp:>8.2f} {nd:>9.2f} {dp / nd:>6.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
