"""Train-on-synthetic screening of a family's settings (how the per-dataset presets were chosen).

For each setting in GRID (a JSON list of config overrides, each with a ``"family"`` key — vae,
gan, pgm, diffusion; default gan): the first NSILO of 20 equal 5 % silos train DP generators at
ε = 1, the pool samples 5,000 class-balanced rows, a logistic regression trained on them is
scored on the test split. One seed; a screen, not a result. TUNE_EPS=1000 gives a near-non-private
reference (what the architecture and step budget can do at all). Tune only on these public
benchmark copies: tuning on private data would itself cost privacy.

    python bench/tune_family.py titanic 5 '[{"family": "vae"}, {"family": "pgm", "bins": 4}]'
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import replace

import torch

from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.data.datasets import load_dataset
from fedsynth.data.partition import equal_shares
from fedsynth.evaluation.classifiers import fit_proba
from fedsynth.evaluation.metrics import score
from fedsynth.generators.base import get_family
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget

EPS = float(os.environ.get("TUNE_EPS", "1.0"))  # target ε per silo


def main(name: str, nsilo: int, grid: list[dict], seed: int = 0) -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    b = load_dataset(name, seed=seed)
    s, tr, te = b.schema, b.train, b.test
    shares = equal_shares(len(tr), 20, 0.05, seed=seed)[:nsilo]
    frames = [tr.iloc[p].reset_index(drop=True) for p in shares]
    y = te[s.target].astype(str).to_numpy()
    for kw in grid:
        kw = dict(kw)
        fam = get_family(kw.pop("family", "gan"))
        cfg = fam.default_config(name)
        cfg = replace(cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
        t = time.perf_counter()
        sets = [fam.fit(f, s, PrivacyTarget(EPS), cfg, seed=seed * 100 + i) for i, f in enumerate(frames)]
        secs = (time.perf_counter() - t) / nsilo
        gens = [g for gs in sets for g in gs.as_loaded()]
        nbytes = sum(len(tensors_to_bytes(g.tensors(), g.card.family)) for g in gens) / nsilo
        eps = max(gs.epsilon for gs in sets)
        syn = GeneratorPool(s, gens).sample(5000, seed=1)
        m = score(y, fit_proba(s, syn, [te], seed=0)[0], list(s.classes), b.positive)
        print(
            fam.name,
            json.dumps(kw),
            {k: round(v, 2) for k, v in m.items()},
            f"train {secs:.2f}s/silo, {nbytes / 1024:.1f} KiB/silo, max ε {eps:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
