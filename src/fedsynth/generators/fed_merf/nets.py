"""The fed-merf spec and its class-conditional generator network G(z, c).

The spec is plain data (:class:`MerfSpec`): the public feature map (D, ℓ, ``feature_seed``), the
quantisation (γ, ``count_scale``), the dropout rule (``tolerated_dropout``) and the generator's
architecture (``latent``, ``hidden``). The network's parameter names and shapes are a pure
function of (spec, schema) — the encoder width d and the class count C come from the public
schema — so an artifact's tensors are checked against a module built from the trusted spec and
never unpickled.

G: [z ~ N(0, I_latent), one-hot(c)] → Linear/LeakyReLU hidden layers → one logit per encoded slot
(``kind = "merf-mlp"``), or for an image schema (``"merf-conv"``) a small convolutional body
(:class:`ConvBody`: Linear → (ch, H/4, W/4), two nearest-upsample + conv stages) whose output is
the image's pixel logits in the schema's column order.
The encoded row is read through a softmax per categorical block and a sigmoid per continuous slot
(:meth:`MerfNet.decode`), i.e. exactly the layout of :class:`~fedsynth.data.encoders.TableEncoder`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedsynth.generators.base import SpecError

MAX_FEATURES = 20_000
MAX_MARGINAL_FEATURES = 256
MAX_LATENT = 1024
MAX_HIDDEN = 4096
MAX_LAYERS = 8
MAX_GAMMA = 2.0**20
MAX_INPUT = 100_000
MAX_CONV_FILTERS = 512
KINDS = ("merf-mlp", "merf-conv")
NEGATIVE_SLOPE = 0.2


@dataclass(frozen=True)
class MerfSpec:
    """Everything public about a fed-merf release except the schema it is for.

    * ``features`` D (even): random Fourier features, D/2 frequencies;
    * ``lengthscale`` ℓ of the Gaussian kernel on the [0, 1]-encoded rows (a one-hot mismatch is
      at distance √2, so ℓ is in units of "one differing categorical");
    * ``gamma`` γ: quantisation scale, a record adds round(γ·φ(x)) (and ``count_scale``·γ to its
      class count);
    * ``feature_seed``: the public seed of the frequencies;
    * ``latent``, ``hidden``: the generator's architecture;
    * ``tolerated_dropout``: share of the joined silos that may drop without the release losing
      its calibrated noise (see :mod:`fedsynth.generators.fed_merf.family`);
    * ``marginal_weight`` a, ``marginal_features``, ``marginal_lengthscale``: the share of the
      sum-over-columns kernel in φ and its continuous columns' 1-D random features
      (:mod:`fedsynth.generators.fed_merf.features`; a = 0 is plain DP-MERF).
    """

    features: int = 200
    lengthscale: float = 1.0
    gamma: float = 4096.0
    count_scale: float = 1.0
    feature_seed: int = 0
    latent: int = 16
    hidden: tuple[int, ...] = (128, 128)
    tolerated_dropout: float = 0.1
    marginal_weight: float = 0.5
    marginal_features: int = 16
    marginal_lengthscale: float = 0.1
    kind: str = "merf-mlp"
    # images only (fedsynth.generators.fed_merf.features): share b of φ for K random conv features
    conv_weight: float = 0.0
    conv_filters: int = 0

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        if self.kind not in KINDS:
            raise SpecError(f"unsupported fed-merf generator kind {self.kind!r}; one of {list(KINDS)}")
        if not is_int(self.features) or not 2 <= self.features <= MAX_FEATURES or self.features % 2:
            raise SpecError(f"features must be an even integer in [2, {MAX_FEATURES}], got {self.features!r}")
        if not is_num(self.lengthscale) or not 1e-3 <= self.lengthscale <= 1e3:
            raise SpecError(f"lengthscale must be in [1e-3, 1e3], got {self.lengthscale!r}")
        if not is_num(self.gamma) or not 1.0 <= self.gamma <= MAX_GAMMA:
            raise SpecError(f"gamma must be in [1, {MAX_GAMMA:g}], got {self.gamma!r}")
        if not is_num(self.count_scale) or not 0 < self.count_scale <= 4:
            raise SpecError(f"count_scale must be in (0, 4], got {self.count_scale!r}")
        if not is_int(self.feature_seed) or not 0 <= self.feature_seed < 2**63:
            raise SpecError("feature_seed must be a non-negative 64-bit integer")
        if not is_int(self.latent) or not 1 <= self.latent <= MAX_LATENT:
            raise SpecError(f"latent must be in [1, {MAX_LATENT}]")
        if len(self.hidden) > MAX_LAYERS or any(
            not is_int(h) or not 1 <= h <= MAX_HIDDEN for h in self.hidden
        ):
            raise SpecError(f"hidden must be at most {MAX_LAYERS} layers of 1..{MAX_HIDDEN} units")
        if not is_num(self.tolerated_dropout) or not 0 <= self.tolerated_dropout < 1:
            raise SpecError(f"tolerated_dropout must be in [0, 1), got {self.tolerated_dropout!r}")
        if not is_num(self.marginal_weight) or not 0 <= self.marginal_weight <= 1:
            raise SpecError(f"marginal_weight must be in [0, 1], got {self.marginal_weight!r}")
        mf = self.marginal_features
        if not is_int(mf) or not 2 <= mf <= MAX_MARGINAL_FEATURES or mf % 2:
            raise SpecError(f"marginal_features must be an even integer in [2, {MAX_MARGINAL_FEATURES}]")
        if not is_num(self.marginal_lengthscale) or not 1e-3 <= self.marginal_lengthscale <= 1e3:
            raise SpecError(f"marginal_lengthscale must be in [1e-3, 1e3], got {self.marginal_lengthscale!r}")
        if not is_num(self.conv_weight) or not 0 <= self.conv_weight <= 1:
            raise SpecError(f"conv_weight must be in [0, 1], got {self.conv_weight!r}")
        if self.marginal_weight + self.conv_weight > 1 + 1e-12:
            raise SpecError("marginal_weight + conv_weight must be at most 1 (they share φ's unit norm)")
        if not is_int(self.conv_filters) or not 0 <= self.conv_filters <= MAX_CONV_FILTERS:
            raise SpecError(f"conv_filters must be an integer in [0, {MAX_CONV_FILTERS}]")
        if (self.conv_weight > 0) != (self.conv_filters > 0):
            raise SpecError("conv_weight and conv_filters go together: both zero or both positive")
        if self.kind == "merf-conv" and len(self.hidden) != 1:
            raise SpecError("a merf-conv generator takes hidden = [base channels] (one number)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "features": self.features,
            "lengthscale": self.lengthscale,
            "gamma": self.gamma,
            "count_scale": self.count_scale,
            "feature_seed": self.feature_seed,
            "latent": self.latent,
            "hidden": list(self.hidden),
            "tolerated_dropout": self.tolerated_dropout,
            "marginal_weight": self.marginal_weight,
            "marginal_features": self.marginal_features,
            "marginal_lengthscale": self.marginal_lengthscale,
            # written only when used, so every spec from before images normalises as it did
            **(
                {"conv_weight": self.conv_weight, "conv_filters": self.conv_filters}
                if self.conv_filters
                else {}
            ),
        }

    @staticmethod
    def from_dict(d: Any) -> MerfSpec:
        if not isinstance(d, dict):
            raise SpecError("a fed-merf spec must be a JSON object")
        known = set(MerfSpec().to_dict()) | {"conv_weight", "conv_filters"}
        if set(d) - known:
            raise SpecError(f"unknown fed-merf spec fields {sorted(set(d) - known)}")
        hidden = d.get("hidden", [128, 128])
        if not isinstance(hidden, list | tuple):
            raise SpecError("fed-merf spec field 'hidden' must be a list of integers")

        def num(k: str, default: float) -> float:
            v = d.get(k, default)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise SpecError(f"fed-merf spec field {k!r} must be a number")
            return float(v)

        kind = d.get("kind", "merf-mlp")
        if not isinstance(kind, str):
            raise SpecError("fed-merf spec field 'kind' must be a string")
        return MerfSpec(
            features=d.get("features", 200),
            lengthscale=num("lengthscale", 1.0),
            gamma=num("gamma", 4096.0),
            count_scale=num("count_scale", 1.0),
            feature_seed=d.get("feature_seed", 0),
            latent=d.get("latent", 16),
            hidden=tuple(hidden),
            tolerated_dropout=num("tolerated_dropout", 0.1),
            marginal_weight=num("marginal_weight", 0.5),
            marginal_features=d.get("marginal_features", 16),
            marginal_lengthscale=num("marginal_lengthscale", 0.1),
            kind=kind,
            conv_weight=num("conv_weight", 0.0),
            conv_filters=d.get("conv_filters", 0),
        )


class ConvBody(nn.Module):
    """[z, one-hot(c)] → Linear → (ch, H/4, W/4) → 2 × (nearest upsample ×2, 3×3 conv, LeakyReLU)
    → 3×3 conv → C·H·W pixel logits (flattened row-major, the image schema's column order)."""

    def __init__(self, inp: int, image: tuple[int, int, int], ch: int) -> None:
        super().__init__()
        c, h, w = image
        if h % 4 or w % 4:
            raise SpecError(f"a merf-conv generator needs image sides divisible by 4, got {h}x{w}")
        self.shape = (ch, h // 4, w // 4)
        half, quarter = max(ch // 2, 1), max(ch // 4, 1)
        self.fc = nn.Linear(inp, ch * (h // 4) * (w // 4))
        self.body = nn.Sequential(
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ch, half, 3, padding=1),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(half, quarter, 3, padding=1),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Conv2d(quarter, c, 3, padding=1),
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.fc(v).view(len(v), *self.shape)
        return self.body(h).flatten(1)


class MerfNet(nn.Module):
    """G(z, c) → logits over the encoded row; :meth:`decode` turns them into an encoded row."""

    def __init__(
        self,
        spec: MerfSpec,
        layout: tuple[tuple[str, int], ...],
        n_classes: int,
        image: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.n_classes = n_classes
        self.layout = layout
        out = sum(w for _, w in layout)
        self.net: nn.Module
        if spec.kind == "merf-conv":
            if image is None:
                raise SpecError("a merf-conv generator needs an image schema")
            self.net = ConvBody(spec.latent + n_classes, image, spec.hidden[0])
        else:
            sizes = [spec.latent + n_classes, *spec.hidden, out]
            layers: list[nn.Module] = []
            for i in range(len(sizes) - 1):
                layers.append(nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    layers.append(nn.LeakyReLU(NEGATIVE_SLOPE))
            self.net = nn.Sequential(*layers)
        self._all_cont = all(k == "continuous" for k, _ in layout)
        self._cat: list[tuple[int, int]] = []
        self._cont: list[int] = []
        pos = 0
        for kind, w in layout:
            (self._cat.append((pos, pos + w)) if kind == "categorical" else self._cont.append(pos))
            pos += w

    def forward(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(codes, self.n_classes).to(z.dtype)
        return self.net(torch.cat([z, onehot], dim=1))

    def decode(
        self,
        logits: torch.Tensor,
        *,
        hard: bool = False,
        tau: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits → encoded row: sigmoid per continuous slot; per categorical block the softmax
        probabilities, or (``hard``, training) a straight-through Gumbel-softmax one-hot: the
        forward pass is an exact one-hot draw from the softmax (what sampling decodes), the
        gradient that of the tempered softmax."""
        if self._all_cont:  # images: one sigmoid over every pixel slot
            return torch.sigmoid(logits)
        parts: list[torch.Tensor] = []
        pos = 0
        for kind, w in self.layout:
            seg = logits[:, pos : pos + w]
            if kind == "continuous":
                parts.append(torch.sigmoid(seg))
            elif hard:
                u = torch.rand(seg.shape, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
                soft = torch.softmax((seg - torch.log(-torch.log(u))) / tau, dim=1)
                one = nn.functional.one_hot(soft.argmax(dim=1), w).to(soft.dtype)
                parts.append(one + soft - soft.detach())
            else:
                parts.append(torch.softmax(seg, dim=1))
            pos += w
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def generate(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encoded rows of the classes ``codes``: category probabilities, continuous values."""
        z = torch.randn(len(codes), self.spec.latent, generator=generator)
        return self.decode(self(z, codes))


def build_net(
    spec: MerfSpec,
    layout: tuple[tuple[str, int], ...],
    n_classes: int,
    image: tuple[int, int, int] | None = None,
) -> MerfNet:
    if sum(w for _, w in layout) > MAX_INPUT:
        raise SpecError(f"the encoded row is wider than {MAX_INPUT} slots")
    if spec.conv_filters and image is None:
        raise SpecError("conv features (conv_filters > 0) need an image schema")
    return MerfNet(spec, layout, n_classes, image)


@functools.lru_cache(maxsize=256)
def expected_tensors(
    spec: MerfSpec,
    layout: tuple[tuple[str, int], ...],
    n_classes: int,
    image: tuple[int, int, int] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor of the generator (a pure function of spec and schema)."""
    return {k: tuple(v.shape) for k, v in build_net(spec, layout, n_classes, image).state_dict().items()}


__all__ = ["KINDS", "MAX_FEATURES", "ConvBody", "MerfNet", "MerfSpec", "build_net", "expected_tensors"]
