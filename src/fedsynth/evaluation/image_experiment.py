"""The SGDE experiment on images (MNIST, Fashion-MNIST; the paper's image results) on one machine.

For each seed: split the training images into ``silos`` non-overlapping random shares of
``fraction`` (paper: 20 × 5 % = 3,000 MNIST images each); every silo trains its DP generator set
(or, for a federation-level family, one generator is fitted across all silos under secure
aggregation, as :mod:`fedsynth.evaluation.sgde_experiment` does); the pool is every silo's
generators. The classifier is the small CNN of :mod:`fedsynth.evaluation.cnn` (trained from
scratch: the paper's pretrained VGG16 layers cannot be downloaded here). Scenarios, each scored on
the test split (*test_eval*) and — with ``local_eval`` — on a held-out 20 % of each silo's own
images (*local_eval*, the paper's Table I; a single 80/20 hold-out instead of 10-fold CV, which
would cost ten CNN trainings per silo and scenario):

* ``local`` — a CNN on the silo's own images (test_eval: all of them; local_eval: the 80 %).
* ``federated`` — FedAvg of the CNN over **all** silos' private images through Flower's
  ``FedAvg`` strategy (:func:`~fedsynth.evaluation.cnn.run_cnn_fedavg`), early stopping on the
  silos' held-out 10 %. local_eval scores the same global model on the silo's 20 % hold-out
  (which, as for ``pooled_real``, it saw in training).
* ``synthetic`` — a CNN on ``synthetic_per_class`` images of every class drawn from the whole pool.
  The pool is the same for every silo, so this CNN is trained **once per seed** (one sample, one
  seed) and its scores are shared by every evaluated silo.
* ``local_plus_synthetic`` — what a silo would really do with its own images and the synthetic
  ones. Candidate recipes (``lps_recipes``): ``finetune`` — start from the synthetic CNN's weights
  (pre-training on synthetic images), train on the silo's own images; ``mix`` — from the same
  weights, train on the silo's own images plus an equal number of synthetic images (replay);
  ``ensemble`` — the mean of the ``local`` and ``finetune`` CNNs' probabilities (two views of
  the task that err differently); ``local`` — ignore the synthetic images (the silo's fallback
  when they do not help). The recipe
  is chosen once per silo by the best mean(acc, F1, AUC) on a validation split (``val_frac`` of
  the silo) taken from the silo's training images — with local_eval, from the 80 % kept, so
  neither the 20 % hold-out nor the test split ever informs the choice — then refitted on the 80 %
  (local_eval) and on all the silo's images (test_eval). The choices and their validation scores
  are in ``lps_recipes`` and ``lps_validation``.
* ``pooled_real`` — a CNN on all silos' real images (the non-private ceiling), trained once.

Only the first ``eval_silos`` silos are scored (default 5, to keep one MNIST seed within about
30 minutes on 2 CPU cores); all silos train generators and all take part in FedAvg. Metrics are
averaged over the evaluated silos, then mean ± sd over seeds (:func:`aggregate`) — the JSON layout
of :func:`fedsynth.evaluation.sgde_experiment.run_seed`, so the same tables and
:func:`fedsynth.evaluation.plots.sgde_bars` read it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from fedsynth.data.images import ImageData, to_images
from fedsynth.data.partition import equal_shares
from fedsynth.evaluation.cnn import (
    CNNConfig,
    criterion,
    predict_proba_cnn,
    run_cnn_fedavg,
    train_cnn,
)
from fedsynth.evaluation.metrics import METRICS, aggregate_runs, score
from fedsynth.generators.base import GeneratorSet, get_family, is_federation_family
from fedsynth.generators.federation import fit_federation
from fedsynth.generators.io import to_artifact
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget, default_delta

SCENARIOS = ("local", "federated", "synthetic", "local_plus_synthetic", "pooled_real")
EVALS = ("local_eval", "test_eval")
RECIPES = ("finetune", "mix", "ensemble", "local")

Progress = Callable[[str, int, int], None]


@dataclass
class ImageSGDEConfig:
    silos: int = 20
    fraction: float = 0.05
    epsilon: float = 1.5
    delta: float | None = None  # None: the family's per-class rule (federation: 1/(10·N))
    generator: str = "conv-vae"
    gen_config: Any = None  # the family's config; None: its preset for the dataset
    synthetic_per_class: int = 1000
    # score only the first k silos (all silos train generators and take part in FedAvg);
    # None: every silo
    eval_silos: int | None = 5
    cnn: CNNConfig = field(default_factory=CNNConfig)
    device: str = "auto"  # overrides cnn.device
    local_eval: bool = True  # also score on a held-out 20 % of each silo (Table I)
    pooled_epochs: int = 3  # epochs of the pooled-real CNN (60k MNIST images)
    lps_recipes: tuple[str, ...] = RECIPES
    val_frac: float = 0.1  # the silo's validation split for choosing the local+synthetic recipe
    fedavg_local_epochs: int = 1
    fedavg_max_rounds: int = 20
    fedavg_patience: int = 3


def _classes(data: ImageData) -> list[str]:
    return [str(c) for c in data.schema.classes]


def _score(data: ImageData, p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    classes = _classes(data)
    pos = classes[1] if len(classes) == 2 else None
    return score(np.asarray(classes, dtype=object)[y].astype(str), p, classes, pos)


def _labels(data: ImageData, labels: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(_classes(data))}
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


def sample_synthetic(
    pool: GeneratorPool, data: ImageData, per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``per_class`` images of every class the pool can draw (uint8, integer labels)."""
    xs, ys = [], []
    for k, cls in enumerate(pool.classes):
        weights = {c: (1.0 if c == cls else 0.0) for c in pool.classes}
        df = pool.sample(per_class, seed=seed * 1009 + k, class_weights=weights)
        x, lab = to_images(df, data.schema)
        xs.append(x)
        ys.append(_labels(data, lab))
    x, y = np.concatenate(xs), np.concatenate(ys)
    perm = np.random.default_rng(seed).permutation(len(x))
    return x[perm], y[perm]


