"""Network architectures, fixed by a JSON spec the hub can publish and check.

A decoder spec is plain data (:class:`DecoderSpec`); :func:`build_decoder` turns it into a torch
module whose parameter names and shapes are a pure function of the spec. That is what makes
weight files verifiable without unpickling anything: the receiver builds the module from the
spec it trusts and accepts only tensors that fit it exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedsynth.generators.base import SpecError

#: Bounds on a spec a hub will accept (guards against memory-exhaustion via giant specs).
MAX_LATENT = 1024
MAX_HIDDEN = 4096
MAX_LAYERS = 8
MAX_OUTPUT = 100_000


@dataclass(frozen=True)
class DecoderSpec:
    """Dense decoder z -> x: Linear+LeakyReLU hidden layers, then one linear head.

    ``layout`` lists the output blocks ``(name, kind, width)`` of the table encoding.
    Categorical blocks are read through a softmax. Continuous columns are Gaussian
    (``continuous="gaussian"``: the head emits a mean logit μ and a log-scale log s per column,
    x ~ N(sigmoid(μ), s²) clipped to [0, 1], so samples keep the data's spread) or Bernoulli-mean
    (``"bernoulli"``: sigmoid(μ) only). The head's width is the layout total plus one log-scale
    per continuous column in the Gaussian case.
    """

    latent_dim: int
    hidden: tuple[int, ...]
    layout: tuple[tuple[str, str, int], ...]
    negative_slope: float = 0.2
    kind: str = "mlp-decoder"
    continuous: str = "gaussian"

    def __post_init__(self) -> None:
        if self.kind != "mlp-decoder":
            raise SpecError(f"unsupported decoder kind {self.kind!r}")
        if not (1 <= self.latent_dim <= MAX_LATENT):
            raise SpecError(f"latent_dim must be in [1, {MAX_LATENT}]")
        if len(self.hidden) > MAX_LAYERS or any(not (1 <= h <= MAX_HIDDEN) for h in self.hidden):
            raise SpecError(f"hidden layers must be <= {MAX_LAYERS} layers of 1..{MAX_HIDDEN} units")
        if not self.layout or any(k not in ("categorical", "continuous") or w < 1 for _, k, w in self.layout):
            raise SpecError("layout must be a non-empty list of (name, categorical|continuous, width>=1)")
        if any(k == "continuous" and w != 1 for _, k, w in self.layout):
            raise SpecError("continuous blocks have width 1")
        if self.continuous not in ("gaussian", "bernoulli"):
            raise SpecError("continuous likelihood must be 'gaussian' or 'bernoulli'")
        if self.output_dim > MAX_OUTPUT:
            raise SpecError(f"output dimension {self.output_dim} exceeds {MAX_OUTPUT}")

    @property
    def output_dim(self) -> int:
        """Width of the encoded table this decoder produces."""
        return sum(w for _, _, w in self.layout)

    @property
    def n_continuous(self) -> int:
        return sum(1 for _, k, _ in self.layout if k == "continuous")

    @property
    def head_dim(self) -> int:
        return self.output_dim + (self.n_continuous if self.continuous == "gaussian" else 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "negative_slope": self.negative_slope,
            "continuous": self.continuous,
            "layout": [{"name": n, "kind": k, "width": w} for n, k, w in self.layout],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> DecoderSpec:
        try:
            return DecoderSpec(
                latent_dim=int(d["latent_dim"]),
                hidden=tuple(int(h) for h in d["hidden"]),
                layout=tuple((str(b["name"]), str(b["kind"]), int(b["width"])) for b in d["layout"]),
                negative_slope=float(d.get("negative_slope", 0.2)),
                kind=str(d.get("kind", "mlp-decoder")),
                continuous=str(d.get("continuous", "gaussian")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(f"malformed decoder spec: {e}") from None


def mlp(sizes: list[int], negative_slope: float) -> nn.Sequential:
    """Linear layers with LeakyReLU between them (not after the last). No in-place ops (Opacus)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(negative_slope))
    return nn.Sequential(*layers)


LOG_SCALE_MIN, LOG_SCALE_MAX = -6.0, 1.0


class Decoder(nn.Module):
    """z -> head. Head = [encoded-table logits (output_dim) | continuous log-scales (gaussian)]."""

    _cont: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = mlp([spec.latent_dim, *spec.hidden, spec.head_dim], spec.negative_slope)
        cat_slices, cont_idx, pos = [], [], 0
        for _, k, w in spec.layout:
            if k == "categorical":
                cat_slices.append((pos, pos + w))
            else:
                cont_idx.append(pos)
            pos += w
        self._cat = cat_slices
        self._gaussian = spec.continuous == "gaussian" and bool(cont_idx)
        self.register_buffer("_cont", torch.tensor(cont_idx, dtype=torch.long), persistent=False)
        if self._gaussian:
            # Start the scales at s = 0.1 of the public range (a prior, not data): noisy DP steps
            # are too few to walk log s from 0 to a typical spread.
            head = self.net[-1]
            assert isinstance(head, nn.Linear)  # mlp() ends with a Linear layer
            with torch.no_grad():
                head.bias[spec.output_dim :] = math.log(0.1)
                head.weight[spec.output_dim :] *= 0.1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Raw head (the VAE loss works on these)."""
        return self.net(z)

    def split(self, head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Head -> (logits over the encoded table, clamped continuous log-scales or None)."""
        d = self.spec.output_dim
        if not self._gaussian:
            return head[:, :d], None
        return head[:, :d], head[:, d:].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> softmax per categorical block, sigmoid (the mean) per continuous slot."""
        out = torch.empty_like(logits)
        for a, b in self._cat:
            out[:, a:b] = torch.softmax(logits[:, a:b], dim=1)
        if len(self._cont):
            out[:, self._cont] = torch.sigmoid(logits[:, self._cont])
        return out

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Category probabilities and continuous *samples* (mean + Gaussian noise, in [0, 1])."""
        z = torch.randn(n, self.spec.latent_dim, generator=generator)
        logits, log_s = self.split(self.net(z))
        out = self.probs(logits)
        if log_s is not None:
            eps = torch.randn(n, len(self._cont), generator=generator)
            out[:, self._cont] = (out[:, self._cont] + log_s.exp() * eps).clamp(0.0, 1.0)
        return out


def build_decoder(spec: DecoderSpec) -> Decoder:
    return Decoder(spec)


@functools.lru_cache(maxsize=256)
def expected_tensors(spec: DecoderSpec) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor a decoder of this spec has (a pure function of the spec)."""
    return {k: tuple(v.shape) for k, v in build_decoder(spec).state_dict().items()}
