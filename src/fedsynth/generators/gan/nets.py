"""Networks of the ``dp-gan/1`` family: the shipped conditional generator (fixed by a JSON spec)
and the discriminator (a training detail that never leaves the silo).

Generator G(z, c): ``[z ; onehot(c)]`` → Linear+LeakyReLU hidden layers → one linear head whose
width is the schema encoding (:class:`~fedsynth.data.encoders.TableEncoder`). Output heads:
softmax per categorical block (Gumbel-softmax while training, so fake rows look one-hot to the
discriminator as real rows do), sigmoid per continuous slot (the public-bounds [0, 1] scaling;
no mode-specific normalisation fitted on private data). Parameter names and shapes are a pure
function of the spec (:func:`expected_tensors`), so a receiver checks tensors without unpickling.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedsynth.generators.base import SpecError

#: Bounds on a spec a hub will accept (guards against memory exhaustion via giant specs).
MAX_NOISE = 1024
MAX_HIDDEN = 4096
MAX_LAYERS = 8
MAX_OUTPUT = 100_000
MAX_CLASSES = 1000
MAX_PARAMS = 16_000_000  # 64 MB of float32
GEN_KIND = "cond-mlp-generator"


@dataclass(frozen=True)
class GANSpec:
    """Conditional dense generator (z, class) → encoded row. ``layout`` = the schema encoding's
    blocks ``(name, kind, width)``; ``n_classes`` = the schema's class count (order: schema)."""

    noise_dim: int
    hidden: tuple[int, ...]
    layout: tuple[tuple[str, str, int], ...]
    n_classes: int
    negative_slope: float = 0.2
    kind: str = GEN_KIND

    def __post_init__(self) -> None:
        if self.kind != GEN_KIND:
            raise SpecError(f"unsupported generator kind {self.kind!r}")
        if not (1 <= self.noise_dim <= MAX_NOISE):
            raise SpecError(f"noise_dim must be in [1, {MAX_NOISE}]")
        if len(self.hidden) > MAX_LAYERS or any(not (1 <= h <= MAX_HIDDEN) for h in self.hidden):
            raise SpecError(f"hidden layers must be <= {MAX_LAYERS} layers of 1..{MAX_HIDDEN} units")
        if not (2 <= self.n_classes <= MAX_CLASSES):
            raise SpecError(f"n_classes must be in [2, {MAX_CLASSES}]")
        if not (math.isfinite(self.negative_slope) and 0.0 <= self.negative_slope < 1.0):
            raise SpecError("negative_slope must be in [0, 1)")
        if not self.layout or any(k not in ("categorical", "continuous") or w < 1 for _, k, w in self.layout):
            raise SpecError("layout must be a non-empty list of (name, categorical|continuous, width>=1)")
        if any(k == "continuous" and w != 1 for _, k, w in self.layout):
            raise SpecError("continuous blocks have width 1")
        if self.output_dim > MAX_OUTPUT:
            raise SpecError(f"output dimension {self.output_dim} exceeds {MAX_OUTPUT}")
        if self.n_params > MAX_PARAMS:
            raise SpecError(f"generator would have {self.n_params} parameters (> {MAX_PARAMS})")

    @property
    def output_dim(self) -> int:
        return sum(w for _, _, w in self.layout)

    @property
    def sizes(self) -> list[int]:
        return [self.noise_dim + self.n_classes, *self.hidden, self.output_dim]

    @property
    def n_params(self) -> int:
        s = self.sizes
        return sum(s[i] * s[i + 1] + s[i + 1] for i in range(len(s) - 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "noise_dim": self.noise_dim,
            "hidden": list(self.hidden),
            "n_classes": self.n_classes,
            "negative_slope": self.negative_slope,
            "layout": [{"name": n, "kind": k, "width": w} for n, k, w in self.layout],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GANSpec:
        if not isinstance(d.get("hidden"), list) or not isinstance(d.get("layout"), list):
            raise SpecError("malformed generator spec: 'hidden' and 'layout' must be lists")
        try:
            return GANSpec(
                noise_dim=int(d["noise_dim"]),
                hidden=tuple(int(h) for h in d["hidden"]),
                layout=tuple((str(b["name"]), str(b["kind"]), int(b["width"])) for b in d["layout"]),
                n_classes=int(d["n_classes"]),
                negative_slope=float(d.get("negative_slope", 0.2)),
                kind=str(d.get("kind", GEN_KIND)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            if isinstance(e, SpecError):
                raise
            raise SpecError(f"malformed generator spec: {e}") from None


def mlp(sizes: list[int], negative_slope: float, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with LeakyReLU (and optional dropout) between them. No in-place ops (Opacus)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(negative_slope))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class CondGenerator(nn.Module):
    """G(z, c) → logits over the encoded table (the shipped network)."""

    def __init__(self, spec: GANSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = mlp(spec.sizes, spec.negative_slope)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, cond], dim=1))

    def activate(
        self, logits: torch.Tensor, *, tau: float | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Softmax per categorical block — Gumbel-softmax at temperature ``tau`` when given
        (training; Gumbel(0,1) noise g = −log(−log U)) — and sigmoid per continuous slot."""
        parts: list[torch.Tensor] = []
        pos = 0
        for _, k, w in self.spec.layout:
            seg = logits[:, pos : pos + w]
            if k == "categorical":
                if tau is not None:
                    u = torch.rand(seg.shape, generator=generator).clamp(1e-10, 1.0 - 1e-7)
                    seg = (seg - torch.log(-torch.log(u))) / tau
                parts.append(torch.softmax(seg, dim=1))
            else:
                parts.append(torch.sigmoid(seg))
            pos += w
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def generate(self, cls: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Rows for the class indices ``cls``: category probabilities and continuous values in [0, 1]."""
        z = torch.randn(len(cls), self.spec.noise_dim, generator=generator)
        cond = nn.functional.one_hot(cls.long(), self.spec.n_classes).to(z.dtype)
        return self.activate(self(z, cond))


class Discriminator(nn.Module):
    """Real-vs-generated discriminator (stays at the silo). Dense layers only (per-sample
    clipping by :class:`~fedsynth.privacy.clipping.GhostClipper`), no BatchNorm, each Linear
    applied once per forward.

    ``aux=False``: D(x, y) → one logit, conditioned on the class by its input ``[x ; onehot(y)]``.
    ``aux=True`` (AC-GAN): D(x) → ``[source logit | K class logits]``; the class is not an input
    (the class head must read it from x), so D doubles as a classifier the generator must satisfy.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: tuple[int, ...],
        negative_slope: float,
        dropout: float,
        aux: bool = False,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.aux = aux
        sizes = [in_dim, *hidden, 1 + n_classes] if aux else [in_dim + n_classes, *hidden, 1]
        self.net = mlp(sizes, negative_slope, dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(source logits (B,), class logits (B, K) or None)."""
        if self.aux:
            out = self.net(x)
            return out[:, 0], out[:, 1:]
        return self.net(torch.cat([x, cond], dim=1)).squeeze(1), None


def build_generator(spec: GANSpec) -> CondGenerator:
    return CondGenerator(spec)


@functools.lru_cache(maxsize=256)
def expected_tensors(spec: GANSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every generator tensor, computed from the spec without building it."""
    s = spec.sizes
    out: dict[str, tuple[int, ...]] = {}
    for i in range(len(s) - 1):
        out[f"net.{2 * i}.weight"] = (s[i + 1], s[i])
        out[f"net.{2 * i}.bias"] = (s[i + 1],)
    return out


__all__ = [
    "MAX_PARAMS",
    "CondGenerator",
    "Discriminator",
    "GANSpec",
    "build_generator",
    "expected_tensors",
    "mlp",
]
