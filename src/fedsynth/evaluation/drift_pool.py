"""The drift benchmark's generator pools: per-silo sets (or one federation-level fit over all silos)
→ a :class:`~fedsynth.generators.pool.GeneratorPool`, its ε and bytes, and draws from it as model
inputs (class-balanced, or in a silo's own class mix with a stated fallback)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.data.schema import SchemaError
from fedsynth.evaluation.drift_task import DriftTask
from fedsynth.generators.base import GeneratorSet, TooFewRowsError, get_family, is_federation_family
from fedsynth.generators.federation import fit_federation
from fedsynth.generators.io import to_artifact
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget, default_delta

Progress = Callable[[str, int, int], None]


@dataclass
class Pool:
    """A family's pool for one seed, and what building it cost."""

    family: str
    name: str
    pool: GeneratorPool
    epsilon: float
    push_bytes: list[float]  # per silo: its artifacts, or its share of a federation round
    pull_bytes: float  # the whole pool, downloaded by every silo
    seconds: float
    missing_classes: list[str]
    silos_skipped: dict[int, str] = field(default_factory=dict)  # silo -> why it pushed nothing


def _nbytes(gens: Any) -> float:
    """Bytes of the generators' artifacts (card + safetensors), as pushed and pulled."""
    return float(sum(len(c) + len(w) for c, w in map(to_artifact, gens)))


def build_pool(
    task: DriftTask,
    name: str,
    frames: list[pd.DataFrame],
    *,
    epsilon: float,
    delta: float | None,
    gen_config: Any = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Pool:
    """Per-silo generator sets (or one federation-level fit over all silos) → the pool."""
    t0 = time.perf_counter()
    family = get_family(name)
    gen_cfg = gen_config or family.default_config(task.name)
    s = task.schema
    sets: list[GeneratorSet] = []
    skipped: dict[int, str] = {}
    if is_federation_family(family):
        target = PrivacyTarget(epsilon, delta or default_delta(sum(map(len, frames))))
        gset, rep = fit_federation(family, frames, s, target, gen_cfg, seed=seed)  # type: ignore[arg-type]
        sets.append(gset)
        d = rep.to_dict()
        push = [float(d["bytes_sent_per_silo"] + d["bytes_received_per_silo"])] * len(frames)
        if progress:
            progress("generators", len(frames), len(frames))
    else:
        target = PrivacyTarget(epsilon, delta)
        push = []
        for i, df in enumerate(frames):
            try:
                gs = family.fit(df, s, target, gen_cfg, seed=seed * 100 + i)
            except (SchemaError, TooFewRowsError) as e:
                # a skewed silo the family cannot serve (e.g. one class for a joint model):
                # it pushes nothing and still pulls the pool
                skipped[i] = str(e)
                push.append(0.0)
            else:
                sets.append(gs)
                push.append(_nbytes(gs.generators))
            if progress:
                progress("generators", i + 1, len(frames))
    gens = [g for gs in sets for g in gs.generators]
    if not gens:
        raise ValueError(f"no silo could train a {name} generator: {skipped}")
    pull = _nbytes(gens)
    pool = GeneratorPool(s, gens)
    missing = [c for c in task.classes if c not in pool.classes]
    return Pool(
        family.kind,
        name,
        pool,
        max(gs.epsilon for gs in sets),
        push,
        pull,
        time.perf_counter() - t0,
        missing,
        skipped,
    )


def draw(
    task: DriftTask, pool: Pool, n: int, seed: int, mix: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``n`` pool rows as model inputs: class-balanced, or in the class ``mix`` (proportions in
    schema order). Returns (x, y, fell_back): a mix with no weight on any class the pool has
    falls back to class-balanced rows."""
    weights = None
    fell_back = False
    if mix is not None:
        weights = {c: float(w) for c, w in zip(task.classes, mix, strict=True)}
        if sum(weights.get(c, 0.0) for c in pool.pool.classes) <= 0:
            weights, fell_back = None, True
    df = pool.pool.sample(max(1, n), seed=seed, class_weights=weights)
    x, y = task.to_xy(df)
    return x, y, fell_back


__all__ = ["Pool", "build_pool", "draw"]
