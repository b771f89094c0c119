"""What the torch families share: a module's parameters as the float32 numpy arrays an artifact ships."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema
from fedsynth.generators.base import (
    FamilySpec,
    FitReport,
    Generator,
    GeneratorSet,
    RandomStreams,
    TooFewRowsError,
    class_codes,
    decode_rows,
    make_card,
    streams,
)
from fedsynth.privacy.dpsgd import dpsgd_claim
from fedsynth.privacy.target import PrivacyTarget

log = logging.getLogger(__name__)
M = TypeVar("M", bound=nn.Module)

if "FEDSYNTH_THREADS" in os.environ:  # the CLI's thread setting, for commands that load torch late
    torch.set_num_threads(int(os.environ["FEDSYNTH_THREADS"]))


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


def fit_per_class(
    x: np.ndarray,
    y: np.ndarray,
    schema: Schema,
    kind: str,
    spec: FamilySpec,
    target: PrivacyTarget,
    train: Callable[[np.ndarray, str, float, int], tuple[M, Any]],
    wrap: Callable[[GeneratorCard, M], Generator],
    *,
    seed: int,
    strict: bool,
    on_fit: Callable[[FitReport], None] | None,
    what: str = "rows",
) -> GeneratorSet:
    """One DP-SGD model per class of ``schema`` (the SGDE protocol; the classes' rows are disjoint,
    so the set costs the max over its cards — :func:`~fedsynth.generators.base.set_cost`).

    ``train(rows, class_label, delta, seed)`` → (module, report with ``account``, ``n_rows``,
    ``seconds``, ``final_loss``, ``losses``); δ is the target's per-class rule on the class size.
    The claim comes from the run's accountant (``dpsgd_claim``). A class with too few rows is
    skipped with its message (or raised, ``strict``); none at all is an error."""
    gens: list[Generator] = []
    reports: list[FitReport] = []
    skipped: list[str] = []
    for k, cls in enumerate(schema.classes):
        rows = x[y == cls]
        if len(rows) == 0:
            continue
        try:
            module, rep = train(rows, cls, target.delta_for(len(rows)), seed * 1000 + k)
        except TooFewRowsError as e:
            if strict:
                raise
            log.warning("%s; skipping this class", e)
            skipped.append(str(e))
            continue
        claim = dpsgd_claim(rep.account)
        card = make_card(kind, spec, schema, cls, claim, module_tensors(module))
        gens.append(wrap(card, module))
        fr = FitReport(cls, rep.n_rows, rep.seconds, claim, rep.final_loss, rep.losses)
        reports.append(fr)
        if on_fit:
            on_fit(fr)
    if not gens:
        raise TooFewRowsError(f"no class had enough {what} to train a generator: " + "; ".join(skipped))
    return GeneratorSet(schema, kind, gens, reports, skipped)
