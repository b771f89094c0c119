"""DP conditional GAN training: DP-SGD on the discriminator, the generator trained from it.

Objective (standard non-saturating GAN, ``loss="ns"``; ``"wgan"`` = Wasserstein critic with
weight clipping). With D a logit and softplus(t) = log(1 + eᵗ), per row::

    discriminator:  ℓ_real(x, y) = softplus(−D(x, y))          (= −log σ(D), pushed *up* on real)
                    ℓ_fake(x̃, c) = softplus(+D(x̃, c))          (= −log(1 − σ(D)), pushed down)
    generator:      ℓ_G(z, c)   = softplus(−D(G(z, c), c))     (non-saturating)

(WGAN: ℓ_real = −D, ℓ_fake = +D, ℓ_G = −D.) The discriminator *minimises* its loss; at
initialisation (D ≈ 0) the NS loss per real+fake pair is 2·log 2 and it must fall below that as
D learns to tell real from fake (the sign bug seen in peers makes it rise; tested).

Privacy (record-level (ε, δ)-DP of everything the silo ships, i.e. the generator):

* Every discriminator step samples each private row independently with probability q = B/n
  (Poisson; the q given to the accountant), adds m = round(q·n) generated rows (m fixed: it
  does not depend on which rows were sampled), clips *every* row's gradient to norm C in one
  backward pass (:class:`~fedsynth.privacy.clipping.GhostClipper`), and Opacus'
  ``DPOptimizerFastGradientClipping`` adds N(0, σ²C²) to the sum, divides by m and takes an
  Adam step. Adding or removing one private row changes the clipped sum by at most C; the
  generated rows are a function of the generator and fresh noise only, which are the same in
  both neighbouring worlds, so each step is the subsampled Gaussian mechanism of the DP-SGD
  analysis. One Opacus accountant, attached to the discriminator's optimizer, records every
  discriminator step (T_D steps at (σ, q)); σ is calibrated for the target (ε, δ) over the
  planned T_D by :func:`~fedsynth.privacy.dpsgd.calibrate_noise`.
* Generator steps touch no private row: their loss is a function of the current discriminator
  (already released to the generator by the mechanism above) and fresh noise — post-processing,
  not charged. The discriminator never leaves the silo.
* Conditions for generated rows are drawn uniformly over the schema's classes (public); the
  private class frequencies reach nothing but the discriminator's DP gradients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedsynth.generators.base import TooFewRowsError
from fedsynth.generators.gan.nets import CondGenerator, Discriminator, GANSpec, build_generator
from fedsynth.privacy.clipping import GhostClipper
from fedsynth.privacy.dpsgd import DPSGD, DPSGDAccount, check_epsilon_delta

LOSSES = ("ns", "wgan")


@dataclass(frozen=True)
class GANConfig:
    noise_dim: int = 16
    hidden: tuple[int, ...] = (64, 64)  # generator (shipped: part of the spec)
    d_hidden: tuple[int, ...] = (16,)  # discriminator (stays at the silo; small: DP noise ∝ √params)
    loss: str = "ns"
    batch_size: int = 64  # expected real rows per discriminator step (q = B / n)
    d_steps: int = 300  # planned discriminator steps (every one is charged)
    n_critic: int = 1  # discriminator steps per generator step
    lr_d: float = 2e-3
    lr_g: float = 2e-3
    beta1: float = 0.5
    max_grad_norm: float = 1.0
    gumbel_tau: float = 0.2
    weight_clip: float = 0.1  # WGAN only: |w| ≤ this after every critic step
    d_dropout: float = 0.0
    aux_weight: float = 1.0  # > 0: AC-GAN discriminator with a class head, weighted λ in both losses
    negative_slope: float = 0.2
    accountant: str = "rdp"
    min_rows: int = 10  # below this a DP generator is pointless

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}")
        if self.d_steps < 1 or self.n_critic < 1 or self.batch_size < 1:
            raise ValueError("d_steps, n_critic and batch_size must be >= 1")
        if self.aux_weight < 0:
            raise ValueError("aux_weight must be >= 0")

    def generator_spec(self, layout: list[dict[str, object]], n_classes: int) -> GANSpec:
        return GANSpec(
            noise_dim=self.noise_dim,
            hidden=self.hidden,
            layout=tuple((str(b["name"]), str(b["kind"]), int(b["width"])) for b in layout),  # type: ignore[call-overload]
            n_classes=n_classes,
            negative_slope=self.negative_slope,
        )


@dataclass
class TrainReport:
    n_rows: int
    account: DPSGDAccount | None  # None when trained without DP
    seconds: float
    d_steps: int
    g_steps: int
    d_losses: list[float] = field(default_factory=list)  # per-row mean, logged ~20 times
    g_losses: list[float] = field(default_factory=list)
    real_batch_sizes: list[int] = field(default_factory=list)  # Poisson draws (stay at the silo)
    fake_class_counts: list[int] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.d_losses[-1] if self.d_losses else float("nan")


def d_row_losses(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row discriminator losses (to be *minimised*): real rows pushed up, fake rows down."""
    if loss == "ns":
        return F.softplus(-d_real), F.softplus(d_fake)
    return -d_real, d_fake