def _split(n: int, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) index arrays; ``frac`` of ``n`` held out (at least one when n ≥ 5)."""
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, round(frac * n)) if n >= 5 else 0
    return perm[k:], perm[:k]


Members = list[list[np.ndarray]]  # a model: one or more CNNs whose probabilities are averaged


def _lps_fit(
    recipe: str,
    x: np.ndarray,
    y: np.ndarray,
    syn: tuple[np.ndarray, np.ndarray],
    syn_params: list[np.ndarray],
    n_classes: int,
    cfg: CNNConfig,
    seed: int,
    cache: dict[str, list[np.ndarray]] | None = None,
) -> Members:
    """One local+synthetic recipe on the silo images ``x, y`` (see the module docstring); the CNNs
    a recipe shares with another (``ensemble`` = ``local`` + ``finetune``) are trained once per
    ``cache``."""
    fits = {} if cache is None else cache

    def one(name: str) -> list[np.ndarray]:
        if name not in fits:
            if name == "local":
                fits[name] = train_cnn(x, y, n_classes, cfg, seed=seed)
            elif name == "finetune":
                fits[name] = train_cnn(x, y, n_classes, cfg, seed=seed, init=syn_params)
            else:  # mix
                sx, sy = syn
                take = np.random.default_rng(seed).permutation(len(sx))[: len(x)]
                xm, ym = np.concatenate([x, sx[take]]), np.concatenate([y, sy[take]])
                fits[name] = train_cnn(xm, ym, n_classes, cfg, seed=seed, init=syn_params)
        return fits[name]

    if recipe in ("local", "finetune", "mix"):
        return [one(recipe)]
    if recipe == "ensemble":
        return [one("local"), one("finetune")]
    raise ValueError(f"unknown local+synthetic recipe {recipe!r}; known: {RECIPES}")


def _members_proba(members: Members, x: np.ndarray, cfg: CNNConfig) -> np.ndarray:
    return np.mean(
        [predict_proba_cnn(p, x, device=cfg.device, batch=cfg.predict_batch) for p in members], axis=0
    )


def _choose_recipe(
    cfg: ImageSGDEConfig,
    x: np.ndarray,
    y: np.ndarray,
    syn: tuple[np.ndarray, np.ndarray],
    syn_params: list[np.ndarray],
    n_classes: int,
    cnn: CNNConfig,
    seed: int,
) -> tuple[str, dict[str, float]]:
    """The recipe with the best mean(acc, F1, AUC) on a validation split of the silo's ``x``."""
    if len(cfg.lps_recipes) == 1:
        return cfg.lps_recipes[0], {}
    tr, va = _split(len(x), cfg.val_frac, seed + 17)
    if len(va) == 0:
        return cfg.lps_recipes[0], {}
    crit: dict[str, float] = {}
    classes = [str(i) for i in range(n_classes)]
    pos = "1" if n_classes == 2 else None
    cache: dict[str, list[np.ndarray]] = {}
    for r in cfg.lps_recipes:
        pr = _members_proba(
            _lps_fit(r, x[tr], y[tr], syn, syn_params, n_classes, cnn, seed, cache), x[va], cnn
        )
        crit[r] = criterion(score(y[va].astype(str), pr, classes, pos))
    best = max(cfg.lps_recipes, key=lambda r: (np.nan_to_num(crit[r], nan=-1.0), -cfg.lps_recipes.index(r)))
    return best, crit


