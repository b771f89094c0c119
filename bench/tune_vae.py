"""Train-on-synthetic screening of VAE settings (how the per-dataset presets were chosen).

For each setting in GRID (a JSON list of VAEConfig overrides): the first NSILO of 20 equal
silos train DP generators at ε = 1, the pool samples 5,000 class-balanced rows, a logistic
regression trained on them is scored on the test split. One seed; a screen, not a result.

    python bench/tune_vae.py breast_cancer 20 '[{}, {"continuous": "bernoulli"}]'
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings

import torch

from fedsynth.data.datasets import load_dataset
from fedsynth.data.partition import equal_shares
from fedsynth.evaluation.classifiers import fit_proba
from fedsynth.evaluation.metrics import score
from fedsynth.generators.base import get_family
from fedsynth.generators.pool import GeneratorPool
from fedsynth.generators.vae.train import VAEConfig
from fedsynth.privacy.target import PrivacyTarget


def main(name: str, nsilo: int, grid: list[dict]) -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    b = load_dataset(name)
    s, tr, te = b.schema, b.train, b.test
    frames = [tr.iloc[p].reset_index(drop=True) for p in equal_shares(len(tr), 20, 0.05, seed=0)[:nsilo]]
    y = te[s.target].astype(str).to_numpy()
    for kw in grid:
        cfg = VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
        t = time.perf_counter()
        sets = [get_family("vae").fit(f, s, PrivacyTarget(1.0), cfg, seed=i) for i, f in enumerate(frames)]
        secs = (time.perf_counter() - t) / nsilo
        syn = GeneratorPool(s, [g for gs in sets for g in gs.as_loaded()]).sample(5000, seed=1)
        m = score(y, fit_proba(s, syn, [te], seed=0)[0], list(s.classes), b.positive)
        print(json.dumps(kw), {k: round(v, 2) for k, v in m.items()}, f"train {secs:.1f}s/silo", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
