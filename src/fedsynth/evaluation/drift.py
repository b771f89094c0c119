"""Synthetic data against non-IID drift: ``fedsynth bench drift`` on one machine.

Per seed and split parameter (Dirichlet β of a label or quantity skew, or K missing classes): the
training rows are partitioned over ``silos`` (:func:`fedsynth.data.partition.drift_partition`),
each silo keeps ``holdout`` of its rows aside (its own held-out rows: the per-silo scores), and
every method trains the same model — a small MLP for tables, the small CNN for images
(:mod:`fedsynth.evaluation.fedtrain`) — for a fixed number of rounds. Methods:

=========================  ========================================================  ==========
method                     what it does                                              ε / record
=========================  ========================================================  ==========
``local``                  each silo alone on its own rows                           0 (nothing leaves)
``pooled``                 one model on every silo's real rows (the non-private      none (∞)
                           ceiling; the bias reference "real")
``fedavg``                 Flower ``FedAvg`` on the private rows                     none (∞)
``fedprox``                Flower ``FedProx`` (μ/2‖w − w_g‖² at the silos)           none (∞)
``fedavgm``                Flower ``FedAvgM`` (server momentum, Hsu et al. 2019)     none (∞)
``dp-fedavg``              FedAvg, every silo trains with DP-SGD (Opacus), ε         accountant
                           accounted over all rounds (:class:`~.fedtrain.DPConfig`)
``synthetic``              SGDE: one model on class-balanced pool rows only          generators'
``synthetic+finetune``     per silo: the synthetic model fine-tuned on its own rows  generators'
                           plus pool rows in its own class mix (only generators
                           ever leave a silo)
``fedavg+synthetic``       FedAvg, each silo's rows augmented with class-balanced    none (∞)
                           pool rows
``synthetic-regulariser``  FedAvg on private rows + λ·KL(teacher ‖ local) on pool   none (∞)
                           rows, the teacher = the ``synthetic`` model (or, with
                           ``distill_teacher="global"``, the round's global model)
``personalised``           ``fedavg+synthetic``'s global model fine-tuned per silo   none (∞)
                           on its own rows + pool rows in its own class mix
=========================  ========================================================  ==========

The five synthetic methods run once per generator family (``generators``; per-silo families and
federation-level ones, whose statistics are summed under SecAgg+ with one noise draw). Scores:
global test accuracy / F1 / AUC (for per-silo models: the mean over silos of each silo's model
on the test split); per-silo accuracy on each silo's held-out rows (mean and worst); the global
model's test accuracy and AUC after every round (history; rounds to reach 95 % of the final
value); bytes per silo (model down + up every round, plus generator push and pool pull); on data
with ``sex`` / ``race`` columns the TPR and positive-rate gaps between groups
(:mod:`fedsynth.evaluation.fairness`). ``synthetic``'s per-silo scores shift its balanced
predictions to the silo's own class prior (Bayes' rule; the silo knows its prior).

A pool without some class: sampling draws only the classes the pool has; a silo whose own classes
are all missing from the pool falls back to class-balanced rows (counted in ``fallbacks``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsynth.data.partition import PartitionError, drift_partition
from fedsynth.evaluation.drift_checks import aggregate, drift_checks
from fedsynth.evaluation.drift_pool import Pool, build_pool, draw
from fedsynth.evaluation.drift_task import DriftTask, load_task
from fedsynth.evaluation.fairness import attribute_gaps
from fedsynth.evaluation.fedtrain import (
    DPConfig,
    FedRun,
    LocalConfig,
    SiloTrainer,
    init_params,
    make_strategy,
    predict_proba,
    rounds_to,
    run_rounds,
    train_model,
)
from fedsynth.evaluation.metrics import METRICS, score
from fedsynth.privacy.target import default_delta

BASE_METHODS = ("local", "pooled", "fedavg", "fedprox", "fedavgm", "dp-fedavg")
SYNTHETIC_METHODS = (
    "synthetic",
    "synthetic+finetune",
    "fedavg+synthetic",
    "synthetic-regulariser",
    "personalised",
)
METHODS = BASE_METHODS + SYNTHETIC_METHODS
#: per-dataset settings of :class:`DriftConfig` (``--set`` overrides them): tiny tables need more
#: local steps per round; images a CNN's learning rate and a smaller synthetic set
PRESETS: dict[str, dict[str, Any]] = {
    "titanic": {"batch_size": 16, "local_epochs": 5, "min_rows": 10},
    "breast_cancer": {"batch_size": 16, "local_epochs": 5, "min_rows": 10},
    "mnist": {"synthetic_rows": 5000, "alone_epochs": 10, "finetune_epochs": 3, "pooled_epochs": 3},
    "fashion_mnist": {"synthetic_rows": 5000, "alone_epochs": 10, "finetune_epochs": 3, "pooled_epochs": 3},
}

Progress = Callable[[str, int, int], None]


@dataclass
class DriftConfig:
    silos: int = 20
    epsilon: float = 1.0  # per record, for the generators and for dp-fedavg alike
    delta: float | None = None  # None: generators' own rule; dp-fedavg 1/(10 n) per silo
    generators: tuple[str, ...] = ("vae", "fed-pgm")
    gen_configs: dict[str, Any] = field(default_factory=dict)  # family name -> config
    methods: tuple[str, ...] = METHODS
    rounds: int = 30
    # every silo's optimiser (LocalConfig): Adam, reset each round
    lr: float = 1e-3
    batch_size: int = 64
    local_epochs: int = 1
    holdout: float = 0.2  # of each silo's rows: its own held-out rows
    min_rows: int = 20  # per silo (the partitioners redraw or refuse below this)
    alone_epochs: int = 20  # local and synthetic models, trained from scratch
    finetune_epochs: int = 5
    pooled_epochs: int = 10
    synthetic_rows: int = 10_000  # the synthetic-only model's training rows (class-balanced)
    aug_ratio: float = 1.0  # fedavg+synthetic: pool rows per private row at each silo
    min_aug: int = 200
    proximal_mu: float = 0.01
    distill_weight: float = 1.0
    # the regulariser's teacher on pool rows: the synthetic-only model, or the round's global model
    # (which, collapsed on the majority silos, teaches the collapse: docs/benchmarks.md, issue 14)
    distill_teacher: str = "synthetic"
    dp_max_grad_norm: float = 1.0
    dp_lr: float = 2e-3
    history_rows: int = 5000  # test rows scored after every round (all of them at the end)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if self.silos < 2:
            raise ValueError("a federation needs at least 2 silos")
        if not 0 < self.holdout < 1:
            raise ValueError("holdout must be in (0, 1)")
        if self.rounds < 1:
            raise ValueError("need at least one round")
        if self.distill_teacher not in ("global", "synthetic"):
            raise ValueError(f"distill_teacher must be global or synthetic, got {self.distill_teacher!r}")

    @property
    def local(self) -> LocalConfig:
        return LocalConfig(lr=self.lr, batch_size=self.batch_size, local_epochs=self.local_epochs)


def _split_holdout(parts: list[np.ndarray], frac: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for p in parts:
        perm = rng.permutation(p)
        k = max(1, round(frac * len(p)))
        out.append((np.sort(perm[k:]), np.sort(perm[:k])))
    return out


class _Scorer:
    """Scores parameter lists on the test split, a history subset and the silos' held-out rows."""

    def __init__(self, task: DriftTask, holdouts: list[np.ndarray], cfg: DriftConfig, seed: int) -> None:
        self.task, self.holdouts = task, holdouts
        n = len(task.x_test)
        self.hist_idx = (
            np.arange(n)
            if n <= cfg.history_rows
            else np.sort(np.random.default_rng(seed).choice(n, cfg.history_rows, replace=False))
        )
        self.pos = task.positive

    def metrics(self, p: np.ndarray, y: np.ndarray) -> dict[str, float]:
        c = self.task.classes
        return score(np.asarray(c, dtype=object)[y].astype(str), p, c, self.pos)

    def history(self, params: list[np.ndarray]) -> dict[str, float]:
        idx = self.hist_idx
        m = self.metrics(predict_proba(self.task.spec, params, self.task.x_test[idx]), self.task.y_test[idx])
        return {"accuracy": m["accuracy"], "auc": m["auc"]}

    def fairness(self, p: np.ndarray) -> dict[str, Any] | None:
        t = self.task
        if not t.fairness_attributes or self.pos is None or t.test_frame is None:
            return None
        k = t.classes.index(self.pos)
        return attribute_gaps(t.test_frame, t.y_test == k, p.argmax(axis=1) == k, t.fairness_attributes)

    def silo_accuracy(self, p: np.ndarray, i: int) -> float:
        y = self.task.y_train[self.holdouts[i]]
        return float(100.0 * np.mean(p.argmax(axis=1) == y))

    def global_model(self, params: list[np.ndarray]) -> dict[str, Any]:
        """One model for every silo: test metrics, per-silo held-out accuracy, fairness."""
        t = self.task
        p = predict_proba(t.spec, params, t.x_test)
        accs = [
            self.silo_accuracy(predict_proba(t.spec, params, t.x_train[h]), i)
            for i, h in enumerate(self.holdouts)
        ]
        return {"global": self.metrics(p, t.y_test), "silo_accuracy": accs, "fairness": self.fairness(p)}

    def per_silo_models(
        self, models: list[list[np.ndarray]], shift: list[np.ndarray] | None = None
    ) -> dict[str, Any]:
        """One model per silo: the mean over silos of each model's test metrics and fairness gaps;
        each silo's own model on its held-out rows. ``shift``: per silo, a class-prior shift."""
        t = self.task
        tests, accs, fair = [], [], []
        for i, params in enumerate(models):
            pt = predict_proba(t.spec, params, t.x_test)
            ph = predict_proba(t.spec, params, t.x_train[self.holdouts[i]])
            if shift is not None:
                ph = ph * shift[i]
                ph = ph / np.maximum(ph.sum(axis=1, keepdims=True), 1e-12)
            tests.append(self.metrics(pt, t.y_test))
            accs.append(self.silo_accuracy(ph, i))
            fair.append(self.fairness(pt))
        glob = {m: float(np.nanmean([d[m] for d in tests])) for m in METRICS}
        return {"global": glob, "silo_accuracy": accs, "fairness": _mean_fairness(fair)}