def run_image_seed(
    data: ImageData,
    cfg: ImageSGDEConfig,
    seed: int,
    progress: Progress | None = None,
    on_sets: Callable[[list[GeneratorSet]], None] | None = None,
    shared: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """One seed of the image experiment: per-scenario metrics averaged over the evaluated silos,
    the privacy spent, sizes and timing per phase. ``on_sets`` sees the fitted generator sets
    (silo order; one set for a federation-level family), e.g. to draw sample grids.

    ``shared``: a dict kept across calls for the SAME data, seed and config except the generator —
    the scenarios that do not depend on the generator (FedAvg, pooled real, the local CNNs) are
    computed by the first call and reused by the next, so families are compared on one baseline."""
    memo: dict[Any, Any] = {} if shared is None else shared

    def once(key: Any, make: Callable[[], Any]) -> Any:
        if key not in memo:
            memo[key] = make()
        return memo[key]

    s = data.schema
    if s.image is None:
        raise ValueError("run_image_seed needs an image schema (Schema.image)")
    n_classes = len(s.classes)
    cnn = replace(cfg.cnn, device=cfg.device)
    parts = equal_shares(len(data.train_x), cfg.silos, cfg.fraction, seed=seed)
    timing: dict[str, Any] = {}

    # 1. generators: per silo, or one across the federation
    t0 = time.perf_counter()
    family = get_family(cfg.generator)
    gen_cfg = cfg.gen_config if cfg.gen_config is not None else family.default_config(data.name)
    frames = [data.frame(p) for p in parts]
    sets: list[GeneratorSet] = []
    extra: dict[str, Any] = {}
    per_silo_s: list[float] = []
    if is_federation_family(family):
        fed_target = PrivacyTarget(cfg.epsilon, cfg.delta or default_delta(sum(map(len, frames))))
        gset, rep = fit_federation(family, frames, s, fed_target, gen_cfg, seed=seed)  # type: ignore[arg-type]
        sets.append(gset)
        extra["round"] = rep.to_dict()
        if progress:
            progress("generators", cfg.silos, cfg.silos)
    else:
        target = PrivacyTarget(cfg.epsilon, cfg.delta)
        for i, df in enumerate(frames):
            t1 = time.perf_counter()
            sets.append(family.fit(df, s, target, gen_cfg, seed=seed * 100 + i))
            per_silo_s.append(time.perf_counter() - t1)
            if progress:
                progress("generators", i + 1, cfg.silos)
    del frames
    timing["generators_total_s"] = time.perf_counter() - t0
    timing["generators_per_silo_s"] = timing["generators_total_s"] / cfg.silos
    if per_silo_s:
        timing["generators_silo_s"] = per_silo_s
    artifact_bytes = [sum(len(c) + len(w) for c, w in map(to_artifact, gs.generators)) for gs in sets]
    pool = GeneratorPool(s, [g for gs in sets for g in gs.generators])
    if on_sets is not None:
        on_sets(sets)

    # 2. the synthetic-only CNN: one pool, one sample, trained once per seed for every silo
    t0 = time.perf_counter()
    syn = sample_synthetic(pool, data, cfg.synthetic_per_class, seed=seed * 1000 + 999)
    timing["synthetic_sample_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    syn_params = train_cnn(*syn, n_classes, cnn, seed=seed * 1000 + 998)
    timing["synthetic_train_s"] = time.perf_counter() - t1
    if progress:
        progress("synthetic", 1, 1)

    # 3. FedAvg of the CNN over every silo's private images (Flower's strategy)
    t0 = time.perf_counter()
    fed = once(
        "fedavg",
        lambda: run_cnn_fedavg(
            [(data.train_x[p], data.train_y[p]) for p in parts],
            n_classes,
            cnn,
            local_epochs=cfg.fedavg_local_epochs,
            max_rounds=cfg.fedavg_max_rounds,
            patience=cfg.fedavg_patience,
            seed=seed,
            progress=(lambda r, _c: progress("fedavg rounds", r, cfg.fedavg_max_rounds))
            if progress
            else None,
        ),
    )
    timing["fedavg_s"] = time.perf_counter() - t0

    # 4. pooled real images (the ceiling)
    t0 = time.perf_counter()
    pooled_idx = np.concatenate(parts)
    pooled_params = once(
        "pooled",
        lambda: train_cnn(
            data.train_x[pooled_idx],
            data.train_y[pooled_idx],
            n_classes,
            replace(cnn, epochs=cfg.pooled_epochs),
            seed=seed * 1000 + 997,
        ),
    )
    timing["pooled_s"] = time.perf_counter() - t0

    # 5. per evaluated silo
    def proba(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        return predict_proba_cnn(params, x, device=cnn.device, batch=cnn.predict_batch)

    xt, yt = data.test_x, data.test_y
    shared_test = {
        "federated": _score(data, proba(fed.params, xt), yt),
        "synthetic": _score(data, proba(syn_params, xt), yt),
        "pooled_real": _score(data, proba(pooled_params, xt), yt),
    }
    evals = EVALS if cfg.local_eval else ("test_eval",)
    per: dict[str, dict[str, list[dict[str, float]]]] = {sc: {e: [] for e in evals} for sc in SCENARIOS}
    n_eval = min(cfg.eval_silos or cfg.silos, cfg.silos)
    chosen: list[str] = []
    crits: list[dict[str, float]] = []
    t_eval = time.perf_counter()
    for i in range(n_eval):
        x, y = data.train_x[parts[i]], data.train_y[parts[i]]
        sd = seed * 1000 + i
        # the recipe is chosen once per silo, by a validation split of the images the models
        # train on: with local_eval the 80 % kept (the 20 % hold-out and the test split are never
        # seen by the choice), else all the silo's images
        keep, hold = _split(len(x), 0.2, sd + 31) if cfg.local_eval else (np.arange(len(x)), np.arange(0))
        recipe, crit = _choose_recipe(cfg, x[keep], y[keep], syn, syn_params, n_classes, cnn, sd)
        chosen.append(recipe)
        crits.append(crit)
        loc = once(("local", i), partial(train_cnn, x, y, n_classes, cnn, seed=sd))
        lps = _lps_fit(recipe, x, y, syn, syn_params, n_classes, cnn, sd, {"local": loc})
        per["local"]["test_eval"].append(_score(data, proba(loc, xt), yt))
        per["local_plus_synthetic"]["test_eval"].append(_score(data, _members_proba(lps, xt, cnn), yt))
        for sc, m in shared_test.items():
            per[sc]["test_eval"].append(m)
        if cfg.local_eval:
            xk, yk, xh, yh = x[keep], y[keep], x[hold], y[hold]
            loc80 = once(("local80", i), partial(train_cnn, xk, yk, n_classes, cnn, seed=sd))
            lps80 = _lps_fit(recipe, xk, yk, syn, syn_params, n_classes, cnn, sd, {"local": loc80})
            le: dict[str, Members] = {
                "local": [loc80],
                "local_plus_synthetic": lps80,
                "federated": [fed.params],
                "synthetic": [syn_params],
                "pooled_real": [pooled_params],
            }
            for sc, members in le.items():
                per[sc]["local_eval"].append(_score(data, _members_proba(members, xh, cnn), yh))
        if progress:
            progress("evaluation", i + 1, n_eval)
    timing["evaluation_s"] = time.perf_counter() - t_eval
    avg = {
        sc: {e: {m: float(np.nanmean([d[m] for d in per[sc][e]])) for m in METRICS} for e in evals}
        for sc in SCENARIOS
    }
    return {
        "scenarios": avg,
        "epsilon_spent_max": max(gs.epsilon for gs in sets),
        "delta_max": max(gs.delta for gs in sets),
        "family": family.kind,
        "generators": sum(len(gs.cards) for gs in sets),
        "artifact_bytes_per_silo": float(np.mean(artifact_bytes)),
        "skipped_classes": [m for gs in sets for m in gs.skipped],
        "scope": "federation" if is_federation_family(family) else "silo",
        **extra,
        "silos": cfg.silos,
        "eval_silos": n_eval,
        "local_eval": "held-out 20 % of each silo" if cfg.local_eval else None,
        "classifier": {
            "model": "small CNN from scratch (conv-pool-conv-pool-fc-fc; no pretrained VGG16)",
            "channels": list(cnn.channels),
            "hidden": cnn.hidden,
            "epochs": cnn.epochs,
            "pooled_epochs": cfg.pooled_epochs,
            "batch_size": cnn.batch_size,
            "lr": cnn.lr,
            "device": str(cnn.device),
        },
        "synthetic_images": len(syn[0]),
        "synthetic_trained_once": True,
        "lps_recipes": chosen,
        "lps_validation": crits,
        "fedavg_rounds": fed.rounds,
        "fedavg_best_round": fed.best_round,
        "fedavg_history": fed.history,
        "fedavg_local_epochs": cfg.fedavg_local_epochs,
        "fedavg_bytes_per_client_per_round": fed.bytes_per_client_per_round,
        "timing": timing,
    }


def aggregate(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and sd over seeds (:func:`~fedsynth.evaluation.metrics.aggregate_runs`)."""
    return aggregate_runs(runs, SCENARIOS, EVALS)


__all__ = [
    "EVALS",
    "RECIPES",
    "SCENARIOS",
    "ImageSGDEConfig",
    "aggregate",
    "run_image_seed",
    "sample_synthetic",
]
