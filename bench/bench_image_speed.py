"""DP vs non-private training throughput of one dp-conv-vae class VAE (images/s, and the ratio).

Both runs train the same model (the dataset's preset) on the same images with the same batch size
and number of steps; DP adds Opacus per-sample gradients, clipping, noise and the accountant. The
modes alternate ``--repeats`` times in one process so machine noise affects both alike. Throughput
counts images processed (steps × expected batch). Prints a table and writes JSON (``--out``).

    python bench/bench_image_speed.py --images 300 --repeats 3 --out out/image_speed.json
    python bench/bench_image_speed.py --device cuda --out out/image_speed_cuda.json
    python bench/bench_image_speed.py --random   # random images: no dataset files needed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fedsynth.generators.conv_vae.train import preset_for, resolve_device, train_class_conv_vae
from fedsynth.privacy.target import default_delta


def class_images(dataset: str, n: int, random: bool) -> np.ndarray:
    if random:
        return np.random.default_rng(0).integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    from fedsynth.data.images import load_images

    d = load_images(dataset)
    return d.train_x[d.train_y == 3][:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    ap.add_argument("--images", type=int, default=300, help="images of the class (one silo's share)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epsilon", type=float, default=1.5)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--random", action="store_true", help="random images instead of the dataset")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    cfg = dataclasses.replace(preset_for(args.dataset), device=str(dev))
    x = class_images(args.dataset, args.images, args.random)
    spec = cfg.decoder_spec((int(x.shape[1]), int(x.shape[2]), int(x.shape[3])))
    delta = default_delta(len(x))
    times: dict[str, list[float]] = {"dp": [], "non_dp": []}
    steps, batch, sigma = 0, 0.0, 0.0
    train_class_conv_vae(
        x, spec, dataclasses.replace(cfg, max_steps=3, min_steps=3), class_label="3", epsilon=None, delta=None
    )  # warm-up (kernels, CUDA context)
    for rep in range(args.repeats):
        for mode in ("dp", "non_dp"):
            dp = mode == "dp"
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            _, r = train_class_conv_vae(
                x,
                spec,
                cfg,
                class_label="3",
                seed=rep,
                epsilon=args.epsilon if dp else None,
                delta=delta if dp else None,
            )
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[mode].append(time.perf_counter() - t0)
            if r.account:
                steps, batch, sigma = (
                    r.account.steps,
                    r.account.sample_rate * len(x),
                    r.account.noise_multiplier,
                )
    dp_s, nd_s = statistics.median(times["dp"]), statistics.median(times["non_dp"])
    n_img = steps * batch
    res = {
        "dataset": "random" if args.random else args.dataset,
        "device": str(dev),
        "images": len(x),
        "steps": steps,
        "expected_batch": batch,
        "noise_multiplier": sigma,
        "epsilon": args.epsilon,
        "delta": delta,
        "dp_seconds_median": dp_s,
        "non_dp_seconds_median": nd_s,
        "dp_images_per_s": n_img / dp_s,
        "non_dp_images_per_s": n_img / nd_s,
        "ratio": dp_s / nd_s,
        "all": times,
        "torch_threads": torch.get_num_threads(),
        "config": {k: str(v) for k, v in cfg.__dict__.items()},
    }
    print(
        f"{'device':>6} {'images':>6} {'steps':>5} {'DP s':>7} {'non-DP s':>8} "
        f"{'DP img/s':>9} {'non-DP img/s':>12} {'ratio':>6}"
    )
    print(
        f"{dev!s:>6} {len(x):>6} {steps:>5} {dp_s:>7.2f} {nd_s:>8.2f} {n_img / dp_s:>9.0f} "
        f"{n_img / nd_s:>12.0f} {dp_s / nd_s:>6.2f}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
