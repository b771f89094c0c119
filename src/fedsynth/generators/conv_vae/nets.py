"""Convolutional β-VAE networks for 8-bit images, fixed by a JSON spec the hub can publish and check.

As in :mod:`fedsynth.generators.vae.nets`, a spec is plain data (:class:`ConvDecoderSpec`) and
:func:`build_decoder` turns it into a module whose parameter names and shapes are a pure function
of the spec, so a receiver checks weight files against the spec it trusts without unpickling.

Decoder (the released part)::

    z (latent) → Linear → SiLU → (c0, H/4, W/4)
      → [Upsample×2 (nearest) → Conv3×3 → GroupNorm → SiLU]   (c0 → c1, H/2 × W/2)
      → [Upsample×2 (nearest) → Conv3×3 → GroupNorm → SiLU]   (c1 → c1, H × W)
      → Conv3×3 → C logits per pixel;  pixel = round(255 · sigmoid(logit))

Encoder (stays at the silo): the mirror, stride-2 3×3 convolutions with GroupNorm and SiLU, then a
Linear to (μ, log σ²). Every layer has per-sample gradients in Opacus (Conv2d, GroupNorm, Linear;
nearest upsampling has no parameters), and nothing mixes examples (no BatchNorm), so per-example
clipping is exact. ConvTranspose2d is avoided: Opacus 1.6 has no per-sample rule for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedsynth.generators.base import SpecError

#: Bounds on a spec a hub will accept (guards against memory exhaustion via giant specs).
MAX_LATENT = 512
MAX_CHANNELS = 512
MAX_SIDE = 256
MAX_IMAGE_CHANNELS = 4
MAX_PARAMS = 20_000_000  # decoder parameters (a 28×28 preset has ~40k)
KIND = "conv-decoder"


@dataclass(frozen=True)
class ConvDecoderSpec:
    """``image`` = (C, H, W) of the schema (H, W divisible by 4); ``channels`` = (c0, c1): the
    channels at H/4 and at H/2, H; ``groups`` = GroupNorm groups (0: no normalisation)."""

    latent_dim: int
    image: tuple[int, int, int]
    channels: tuple[int, int] = (32, 16)
    groups: int = 4
    kind: str = KIND

    def __post_init__(self) -> None:
        if self.kind != KIND:
            raise SpecError(f"unsupported decoder kind {self.kind!r} (expected {KIND!r})")
        if not (1 <= self.latent_dim <= MAX_LATENT):
            raise SpecError(f"latent_dim must be in [1, {MAX_LATENT}]")
        if len(self.image) != 3:
            raise SpecError("image must be (C, H, W)")
        c, h, w = self.image
        if not (1 <= c <= MAX_IMAGE_CHANNELS) or not (4 <= h <= MAX_SIDE) or not (4 <= w <= MAX_SIDE):
            raise SpecError(
                f"image {self.image} out of bounds (C ≤ {MAX_IMAGE_CHANNELS}, 4 ≤ H, W ≤ {MAX_SIDE})"
            )
        if h % 4 or w % 4:
            raise SpecError(f"dp-conv-vae needs image height and width divisible by 4, got {h}×{w}")
        if len(self.channels) != 2 or any(not (1 <= k <= MAX_CHANNELS) for k in self.channels):
            raise SpecError(f"channels must be two values in 1..{MAX_CHANNELS}")
        if self.groups < 0 or (self.groups and any(k % self.groups for k in self.channels)):
            raise SpecError(f"groups ({self.groups}) must be 0 or divide both channel counts {self.channels}")
        n_params = sum(int(torch.Size(s).numel()) for s in expected_tensors(self).values())
        if n_params > MAX_PARAMS:
            raise SpecError(f"decoder has {n_params} parameters (> {MAX_PARAMS})")

    @property
    def base(self) -> tuple[int, int]:
        """Spatial size of the lowest-resolution feature map (H/4, W/4)."""
        return self.image[1] // 4, self.image[2] // 4

    @property
    def n_pixels(self) -> int:
        c, h, w = self.image
        return c * h * w

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "latent_dim": self.latent_dim,
            "image": list(self.image),
            "channels": list(self.channels),
            "groups": self.groups,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ConvDecoderSpec:
        try:
            img = tuple(int(v) for v in d["image"])
            ch = tuple(int(v) for v in d["channels"])
            if len(img) != 3 or len(ch) != 2:
                raise SpecError("image must be [C, H, W] and channels [c0, c1]")
            return ConvDecoderSpec(
                latent_dim=int(d["latent_dim"]),
                image=(img[0], img[1], img[2]),
                channels=(ch[0], ch[1]),
                groups=int(d.get("groups", 4)),
                kind=str(d.get("kind", KIND)),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, SpecError):
                raise
            raise SpecError(f"malformed conv decoder spec: {e}") from None


def _norm(groups: int, ch: int) -> nn.Module:
    return nn.GroupNorm(groups, ch) if groups else nn.Identity()


def _up_block(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1),
        _norm(groups, cout),
        nn.SiLU(),
    )


def _down_block(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), _norm(groups, cout), nn.SiLU())


class ConvDecoder(nn.Module):
    """z → per-pixel logits (N, C, H, W)."""

    def __init__(self, spec: ConvDecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        c0, c1 = spec.channels
        h4, w4 = spec.base
        self.fc = nn.Linear(spec.latent_dim, c0 * h4 * w4)
        self.up1 = _up_block(c0, c1, spec.groups)
        self.up2 = _up_block(c1, c1, spec.groups)
        self.out = nn.Conv2d(c1, spec.image[0], 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h4, w4 = self.spec.base
        h = nn.functional.silu(self.fc(z)).view(z.shape[0], self.spec.channels[0], h4, w4)
        return self.out(self.up2(self.up1(h)))

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None, batch: int = 1024) -> torch.Tensor:
        """Pixel means in [0, 1], (n, C, H, W) float32 on CPU; z drawn on CPU from ``generator``
        (so a seed gives the same images on any device)."""
        dev = next(self.parameters()).device
        z = torch.randn(n, self.spec.latent_dim, generator=generator)
        parts = [torch.sigmoid(self(z[i : i + batch].to(dev))).cpu() for i in range(0, n, batch)]
        return torch.cat(parts) if parts else torch.empty(0, *self.spec.image)


class ConvEncoder(nn.Module):
    """x in [0, 1] (N, C, H, W) → (μ, log σ²), each (N, latent)."""

    def __init__(self, spec: ConvDecoderSpec) -> None:
        super().__init__()
        c0, c1 = spec.channels
        h4, w4 = spec.base
        self.latent_dim = spec.latent_dim
        self.down1 = _down_block(spec.image[0], c1, spec.groups)
        self.down2 = _down_block(c1, c0, spec.groups)
        self.fc = nn.Linear(c0 * h4 * w4, 2 * spec.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.down2(self.down1(x)).flatten(1))
        return h[:, : self.latent_dim], h[:, self.latent_dim :].clamp(-8.0, 8.0)


def build_decoder(spec: ConvDecoderSpec) -> ConvDecoder:
    return ConvDecoder(spec)


@functools.lru_cache(maxsize=256)
def expected_tensors(spec: ConvDecoderSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor a decoder of this spec has (a pure function of the spec,
    computed without building the module, so an oversized spec is refused before any allocation;
    ``tests/test_conv_vae.py`` checks it against the module's ``state_dict``)."""
    c0, c1 = spec.channels
    h4, w4 = spec.base
    out: dict[str, tuple[int, ...]] = {
        "fc.weight": (c0 * h4 * w4, spec.latent_dim),
        "fc.bias": (c0 * h4 * w4,),
    }
    for name, cin in (("up1", c0), ("up2", c1)):
        out[f"{name}.1.weight"] = (c1, cin, 3, 3)
        out[f"{name}.1.bias"] = (c1,)
        if spec.groups:
            out[f"{name}.2.weight"] = (c1,)
            out[f"{name}.2.bias"] = (c1,)
    out["out.weight"] = (spec.image[0], c1, 3, 3)
    out["out.bias"] = (spec.image[0],)
    return out


__all__ = ["ConvDecoder", "ConvDecoderSpec", "ConvEncoder", "build_decoder", "expected_tensors"]