def _mean_fairness(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    items_ = [f for f in items if f is not None]
    if not items_:
        return None
    return {
        a: {k: float(np.nanmean([f[a][k] for f in items_])) for k in ("tpr_gap", "positive_rate_gap")}
        for a in items_[0]
    }


def _entry(
    method: str,
    scored: dict[str, Any],
    *,
    generator: str | None = None,
    epsilon: float | None,
    bytes_per_silo: float,
    run: FedRun | None = None,
    **extra: Any,
) -> dict[str, Any]:
    accs = scored["silo_accuracy"]
    fair = scored["fairness"]
    if fair is not None:  # keep the gaps (and the group rates only for the figure's reader)
        fair = {
            a: {k: v for k, v in g.items() if k in ("tpr_gap", "positive_rate_gap", "base_rate_gap")}
            for a, g in fair.items()
        }
    hist = run.history if run is not None else None
    return {
        "method": method,
        "generator": generator,
        "epsilon": epsilon,
        "global": scored["global"],
        "per_silo": {
            "mean_accuracy": float(np.mean(accs)),
            "worst_accuracy": float(np.min(accs)),
            "accuracies": accs,
        },
        "rounds_to_95": rounds_to(hist["accuracy"]) if hist else None,
        "rounds_to_95_auc": rounds_to(hist["auc"]) if hist else None,
        "bytes_per_silo": float(bytes_per_silo),
        "fairness": fair,
        "history": hist,
        **extra,
    }


def run_drift_seed(
    task: DriftTask,
    cfg: DriftConfig,
    split: str,
    param: float,
    seed: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One seed at one split parameter: ``{"entries": [...], "silo_rows": [...], "timing": {...}}``."""
    parts, moved = drift_partition(split, task.y_train, cfg.silos, param, seed, min_rows=cfg.min_rows)
    splits = _split_holdout(parts, cfg.holdout, seed + 7)
    trains = [tr for tr, _ in splits]
    holdouts = [ho for _, ho in splits]
    sc = _Scorer(task, holdouts, cfg, seed)
    spec, C = task.spec, len(task.classes)
    xs = [task.x_train[tr] for tr in trains]
    ys = [task.y_train[tr] for tr in trains]
    mixes = [np.bincount(y, minlength=C) / len(y) for y in ys]
    init = init_params(spec, seed)
    timing: dict[str, float] = {}
    entries: list[dict[str, Any]] = []
    want = set(cfg.methods)

    def tick(stage: str) -> Callable[[int], None] | None:
        return (lambda r: progress(stage, r, cfg.rounds)) if progress else None

    def federate(stage: str, strategy: str, trainers: list[SiloTrainer]) -> FedRun:
        t0 = time.perf_counter()
        run = run_rounds(
            trainers,
            make_strategy(strategy, init, proximal_mu=cfg.proximal_mu),
            init,
            cfg.rounds,
            evaluate=sc.history,
            progress=tick(stage),
        )
        timing[stage] = time.perf_counter() - t0
        return run

    # -- without generators --------------------------------------------------------------------
    if "local" in want:
        t0 = time.perf_counter()
        models = [
            train_model(spec, x, y, cfg.local, epochs=cfg.alone_epochs, seed=seed * 1000 + i)
            for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        ]
        entries.append(_entry("local", sc.per_silo_models(models), epsilon=0.0, bytes_per_silo=0))
        timing["local"] = time.perf_counter() - t0
    if "pooled" in want:
        t0 = time.perf_counter()
        params = train_model(
            spec,
            np.concatenate(xs),
            np.concatenate(ys),
            cfg.local,
            epochs=cfg.pooled_epochs,
            seed=seed * 1000 + 1,
        )
        entries.append(_entry("pooled", sc.global_model(params), epsilon=None, bytes_per_silo=0))
        timing["pooled"] = time.perf_counter() - t0
    for strategy in ("fedavg", "fedprox", "fedavgm"):
        if strategy in want:
            trainers = [
                SiloTrainer(spec, x, y, cfg.local, seed=seed * 1000 + i)
                for i, (x, y) in enumerate(zip(xs, ys, strict=True))
            ]
            run = federate(strategy, strategy, trainers)
            entries.append(
                _entry(
                    strategy,
                    sc.global_model(run.params),
                    epsilon=None,
                    bytes_per_silo=run.bytes_per_silo,
                    run=run,
                )
            )
    if "dp-fedavg" in want:
        dp_local = LocalConfig(
            lr=cfg.dp_lr, batch_size=cfg.local.batch_size, local_epochs=cfg.local.local_epochs
        )
        trainers = [
            SiloTrainer(
                spec,
                x,
                y,
                dp_local,
                seed=seed * 1000 + i,
                dp=DPConfig(
                    cfg.epsilon, cfg.delta or default_delta(len(x)), cfg.rounds, cfg.dp_max_grad_norm
                ),
            )
            for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        ]
        run = federate("dp-fedavg", "fedavg", trainers)
        accounts = [t.account() for t in trainers]
        assert all(a is not None for a in accounts)
        entries.append(
            _entry(
                "dp-fedavg",
                sc.global_model(run.params),
                epsilon=max(a.epsilon for a in accounts if a is not None),
                bytes_per_silo=run.bytes_per_silo,
                run=run,
                dp_accounts=[a.to_dict() for a in accounts if a is not None],
            )
        )

    # -- with each generator family's pool -----------------------------------------------------
    pools_info = []
    if want & set(SYNTHETIC_METHODS):
        frames = [task.frames(tr) for tr in trains]
        for name in cfg.generators:
            pool = build_pool(
                task,
                name,
                frames,
                epsilon=cfg.epsilon,
                delta=cfg.delta,
                gen_config=cfg.gen_configs.get(name),
                seed=seed,
                progress=progress,
            )
            timing[f"generators[{name}]"] = pool.seconds
            gen_bytes = float(np.mean(pool.push_bytes)) + pool.pull_bytes
            pools_info.append(
                {
                    "generator": name,
                    "family": pool.family,
                    "epsilon": pool.epsilon,
                    "missing_classes": pool.missing_classes,
                    "silos_skipped": pool.silos_skipped,
                    "pull_bytes": pool.pull_bytes,
                    "seconds": pool.seconds,
                }
            )
            entries.extend(
                _synthetic_methods(
                    task, pool, cfg, seed, xs, ys, mixes, init, sc, federate, gen_bytes, want, timing
                )
            )
    return {
        "entries": entries,
        "silo_rows": [len(p) for p in parts],
        "rows_topped_up": moved,
        "pools": pools_info,
        "timing": timing,
    }


def _synthetic_methods(
    task: DriftTask,
    pool: Pool,
    cfg: DriftConfig,
    seed: int,
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    mixes: list[np.ndarray],
    init: list[np.ndarray],
    sc: _Scorer,
    federate: Callable[[str, str, list[SiloTrainer]], FedRun],
    gen_bytes: float,
    want: set[str],
    timing: dict[str, float],
) -> list[dict[str, Any]]:
    spec, name = task.spec, pool.name
    out: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    # per silo: class-balanced pool rows (augmentation, regulariser) and rows in its own mix
    # (fine-tuning); a mix the pool cannot serve falls back to balanced rows
    bal = [
        draw(task, pool, max(cfg.min_aug, round(cfg.aug_ratio * len(x))), seed * 1000 + 2 * i)[:2]
        for i, x in enumerate(xs)
    ]
    mixed = [draw(task, pool, len(x), seed * 1000 + 2 * i + 1, mixes[i]) for i, x in enumerate(xs)]
    fallbacks = sum(m[2] for m in mixed)
    timing[f"sampling[{name}]"] = time.perf_counter() - t0
    both: dict[str, Any] = {"fallbacks": fallbacks, "pool_missing_classes": pool.missing_classes}

    # every entry of this family: its name, its pool's fallbacks and missing classes
    def entry(method: str, scored: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return _entry(method, scored, generator=name, **kw, **both)

    syn_params = None
    if want & {"synthetic", "synthetic+finetune"} or (
        "synthetic-regulariser" in want and cfg.distill_teacher == "synthetic"
    ):
        x_s, y_s, _ = draw(task, pool, cfg.synthetic_rows, seed * 1000 + 999)
        syn_params = train_model(spec, x_s, y_s, cfg.local, epochs=cfg.alone_epochs, seed=seed * 1000 + 998)
        if "synthetic" in want:
            present = np.array([c in pool.pool.classes for c in task.classes], dtype=float)
            balanced = present / present.sum()
            shift = [np.where(balanced > 0, m / np.maximum(balanced, 1e-12), 0.0) for m in mixes]
            scored = sc.global_model(syn_params)
            scored["silo_accuracy"] = sc.per_silo_models([syn_params] * len(xs), shift)["silo_accuracy"]
            out.append(
                entry(
                    "synthetic",
                    scored,
                    epsilon=pool.epsilon,
                    bytes_per_silo=gen_bytes,
                )
            )
        if "synthetic+finetune" in want:
            models = [
                train_model(
                    spec,
                    np.concatenate([x, m[0]]),
                    np.concatenate([y, m[1]]),
                    cfg.local,
                    epochs=cfg.finetune_epochs,
                    seed=seed * 1000 + 500 + i,
                    init=syn_params,
                )
                for i, (x, y, m) in enumerate(zip(xs, ys, mixed, strict=True))
            ]
            out.append(
                entry(
                    "synthetic+finetune",
                    sc.per_silo_models(models),
                    epsilon=pool.epsilon,
                    bytes_per_silo=gen_bytes,
                )
            )
    aug_run = None
    if want & {"fedavg+synthetic", "personalised"}:
        trainers = [
            SiloTrainer(
                spec, np.concatenate([x, b[0]]), np.concatenate([y, b[1]]), cfg.local, seed=seed * 1000 + i
            )
            for i, (x, y, b) in enumerate(zip(xs, ys, bal, strict=True))
        ]
        aug_run = federate(f"fedavg+synthetic[{name}]", "fedavg", trainers)
        if "fedavg+synthetic" in want:
            out.append(
                entry(
                    "fedavg+synthetic",
                    sc.global_model(aug_run.params),
                    epsilon=None,
                    bytes_per_silo=aug_run.bytes_per_silo + gen_bytes,
                    run=aug_run,
                )
            )
    if "synthetic-regulariser" in want:
        trainers = [
            SiloTrainer(
                spec,
                x,
                y,
                cfg.local,
                seed=seed * 1000 + i,
                synthetic=b,
                distill_weight=cfg.distill_weight,
                teacher=syn_params if cfg.distill_teacher == "synthetic" else None,
            )
            for i, (x, y, b) in enumerate(zip(xs, ys, bal, strict=True))
        ]
        run = federate(f"synthetic-regulariser[{name}]", "fedavg", trainers)
        out.append(
            entry(
                "synthetic-regulariser",
                sc.global_model(run.params),
                epsilon=None,
                bytes_per_silo=run.bytes_per_silo + gen_bytes,
                run=run,
            )
        )
    if "personalised" in want:
        assert aug_run is not None
        t0 = time.perf_counter()
        models = [
            train_model(
                spec,
                np.concatenate([x, m[0]]),
                np.concatenate([y, m[1]]),
                cfg.local,
                epochs=cfg.finetune_epochs,
                seed=seed * 1000 + 700 + i,
                init=aug_run.params,
            )
            for i, (x, y, m) in enumerate(zip(xs, ys, mixed, strict=True))
        ]
        out.append(
            entry(
                "personalised",
                sc.per_silo_models(models),
                epsilon=None,
                bytes_per_silo=aug_run.bytes_per_silo + gen_bytes,
            )
        )
        timing[f"personalised[{name}]"] = time.perf_counter() - t0
    return out


__all__ = [
    "BASE_METHODS",
    "METHODS",
    "PRESETS",
    "SYNTHETIC_METHODS",
    "DriftConfig",
    "DriftTask",
    "PartitionError",
    "Pool",
    "aggregate",
    "build_pool",
    "drift_checks",
    "load_task",
    "run_drift_seed",
]
