"""Our stratified junction-tree sampler vs mbi 2.0's ``synthetic_data`` on the same fitted models.

    python bench/bench_pgm_sampler.py --seeds 0 1 2 --draws 6

For each seed: central AIM on Adult (T = 10, ε = 1) once, then ``--draws`` synthetic tables of
training size from each sampler (ours stratified — ``PGM.synthetic`` —, ours i.i.d., and mbi's
``synthetic_data`` via ``PGM.model``, which imports JAX); workload L1 of each. Isolates the
sampler's share of the L1 from the fit's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fedsynth.flaim import aim
from fedsynth.flaim.data import load_flaim_data
from fedsynth.flaim.metrics import workload_l1
from fedsynth.flaim.sampling import TreeSampler
from fedsynth.flaim.workload import downward_closure, make_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out: dict[str, list[float]] = {"ours (stratified)": [], "ours (i.i.d.)": [], "mbi synthetic_data": []}
    for seed in args.seeds:
        data = load_flaim_data("adult", seed=seed)
        sizes, attrs = data.domain.sizes, data.domain.attrs
        wl = make_workload(attrs, "3way-64", target=data.domain.target, seed=seed)
        res = aim.run_aim(data.train, sizes, wl, epsilon=1.0, delta=1e-5, rounds=10, seed=seed)
        cands, n = downward_closure(wl, attrs), len(data.train)
        mrf = res.model.model
        for s in range(args.draws):
            out["ours (stratified)"].append(
                workload_l1(data.train, res.model.synthetic(n, 100 + s), sizes, cands)
            )
            iid = TreeSampler(res.model).sample(n, np.random.default_rng(100 + s))
            out["ours (i.i.d.)"].append(workload_l1(data.train, iid, sizes, cands))
            np.random.seed(100 + s)
            ds = mrf.synthetic_data(n)
            theirs = np.stack([np.asarray(ds.data[a]) for a in attrs], axis=1).astype(np.int64)
            out["mbi synthetic_data"].append(workload_l1(data.train, theirs, sizes, cands))
    print(f"workload L1 over {len(args.seeds)} fitted models × {args.draws} draws")
    for k, v in out.items():
        print(f"  {k:<20} mean {np.mean(v):.5f}  sd {np.std(v):.5f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
