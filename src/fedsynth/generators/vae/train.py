"""DP β-VAE generators (SGDE): one per (silo, class), trained with DP-Adam via Opacus.

Objective per record x (encoded by :class:`~fedsynth.data.encoders.TableEncoder`)::

    L(x) = Σ_categorical CE(softmax(d(z))_block, x_block)
           + Σ_continuous [ (x_j − sigmoid(μ_j(z)))² / (2 s_j(z)²) + log s_j(z) ]   (Gaussian; or BCE)
           + β · KL(q(z|x) ‖ N(0, I)),    z = μ(x) + σ(x)·ε

DP-SGD: every step samples each record independently with probability q = B/n (Poisson), clips
each record's gradient to norm C, adds N(0, σ²C²) and takes an Adam step. σ is calibrated before
training by :func:`fedsynth.privacy.dpsgd.calibrate_noise` for the target (ε, δ) over the planned
number of steps, and the ε reported afterwards comes from Opacus' RDP accountant, which records
every optimizer step actually taken (and is cross-checked against a fresh recomputation).

Only the decoder leaves the silo (see :mod:`.family`); the encoder is discarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsynth.generators.base import TooFewRowsError
from fedsynth.generators.torchnn import LossTrace
from fedsynth.generators.vae.nets import Decoder, DecoderSpec, build_decoder, mlp
from fedsynth.privacy.clipping import GhostClipper
from fedsynth.privacy.dpsgd import DPSGD, DPSGDAccount, check_epsilon_delta, plan_poisson


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 8
    hidden: tuple[int, ...] = (64, 64)
    beta: float = 1.0
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    max_grad_norm: float = 1.0
    negative_slope: float = 0.2
    accountant: str = "rdp"
    continuous: str = "gaussian"  # likelihood of continuous columns (see DecoderSpec)
    min_rows: int = 10  # below this a DP generator is pointless: skip the class
    max_steps: int = 1500  # cap on optimiser steps (keeps tiny-q runs fast)
    min_steps: int = 50  # small classes get more epochs so the model sees enough steps

    def decoder_spec(self, layout: list[dict[str, object]]) -> DecoderSpec:
        return DecoderSpec(
            latent_dim=self.latent_dim,
            hidden=tuple(reversed(self.hidden)),
            layout=tuple((str(b["name"]), str(b["kind"]), int(b["width"])) for b in layout),  # type: ignore[call-overload]
            negative_slope=self.negative_slope,
            continuous=self.continuous,
        )


@dataclass
class TrainReport:
    class_label: str
    n_rows: int
    account: DPSGDAccount | None  # None when trained without DP
    seconds: float
    final_loss: float
    losses: list[float] = field(default_factory=list)


class VAE(nn.Module):
    def __init__(self, spec: DecoderSpec, hidden: tuple[int, ...], beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta
        self.encoder = mlp([spec.output_dim, *hidden, 2 * spec.latent_dim], spec.negative_slope)
        self.decoder = build_decoder(spec)
        self.latent_dim = spec.latent_dim
        cat, cont, pos = [], [], 0
        for _, k, w in spec.layout:
            (cat.append((pos, pos + w)) if k == "categorical" else cont.append(pos))
            pos += w
        self._cat = cat
        self._cont = cont

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-record loss vector (the DP wrapper needs forward() to be the whole computation)."""
        return self.per_sample_loss(x, self.beta, noise)

    def per_sample_loss(self, x: torch.Tensor, beta: float, noise: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mu, logvar = h[:, : self.latent_dim], h[:, self.latent_dim :].clamp(-8.0, 8.0)
        z = mu + torch.exp(0.5 * logvar) * noise
        logits, log_s = self.decoder.split(self.decoder(z))
        rec = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for a, b in self._cat:
            rec = rec - (F.log_softmax(logits[:, a:b], dim=1) * x[:, a:b]).sum(dim=1)
        if self._cont:
            idx = self._cont
            if log_s is None:
                bce = F.binary_cross_entropy_with_logits(logits[:, idx], x[:, idx], reduction="none")
                rec = rec + bce.sum(dim=1)
            else:  # Gaussian NLL around the sigmoid mean, learned heteroscedastic scale
                r = (x[:, idx] - torch.sigmoid(logits[:, idx])) * torch.exp(-log_s)
                rec = rec + (0.5 * r.pow(2) + log_s).sum(dim=1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
        return rec + beta * kl


def plan_steps(n: int, cfg: VAEConfig) -> tuple[float, int]:
    """Sample rate q and number of steps for a class of n rows."""
    return plan_poisson(n, cfg.batch_size, cfg.epochs, cfg.min_steps, cfg.max_steps)


def train_class_vae(
    x: np.ndarray,
    spec: DecoderSpec,
    cfg: VAEConfig,
    *,
    class_label: str,
    epsilon: float | None,
    delta: float | None,
    seed: int = 0,
) -> tuple[Decoder, TrainReport]:
    """Train one β-VAE on the rows ``x`` of one class; DP when ``epsilon`` is given.

    Returns the decoder (encoder discarded) and a report with the accountant's answer.
    """
    n = int(x.shape[0])
    if n < cfg.min_rows:
        raise TooFewRowsError(
            f"class {class_label!r} has {n} rows (< {cfg.min_rows}); too few to train a DP generator"
        )
    dp = epsilon is not None
    if dp:
        assert delta is not None
        check_epsilon_delta(epsilon, delta)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    model = VAE(spec, cfg.hidden, cfg.beta)
    q, steps = plan_steps(n, cfg)
    expected_b = max(1, round(q * n))
    t0 = time.perf_counter()
    run: DPSGD | None = None
    if dp:
        # Per-sample clipping in one backward pass (privacy/clipping.py); privacy/dpsgd.DPSGD adds
        # the noise, averages over the expected batch size and reports every step to one accountant.
        clipper = GhostClipper(model, cfg.max_grad_norm)
        run = DPSGD(
            torch.optim.Adam(model.parameters(), lr=cfg.lr),
            epsilon=epsilon,  # type: ignore[arg-type]
            delta=delta,  # type: ignore[arg-type]
            sample_rate=q,
            steps=steps,
            max_grad_norm=cfg.max_grad_norm,
            expected_batch_size=expected_b,
            generator=gen,
            accountant=cfg.accountant,
        )
        opt: torch.optim.Optimizer = run.optimizer
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    trace = LossTrace(steps)
    model.train()
    for step in range(steps):
        # Poisson sampling: each row independently with probability q (the accountant's q).
        idx = run.poisson_batch(rng, n) if run else rng.choice(n, size=expected_b, replace=False)
        batch = data[torch.from_numpy(idx)]
        noise = torch.randn(len(idx), spec.latent_dim, generator=gen)
        opt.zero_grad(set_to_none=True)
        if len(idx) == 0:
            assert run is not None  # only Poisson batches can be empty
            run.empty_step(model.parameters())
            continue
        loss_vec = model(batch, noise)
        if dp:
            clipper.clip_and_sum(loss_vec)
        else:
            loss_vec.mean().backward()
        opt.step()
        trace.add(step, float(loss_vec.detach().mean()))
    account = None
    if run is not None:
        clipper.remove()  # the released decoder must not keep recording activations
        account = run.account()
    decoder = model.decoder
    decoder.eval()
    report = TrainReport(class_label, n, account, time.perf_counter() - t0, trace.final, trace.losses)
    return decoder, report


#: Per-dataset hyperparameters (tuned on the public benchmark copies; tuning on private data
#: would itself cost privacy). Anything not listed uses :class:`VAEConfig` defaults.
#: Small silos (tens of rows per class) need a small net and a larger step to move at all under
#: the noise, and gain most from the Gaussian likelihood (its 1/s² weighting gives the means most
#: of the clipped gradient norm). Heavy-tailed, zero-inflated continuous columns (capital gain,
#: sulphur dioxide) keep their spikes better with the Bernoulli-mean likelihood. Chosen by
#: train-on-synthetic test AUC on one seed (docs/benchmarks.md, "Choosing the presets").
PRESETS: dict[str, dict[str, object]] = {
    "adult": {"continuous": "bernoulli"},
    "wine_quality": {"continuous": "bernoulli"},
    "breast_cancer": {"hidden": (32,), "latent_dim": 4, "lr": 0.03},
    "titanic": {"hidden": (32,), "latent_dim": 4, "lr": 0.03},
}


def preset_for(dataset: str) -> VAEConfig:
    return VAEConfig(**PRESETS.get(dataset.removesuffix("_sklearn"), {}))  # type: ignore[arg-type]