def g_row_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_fake) if loss == "ns" else -d_fake


class DPGANTrainer:
    """One silo's conditional GAN: rows ``x`` (encoded) with class indices ``y``.

    DP when ``epsilon`` is given (see the module docstring); otherwise the same sampling and
    steps with plain Adam (a reference for tests and ablations)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        spec: GANSpec,
        cfg: GANConfig,
        *,
        epsilon: float | None,
        delta: float | None,
        seed: int = 0,
    ) -> None:
        self.n = int(x.shape[0])
        if self.n < cfg.min_rows:
            raise TooFewRowsError(f"{self.n} rows (< {cfg.min_rows}); too few to train a DP generator")
        self.dp = epsilon is not None
        if self.dp:
            check_epsilon_delta(epsilon, delta)  # type: ignore[arg-type]
            assert delta is not None
        self.cfg, self.spec, self.delta = cfg, spec, delta
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)  # Poisson sampling of private rows
        self.crng = np.random.default_rng([seed, 1])  # conditions of generated rows (public)
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        k = spec.n_classes
        self.yc = F.one_hot(self.y, k).float()
        self.q = min(1.0, cfg.batch_size / self.n)
        self.m = max(1, round(self.q * self.n))  # generated rows per step; expected real rows
        self.steps = cfg.d_steps
        self.G: CondGenerator = build_generator(spec)
        self.D = Discriminator(
            spec.output_dim, k, cfg.d_hidden, cfg.negative_slope, cfg.d_dropout, aux=cfg.aux_weight > 0
        )
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.9))
        d_adam = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.9))
        self.clipper = GhostClipper(self.D, cfg.max_grad_norm)
        self.run: DPSGD | None = None
        if self.dp:
            # the discriminator's optimiser is the only one that sees private rows: one accountant
            self.run = DPSGD(
                d_adam,
                epsilon=epsilon,  # type: ignore[arg-type]
                delta=delta,  # type: ignore[arg-type]
                sample_rate=self.q,
                steps=self.steps,
                max_grad_norm=cfg.max_grad_norm,
                expected_batch_size=self.m,
                generator=self.gen,
                accountant=cfg.accountant,
            )
            self.opt_d: torch.optim.Optimizer = self.run.optimizer
        else:
            self.opt_d = d_adam
        self.d_steps_done = 0
        self.g_steps_done = 0
        self.real_batch_sizes: list[int] = []
        self.fake_counts = np.zeros(k, dtype=np.int64)

    # -- pieces ------------------------------------------------------------------------------
    def conditions(self, m: int) -> torch.Tensor:
        """Class indices of generated rows: uniform over the schema's classes (public)."""
        c = self.crng.integers(0, self.spec.n_classes, size=m)
        self.fake_counts += np.bincount(c, minlength=self.spec.n_classes)
        return torch.from_numpy(c)

    def fake(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """m generated rows (Gumbel-softmax categoricals) and their one-hot conditions."""
        c = F.one_hot(self.conditions(m), self.spec.n_classes).float()
        z = torch.randn(m, self.spec.noise_dim, generator=self.gen)
        return self.G.activate(self.G(z, c), tau=self.cfg.gumbel_tau, generator=self.gen), c

    def d_step(self) -> float:
        """One (charged) discriminator step; returns the mean per-row loss of the batch."""
        # Poisson sampling at the accountant's q (the generated rows are not private: always m of them)
        idx = torch.from_numpy(np.flatnonzero(self.rng.random(self.n) < self.q))
        self.real_batch_sizes.append(len(idx))
        with torch.no_grad():
            xf, cf = self.fake(self.m)
        xr, cr = self.x[idx], self.yc[idx]
        self.clipper.clear()
        self.opt_d.zero_grad(set_to_none=True)
        out, cls = self.D(torch.cat([xr, xf]), torch.cat([cr, cf]))
        b = len(idx)
        lr_, lf = d_row_losses(self.cfg.loss, out[:b], out[b:])
        if cls is not None:  # AC-GAN: real rows also teach the class head (clipped with the row)
            lr_ = lr_ + self.cfg.aux_weight * F.cross_entropy(cls[:b], self.y[idx], reduction="none")
        rows = torch.cat([lr_, lf])
        if self.dp:
            self.clipper.clip_and_sum(rows)  # clipped per-row sum into .grad
        else:
            self.clipper.clear()
            (rows.sum() / self.m).backward()
        self.opt_d.step()  # DP: + N(0, σ²C²), / m, Adam; the accountant records the step
        if self.cfg.loss == "wgan":
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-self.cfg.weight_clip, self.cfg.weight_clip)
        self.d_steps_done += 1
        return float(rows.detach().sum()) / (len(idx) + self.m)

    def g_step(self) -> float:
        """One generator step (no private row involved: not charged)."""
        xf, cf = self.fake(self.m)
        out, cls = self.D(xf, cf)
        rows = g_row_loss(self.cfg.loss, out)
        if cls is not None:  # generated rows of class c must be classified as c
            rows = rows + self.cfg.aux_weight * F.cross_entropy(cls, cf.argmax(1), reduction="none")
        loss = rows.mean()
        self.clipper.clear()  # the forward through D is not a discriminator step
        params = list(self.G.parameters())
        grads = torch.autograd.grad(loss, params)  # D's .grad is left untouched
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        self.g_steps_done += 1
        return float(loss.detach())

    @torch.no_grad()
    def evaluate_d(self, x: np.ndarray, y: np.ndarray, m: int = 512) -> tuple[float, float]:
        """(mean per-row D loss, accuracy of sign(D)) on real rows ``x, y`` and m fresh fakes.
        A diagnostic on data the caller holds (tests); not part of training."""
        self.D.eval()
        xr = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        cr = F.one_hot(torch.from_numpy(np.asarray(y, dtype=np.int64)), self.spec.n_classes).float()
        xf, cf = self.fake(m)
        dr, df = self.D(xr, cr)[0], self.D(xf, cf)[0]
        self.clipper.clear()
        self.D.train()
        lr_, lf = d_row_losses(self.cfg.loss, dr, df)
        loss = float((lr_.sum() + lf.sum()) / (len(dr) + len(df)))
        acc = float(((dr > 0).sum() + (df <= 0).sum()) / (len(dr) + len(df)))
        return loss, acc

    # -- the whole run -----------------------------------------------------------------------
    def train(self) -> tuple[CondGenerator, TrainReport]:
        t0 = time.perf_counter()
        d_losses, g_losses = [], []
        run_d, run_g, cnt_d, cnt_g = 0.0, 0.0, 0, 0
        log_every = max(1, self.steps // 20)
        self.G.train()
        self.D.train()
        for step in range(self.steps):
            run_d += self.d_step()
            cnt_d += 1
            if (step + 1) % self.cfg.n_critic == 0:
                run_g += self.g_step()
                cnt_g += 1
            if (step + 1) % log_every == 0:
                d_losses.append(run_d / cnt_d)
                g_losses.append(run_g / max(cnt_g, 1))
                run_d, run_g, cnt_d, cnt_g = 0.0, 0.0, 0, 0
        account = self.account()
        self.G.eval()
        rep = TrainReport(
            self.n,
            account,
            time.perf_counter() - t0,
            self.d_steps_done,
            self.g_steps_done,
            d_losses,
            g_losses,
            list(self.real_batch_sizes),
            self.fake_counts.tolist(),
        )
        return self.G, rep

    def account(self) -> DPSGDAccount | None:
        """The accountant's (ε, δ), cross-checked against a fresh recomputation and against the
        number of discriminator steps actually taken (generator steps must not appear)."""
        if self.run is None:
            return None
        account = self.run.account()
        if account.steps != self.d_steps_done:
            raise RuntimeError(
                f"the accountant saw {account.steps} steps, the discriminator took {self.d_steps_done}"
            )
        return account


def train_gan(
    x: np.ndarray,
    y: np.ndarray,
    spec: GANSpec,
    cfg: GANConfig,
    *,
    epsilon: float | None,
    delta: float | None,
    seed: int = 0,
) -> tuple[CondGenerator, TrainReport]:
    """Train one conditional generator on a silo's encoded rows ``x`` and class indices ``y``."""
    return DPGANTrainer(x, y, spec, cfg, epsilon=epsilon, delta=delta, seed=seed).train()


#: Per-dataset settings (tuned on the public benchmark copies only; see the family's report).
PRESETS: dict[str, dict[str, object]] = {}


def preset_for(dataset: str) -> GANConfig:
    return GANConfig(**PRESETS.get(dataset.removesuffix("_sklearn"), {}))  # type: ignore[arg-type]


__all__ = [
    "LOSSES",
    "PRESETS",
    "DPGANTrainer",
    "GANConfig",
    "TrainReport",
    "d_row_losses",
    "g_row_loss",
    "preset_for",
    "train_gan",
]
