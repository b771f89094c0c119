"""The denoiser, its spec, the public noise schedule and the reverse (sampling) process.

Diffusion space (a pure function of the public schema's encoding,
:class:`~fedsynth.data.encoders.TableEncoder`): a continuous slot u ∈ [0, 1] becomes 2u − 1 ∈
[−1, 1]; a categorical block's one-hot vector becomes 2·onehot − 1 ∈ {−1, 1}^K ("one-hot Gaussian
diffusion", one of the two options of TabDDPM, Kotelnikov et al. 2023). Both are noised by the
same Gaussian forward process

    x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε,    ε ~ N(0, I),

with ᾱ_t from a fixed, public schedule (``cosine``, Nichol & Dhariwal 2021, or DDPM's ``linear``)
over T training timesteps. The spec fixes T and the schedule, so the schedule is never shipped.

Denoiser (x_0-parameterised): f(x_t, t, c) → [x̂_0 of the continuous slots | logits of each
categorical block], i.e. its output layout *is* the schema encoding; f = Bayes skip + network
residual (:meth:`Denoiser.combine`). Input = [x_t | sinusoidal
features of t | one-hot of the class c]; the first layer's column blocks are the noisy-row
projection, the time embedding and the class embedding (a sum of three linear maps, written as
one Linear so per-sample clipping sees each layer once). SiLU between layers, no normalisation
layers (DP-SGD), no in-place ops (Opacus).

Sampling: a strided DDIM/DDPM reverse process over ``sample_steps`` of the T timesteps
(Song et al. 2021; η = 1 is ancestral DDPM sampling on the sub-sequence, η = 0 deterministic
DDIM). At each step x̂_0 = [clamp(cont, −1, 1) | 2·softmax(logits) − 1] (the posterior mean of
the ±1 one-hot), ε̂ = (x_t − √ᾱ_t x̂_0)/√(1 − ᾱ_t), and

    x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ_s²) ε̂ + σ_s z,  σ_s = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_s).

The last step's x̂_0 is the output: continuous slots (x̂_0 + 1)/2 ∈ [0, 1] and category
probabilities softmax(logits), which the encoder's inverse draws categories from.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsynth.generators.base import SpecError

MAX_HIDDEN = 4096
MAX_LAYERS = 8
MAX_OUTPUT = 100_000
MAX_CLASSES = 10_000
MAX_TIMESTEPS = 10_000
MAX_TIME_DIM = 256
MAX_PARAMS = 50_000_000
#: σ_d of the preconditioning: the prior spread of a [−1, 1] slot (public constant, not data).
SIGMA_DATA = 0.5
MAX_LOGIT_SCALE = 1e4
SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class DenoiserSpec:
    """What the federation fixes: architecture, the forward process and the sampler."""

    hidden: tuple[int, ...]
    layout: tuple[tuple[str, str, int], ...]
    n_classes: int
    timesteps: int = 1000
    schedule: str = "cosine"
    time_dim: int = 16
    sample_steps: int = 50
    eta: float = 1.0
    kind: str = "mlp-denoiser"

    def __post_init__(self) -> None:
        if self.kind != "mlp-denoiser":
            raise SpecError(f"unsupported denoiser kind {self.kind!r}")
        if not self.hidden or len(self.hidden) > MAX_LAYERS:
            raise SpecError(f"hidden must have 1..{MAX_LAYERS} layers")
        if any(not (1 <= h <= MAX_HIDDEN) for h in self.hidden):
            raise SpecError(f"hidden layers must have 1..{MAX_HIDDEN} units")
        if not self.layout or any(k not in ("categorical", "continuous") or w < 1 for _, k, w in self.layout):
            raise SpecError("layout must be a non-empty list of (name, categorical|continuous, width>=1)")
        if any(k == "continuous" and w != 1 for _, k, w in self.layout):
            raise SpecError("continuous blocks have width 1")
        if self.output_dim > MAX_OUTPUT:
            raise SpecError(f"output dimension {self.output_dim} exceeds {MAX_OUTPUT}")
        if not (2 <= self.n_classes <= MAX_CLASSES):
            raise SpecError(f"n_classes must be in [2, {MAX_CLASSES}]")
        if not (2 <= self.timesteps <= MAX_TIMESTEPS):
            raise SpecError(f"timesteps must be in [2, {MAX_TIMESTEPS}]")
        if self.schedule not in SCHEDULES:
            raise SpecError(f"schedule must be one of {SCHEDULES}")
        if not (2 <= self.time_dim <= MAX_TIME_DIM) or self.time_dim % 2:
            raise SpecError(f"time_dim must be even and in [2, {MAX_TIME_DIM}]")
        if not (1 <= self.sample_steps <= self.timesteps):
            raise SpecError("sample_steps must be in [1, timesteps]")
        if not (math.isfinite(self.eta) and 0.0 <= self.eta <= 1.0):
            raise SpecError("eta must be in [0, 1]")
        if self.n_params > MAX_PARAMS:
            raise SpecError(f"the denoiser would have {self.n_params} parameters (> {MAX_PARAMS})")

    @property
    def output_dim(self) -> int:
        return sum(w for _, _, w in self.layout)

    @property
    def input_dim(self) -> int:
        return self.output_dim + self.time_dim + self.n_classes

    @property
    def n_params(self) -> int:
        sizes = [self.input_dim, *self.hidden, self.output_dim]
        return sum((a + 1) * b for a, b in itertools.pairwise(sizes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "hidden": list(self.hidden),
            "n_classes": self.n_classes,
            "timesteps": self.timesteps,
            "schedule": self.schedule,
            "time_dim": self.time_dim,
            "sample_steps": self.sample_steps,
            "eta": self.eta,
            "layout": [{"name": n, "kind": k, "width": w} for n, k, w in self.layout],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> DenoiserSpec:
        try:
            for k in ("hidden", "layout", "n_classes", "timesteps", "schedule"):
                if k not in d:
                    raise KeyError(k)
            if not isinstance(d["hidden"], list) or not isinstance(d["layout"], list):
                raise TypeError("hidden and layout must be lists")
            if len(d["hidden"]) > MAX_LAYERS or len(d["layout"]) > MAX_OUTPUT:
                raise ValueError("too many layers or blocks")
            return DenoiserSpec(
                hidden=tuple(int(h) for h in d["hidden"]),
                layout=tuple((str(b["name"]), str(b["kind"]), int(b["width"])) for b in d["layout"]),
                n_classes=int(d["n_classes"]),
                timesteps=int(d["timesteps"]),
                schedule=str(d["schedule"]),
                time_dim=int(d.get("time_dim", 16)),
                sample_steps=int(d.get("sample_steps", 50)),
                eta=float(d.get("eta", 1.0)),
                kind=str(d.get("kind", "mlp-denoiser")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise SpecError(f"malformed denoiser spec: {e!r}") from None


@functools.lru_cache(maxsize=64)
def alphas_cumprod(timesteps: int, schedule: str) -> torch.Tensor:
    """ᾱ_t for t = 1..T (index t−1), float64 → float32; a pure function of the public spec."""
    if schedule == "cosine":
        s = 0.008
        steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
        f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    elif schedule == "linear":
        betas = np.linspace(1e-4 * 1000 / timesteps, 0.02 * 1000 / timesteps, timesteps).clip(0, 0.999)
    else:
        raise SpecError(f"unknown schedule {schedule!r}")
    return torch.from_numpy(np.cumprod(1.0 - betas)).to(torch.float32)


def time_features(t: torch.Tensor, timesteps: int, dim: int) -> torch.Tensor:
    """Sinusoidal features of t/T (Vaswani et al.; frequencies 1 .. 1000 on a log scale)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(1000.0) / max(half - 1, 1)))
    arg = (t.to(torch.float32)[:, None] / timesteps) * 1000.0 * freqs[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class Denoiser(nn.Module):
    """f(x_t, t, c) → [x̂_0 continuous | categorical logits] in the schema's layout."""

    cont_idx: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, spec: DenoiserSpec) -> None:
        super().__init__()
        self.spec = spec
        sizes = [spec.input_dim, *spec.hidden, spec.output_dim]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)
        cat, cont, pos = [], [], 0
        for _, k, w in spec.layout:
            (cat.append((pos, pos + w)) if k == "categorical" else cont.append(pos))
            pos += w
        self.cat_slices: list[tuple[int, int]] = cat
        self.register_buffer("cont_idx", torch.tensor(cont, dtype=torch.long), persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Raw network F on [c_in·x_t | time features | one-hot class]; ``t`` integer timesteps in
        [1, T], ``c`` integer class codes. :meth:`combine` turns F into the denoiser's output."""
        abar = alphas_cumprod(self.spec.timesteps, self.spec.schedule)[t - 1][:, None]
        c_in = (abar * SIGMA_DATA**2 + 1.0 - abar).rsqrt()
        onehot = torch.nn.functional.one_hot(c, self.spec.n_classes).to(x_t.dtype)
        feats = time_features(t, self.spec.timesteps, self.spec.time_dim)
        return self.net(torch.cat([c_in * x_t, feats, onehot], dim=1))

    def skip(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(skip, c_out, logit_scale·x_t) of the Bayes preconditioning (see :meth:`combine`)."""
        abar = alphas_cumprod(self.spec.timesteps, self.spec.schedule)[t - 1][:, None]
        v = abar * SIGMA_DATA**2 + 1.0 - abar
        c_skip = abar.sqrt() * SIGMA_DATA**2 / v
        c_out = SIGMA_DATA * (1.0 - abar).sqrt() / v.sqrt()
        scale = (2.0 * abar.sqrt() / (1.0 - abar)).clamp(max=MAX_LOGIT_SCALE)
        skip = torch.empty_like(x_t)
        if len(self.cont_idx):
            skip[:, self.cont_idx] = c_skip * x_t[:, self.cont_idx]
        for a, b in self.cat_slices:
            skip[:, a:b] = scale * x_t[:, a:b]
        return skip, c_out, scale

    def combine(self, f: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Denoiser output [x̂_0 continuous | categorical logits] = skip(x_t, t) + residual(F).

        The skip is the posterior under a data-free prior (Bayes preconditioning, cf. EDM,
        Karras et al. 2022): a continuous slot with prior N(0, σ_d²) has E[x_0 | x_t] =
        √ᾱ σ_d² x_t / (ᾱ σ_d² + 1 − ᾱ), residual scaled by c_out = σ_d √(1−ᾱ) / √(ᾱσ_d² + 1 − ᾱ);
        a categorical block with a uniform prior over its ±1 one-hot codes has logits
        2√ᾱ/(1 − ᾱ) · x_t (+ const), residual F added to them. F then learns only what the data
        add to these priors, and at small t the denoiser is the identity without learning it.
        """
        skip, c_out, _ = self.skip(x_t, t)
        out = skip + f
        if len(self.cont_idx):
            out[:, self.cont_idx] = skip[:, self.cont_idx] + c_out * f[:, self.cont_idx]
        return out

    def x0_hat(self, out: torch.Tensor) -> torch.Tensor:
        """Network output → x̂_0 in diffusion space ([−1, 1] / 2·softmax − 1)."""
        x0 = torch.empty_like(out)
        if len(self.cont_idx):
            x0[:, self.cont_idx] = out[:, self.cont_idx].clamp(-1.0, 1.0)
        for a, b in self.cat_slices:
            x0[:, a:b] = 2.0 * torch.softmax(out[:, a:b], dim=1) - 1.0
        return x0

    def unit(self, out: torch.Tensor) -> torch.Tensor:
        """Network output → encoder space: continuous in [0, 1], category probabilities."""
        u = torch.empty_like(out)
        if len(self.cont_idx):
            u[:, self.cont_idx] = (out[:, self.cont_idx].clamp(-1.0, 1.0) + 1.0) / 2.0
        for a, b in self.cat_slices:
            u[:, a:b] = torch.softmax(out[:, a:b], dim=1)
        return u

    @torch.no_grad()
    def generate(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reverse process for class codes ``c`` (see the module docstring); encoder-space output."""
        spec = self.spec
        abar = alphas_cumprod(spec.timesteps, spec.schedule)
        ts = sample_timesteps(spec.timesteps, spec.sample_steps)
        n = c.shape[0]
        x = torch.randn(n, spec.output_dim, generator=generator)
        out = x
        for i, t in enumerate(ts):
            a_t = abar[t - 1]
            a_s = abar[ts[i + 1] - 1] if i + 1 < len(ts) else torch.tensor(1.0)
            tt = torch.full((n,), t, dtype=torch.long)
            out = self.combine(self(x, tt, c), x, tt)
            if i + 1 == len(ts):
                break
            x0 = self.x0_hat(out)
            eps = (x - a_t.sqrt() * x0) / (1.0 - a_t).sqrt()
            var = spec.eta**2 * (1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s)
            var = var.clamp(min=0.0)
            x = a_s.sqrt() * x0 + (1.0 - a_s - var).clamp(min=0.0).sqrt() * eps
            if spec.eta > 0:
                x = x + var.sqrt() * torch.randn(x.shape, generator=generator)
        return self.unit(out)


def sample_timesteps(timesteps: int, steps: int) -> list[int]:
    """The strided sub-sequence T = τ_1 > … > τ_S = 1 the sampler visits."""
    ts = np.unique(np.round(np.linspace(1, timesteps, steps)).astype(int))[::-1]
    return [int(t) for t in ts]


def build_denoiser(spec: DenoiserSpec) -> Denoiser:
    return Denoiser(spec)


def expected_tensors(spec: DenoiserSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor a denoiser of this spec has (a pure function of the spec,
    computed without allocating the network; equal to ``build_denoiser(spec).state_dict()``)."""
    sizes = [spec.input_dim, *spec.hidden, spec.output_dim]
    out: dict[str, tuple[int, ...]] = {}
    for i in range(len(sizes) - 1):
        out[f"net.{2 * i}.weight"] = (sizes[i + 1], sizes[i])
        out[f"net.{2 * i}.bias"] = (sizes[i + 1],)
    return out
