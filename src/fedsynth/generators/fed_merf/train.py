"""Server side of fed-merf: fit G(z, c) to the released noisy mean embeddings (post-processing).

DP-MERF's objective (Harder, Adamczewski & Park 2021) with class-conditional embeddings: given the
noisy per-class mean embeddings m̃_c (one row of ``targets`` per class),

    L(G) = (1/C) Σ_c ‖ (1/B) Σ_b φ(G(z_b, c)) − m̃_c ‖²,   z_b ~ N(0, I),

minimised with Adam for a fixed number of steps on B fresh latent draws per class and step. φ is
the same public feature map the silos used (:class:`~.features.FeatureMap`), in float32 torch.
Categorical blocks enter φ as their softmax probabilities (default: exact in expectation for the
sum-kernel block, which is linear in a one-hot) or, with ``hard``, through a straight-through
Gumbel-softmax whose forward pass sees exact one-hot rows as sampling produces (screened
slightly worse on adult, noisier gradients). The data enter only through ``targets``; everything here is
post-processing of the release and costs no privacy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fedsynth.generators.fed_merf.features import FeatureMap
from fedsynth.generators.fed_merf.nets import MerfNet, MerfSpec, build_net
from fedsynth.generators.torchnn import LossTrace


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 256  # latent draws per class and step
    lr: float = 2e-3
    hard: bool = False  # True: straight-through Gumbel-softmax for categorical blocks
    tau: float = 1.0


@dataclass
class TrainReport:
    seconds: float
    final_loss: float
    losses: list[float] = field(default_factory=list)


def train_generator(
    targets: np.ndarray,
    spec: MerfSpec,
    fmap: FeatureMap,
    cfg: TrainConfig,
    *,
    seed: int = 0,
) -> tuple[MerfNet, TrainReport]:
    """Fit a generator to the (C, D) mean embeddings ``targets``; deterministic given ``seed``."""
    t0 = time.perf_counter()
    n_classes = targets.shape[0]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_net(spec, fmap.layout, n_classes, fmap.image)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    # a cosine decay to 5 % of the rate: the last steps average out the latent-draw noise
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / max(cfg.steps, 1), 1.0)))
    )
    tgt = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    codes = torch.arange(n_classes).repeat_interleave(cfg.batch_size)
    trace = LossTrace(cfg.steps)
    net.train()
    for step in range(cfg.steps):
        z = torch.randn(len(codes), spec.latent, generator=gen)
        x = net.decode(net(z, codes), hard=cfg.hard, tau=cfg.tau, generator=gen)
        means = fmap.torch_embed(x).view(n_classes, cfg.batch_size, -1).mean(dim=1)
        loss = ((means - tgt) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        trace.add(step, float(loss.detach()))
    net.eval()
    return net, TrainReport(time.perf_counter() - t0, trace.final, trace.losses)


__all__ = ["TrainConfig", "TrainReport", "train_generator"]
