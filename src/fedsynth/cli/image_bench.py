"""``fedsynth bench sgde --dataset mnist|fashion_mnist``: the SGDE experiment on images.

A thin adapter over :mod:`fedsynth.evaluation.image_experiment` (the scenarios, the CNN, FedAvg
through Flower) that adds progress bars, the JSON layout of the tabular benchmark and the PNGs:
the scenario bars and a sample grid per class (the paper's Figure 3) from silo 0's generators
and, for a federation-level family, from the federation's generator.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

from fedsynth.cli.common import StageProgress, progress

#: the paper's Table I image rows (evaluated on local data, VGG16 features pretrained on ImageNet)
PAPER_IMAGES: dict[str, dict[str, dict[str, float]]] = {
    "mnist": {
        "local": {"accuracy": 98.20, "f1": 98.16, "auc": 99.02},
        "federated": {"accuracy": 99.40, "f1": 99.39, "auc": 99.66},
        "synthetic": {"accuracy": 98.72, "f1": 98.71, "auc": 99.31},
    },
    "fashion_mnist": {
        "local": {"accuracy": 88.47, "f1": 88.32, "auc": 93.87},
        "federated": {"accuracy": 91.75, "f1": 91.65, "auc": 95.76},
        "synthetic": {"accuracy": 89.30, "f1": 89.22, "auc": 94.76},
    },
}


def run_image_bench(
    dataset: str,
    *,
    silos: int,
    seeds: int,
    epsilon: float,
    eval_silos: int | None,
    generators: list[str],
    gen_overrides: dict[str, Any] | None,
    device: str,
    per_class: int,
    grid_dir: Path | None,
) -> list[dict[str, Any]]:
    """Run ``seeds`` seeds per family; one result (the tabular benchmark's JSON layout plus image
    fields) per family. The families share each seed's silo split and its baselines (Local, FedAvg,
    pooled real: they do not depend on the generator), computed once."""
    import dataclasses

    import torch

    from fedsynth.cli.sgde import family_config
    from fedsynth.data.images import load_images
    from fedsynth.evaluation.image_experiment import ImageSGDEConfig, aggregate, run_image_seed
    from fedsynth.evaluation.image_plots import sample_grid
    from fedsynth.generators.base import GeneratorSet, get_family, is_federation_family

    if not generators:
        raise ValueError("give at least one generator family")
    fams = [get_family(g) for g in generators]
    if gen_overrides and len(fams) > 1:
        raise ValueError("--set applies to one family: run the families separately to override settings")
    data = load_images(dataset)
    cfgs = []
    for family in fams:
        gen_cfg = family_config(family, dataset, gen_overrides)
        if hasattr(gen_cfg, "device"):
            gen_cfg = dataclasses.replace(gen_cfg, device=device)
        cfgs.append(
            ImageSGDEConfig(
                silos=silos,
                fraction=1.0 / silos,
                epsilon=epsilon,
                generator=family.kind,
                gen_config=gen_cfg,
                synthetic_per_class=per_class,
                eval_silos=eval_silos,
                device=device,
            )
        )
    runs: list[list[dict[str, Any]]] = [[] for _ in fams]
    grids: list[list[str]] = [[] for _ in fams]
    t_all = time.perf_counter()
    seconds = [0.0 for _ in fams]
    with progress() as prog:
        for seed in range(seeds):
            shared: dict[Any, Any] = {}  # this seed's baselines, computed by the first family
            for j, (family, cfg) in enumerate(zip(fams, cfgs, strict=True)):
                cb = StageProgress(prog, f"seed {seed} {family.name}")

                def on_sets(sets: list[GeneratorSet], _s: int = seed, _f: Any = family, _j: int = j) -> None:
                    if grid_dir is None or _s != 0:
                        return
                    grid_dir.mkdir(parents=True, exist_ok=True)
                    who = "the federation" if is_federation_family(_f) else "silo 0"
                    p = sample_grid(
                        sets[0],
                        data.schema,
                        grid_dir / f"samples_{_f.name}_{dataset}.png",
                        f"{dataset}: {who}, {_f.kind}, ε = {epsilon:g}",
                        class_names=data.class_names,
                        seed=0,
                    )
                    grids[_j].append(str(p))

                t0 = time.perf_counter()
                runs[j].append(run_image_seed(data, cfg, seed, progress=cb, on_sets=on_sets, shared=shared))
                seconds[j] += time.perf_counter() - t0
    cuda = torch.cuda.is_available()
    out = []
    for j, family in enumerate(fams):
        agg, agg_sd = aggregate(runs[j])
        out.append(
            {
                "dataset": dataset,
                "generator": family.kind,
                "generator_name": family.name,
                "silos": silos,
                "epsilon_target": epsilon,
                "epsilon_spent_max": max(r["epsilon_spent_max"] for r in runs[j]),
                "delta": max(r["delta_max"] for r in runs[j]),
                "seeds": seeds,
                "synthetic_per_class": per_class,
                "scenarios": agg,
                "scenarios_sd": agg_sd,
                "per_seed": runs[j],
                "sample_grids": grids[j],
                "shared_baselines_with": [f.kind for f in fams if f is not family],
                "timing": {
                    # the first family also paid for the shared baselines
                    "total_s": seconds[j],
                    "all_families_s": time.perf_counter() - t_all,
                    "per_seed_s": seconds[j] / seeds,
                    "generators_per_silo_s": sum(r["timing"]["generators_per_silo_s"] for r in runs[j])
                    / seeds,
                },
                "artifact_bytes_per_silo": sum(r["artifact_bytes_per_silo"] for r in runs[j]) / seeds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "device": device,
                    "cuda": torch.cuda.get_device_name(0) if cuda else None,
                    "torch_threads": torch.get_num_threads(),
                },
            }
        )
    return out


__all__ = ["PAPER_IMAGES", "run_image_bench"]
