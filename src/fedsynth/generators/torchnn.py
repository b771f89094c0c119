"""What the torch families share: a module's parameters as the float32 numpy arrays an artifact ships."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema
from fedsynth.generators.base import RandomStreams, class_codes, decode_rows, streams


def module_tensors(module: nn.Module) -> dict[str, np.ndarray]:
    """``state_dict`` as contiguous float32 CPU arrays (deterministic names and order)."""
    return {
        k: v.detach().to(torch.float32).contiguous().cpu().numpy() for k, v in module.state_dict().items()
    }


def load_module_tensors(module: nn.Module, tensors: dict[str, np.ndarray]) -> nn.Module:
    """Load verified arrays into a module built from a trusted spec (strict: names must match)."""
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    module.eval()
    return module


class ConditionalNetGenerator:
    """A released class-conditional network (``net.generate(class_codes, generator=...)`` → encoded
    rows): one joint model that draws any schema class (dp-gan, fed-merf)."""

    what = "generator"  # how errors name it

    def __init__(self, card: GeneratorCard, net: Any, schema: Schema, source: str = "") -> None:
        if card.class_label is not None:
            raise ArtifactError(
                f"a {card.family} generator is conditioned on the class: its card has no class_label"
            )
        self.card = card
        self.net = net
        self.schema = schema
        self.source = source
        self._enc = TableEncoder(schema)

    def sample(self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0) -> pd.DataFrame:
        rs = streams(seed)
        idx = class_codes(self.schema, int(n), condition, rs.numpy)
        x = self.net.generate(torch.from_numpy(idx), generator=rs.torch()).numpy()
        labels = np.asarray(self.schema.classes, dtype=object)[idx]
        return decode_rows(x, self._enc, labels, rs.numpy, self.what)

    def tensors(self) -> dict[str, np.ndarray]:
        return module_tensors(self.net)


@dataclass
class LossTrace:
    """Running mean of a training loss, logged ``points`` times over ``steps`` (local reports only)."""

    steps: int
    points: int = 20
    losses: list[float] = field(default_factory=list)
    _sum: float = 0.0
    _count: int = 0

    def add(self, step: int, value: float) -> None:
        self._sum += value
        self._count += 1
        if (step + 1) % max(1, self.steps // self.points) == 0 and self._count:
            self.losses.append(self._sum / self._count)
            self._sum, self._count = 0.0, 0

    @property
    def final(self) -> float:
        return self.losses[-1] if self.losses else float("nan")
