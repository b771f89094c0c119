"""The SGDE experiment (paper Tables I and III) on one machine.

For each seed: split the training set into ``silos`` non-overlapping random shares of
``fraction`` (paper: 20 × 5 %); every silo trains its DP generator set; the pool is every
silo's decoders. Per silo, five scenarios, each scored on the silo's local data (*local_eval*,
Table I) and on the test split (*test_eval*, Table III):

* ``local`` — the silo's own data. local_eval: 10-fold CV; test_eval: trained on all of it.
* ``federated`` — FedAvg logistic regression over all silos' private data (Flower strategy).
* ``synthetic`` — trained only on class-balanced synthetic rows drawn uniformly from the pool;
  predictions shifted to the silo's own class prior (Bayes' rule; the silo knows its prior,
  nothing leaves it). ``synthetic_balanced`` is the same model without that shift (the paper's).
* ``local_plus_synthetic`` — what a silo would really do: its own rows, with the log-odds of the
  pool-trained (synthetic) model as one extra feature (stacking), so the silo's real data decide
  how much to trust — and how to recalibrate — the synthetic model. local_eval: 10-fold CV.
* ``local_plus_synthetic_rows`` — the literal augmentation: own rows plus synthetic rows drawn
  with the silo's class mix. local_eval: 10-fold CV on the local part (synthetic rows always in
  training).
* ``pooled_real`` — all silos' real data pooled (the non-private ceiling).

Metrics are averaged over silos, then mean ± sd over seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from fedsynth.data.datasets import BenchmarkData
from fedsynth.data.encoders import TableEncoder, encode_target
from fedsynth.data.partition import dirichlet_label_skew, equal_shares, parse_split
from fedsynth.evaluation.classifiers import (
    cv_fit,
    fit_logreg,
    fit_proba,
    log_odds_features,
    predict,
    stacking_choice,
)
from fedsynth.evaluation.exchange import in_process_exchange
from fedsynth.evaluation.fedavg import predict_proba, run_fedavg
from fedsynth.evaluation.metrics import METRICS, aggregate_runs, score
from fedsynth.generators.base import Generator, GeneratorSet, get_family, is_federation_family
from fedsynth.generators.federation import fit_federation
from fedsynth.generators.io import to_artifact
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget, default_delta

SCENARIOS = (
    "local",
    "federated",
    "synthetic",
    "synthetic_balanced",
    "local_plus_synthetic",
    "local_plus_synthetic_rows",
    "pooled_real",
)
EVALS = ("local_eval", "test_eval")


@dataclass
class SGDEConfig:
    silos: int = 20
    fraction: float = 0.05
    split: str = "equal"  # "equal" (paper: random 1/K shares) or "label-skew:BETA" (Dirichlet)
    epsilon: float = 1.0
    delta: float | None = None  # None: per-class δ = 1/(10·|D_c|) rounded down
    synthetic_rows: int = 5000
    cv_folds: int = 10
    generator: str = "dp-vae/1"  # family kind or short name (vae, gan, pgm, diffusion)
    gen_config: Any = None  # the family's config; None: its preset for the dataset
    eval_silos: int | None = None  # score only the first k silos (all train generators)
    # federation-level families: also fit the same family centrally on the pooled rows at the same
    # ε (the floor a federation run can reach) and score its synthetic-only model on the test split
    central_floor: bool = True


Progress = Callable[[str, int, int], None]
Exchange = Callable[[list[GeneratorSet]], list[Generator]]


def _cv_scores(
    bench: BenchmarkData,
    local: pd.DataFrame,
    folds: int,
    seed: int,
    extra: pd.DataFrame | None = None,
    extra_cols: tuple[str, ...] = (),
    only_extra: bool = False,
    *,
    C: float,
) -> dict[str, float]:
    """k-fold CV on the local table; ``extra`` rows (synthetic) are added to every training fold,
    ``extra_cols`` are additional numeric feature columns of ``local`` (stacking). ``C`` is the
    penalty chosen by 3-fold CV on the whole training pool (:func:`cv_fit`), fixed per fold."""
    s = bench.schema
    y = local[s.target].astype(str).to_numpy()
    _, counts = np.unique(y, return_counts=True)
    k = int(min(folds, counts.min())) if len(counts) > 1 else 0
    if k < 2:
        return {m: float("nan") for m in METRICS}
    proba = np.zeros((len(local), len(s.classes)))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(local, y):
        train = local.iloc[tr] if extra is None else pd.concat([local.iloc[tr], extra], ignore_index=True)
        proba[te] = fit_proba(
            s, train, [local.iloc[te]], seed=seed, C=C, extra=extra_cols, only_extra=only_extra
        )[0]
    return score(y, proba, list(s.classes), bench.positive)


def _prior(df: pd.DataFrame, classes: tuple[str, ...], target: str) -> np.ndarray:
    y = df[target].astype(str).to_numpy()
    return np.array([np.mean(y == c) for c in classes])


def run_seed(
    bench: BenchmarkData,
    cfg: SGDEConfig,
    seed: int,
    progress: Progress | None = None,
    exchange: Exchange = in_process_exchange,
) -> dict[str, Any]:
    """One seed of the experiment: returns per-scenario metrics averaged over silos + timing.

    ``exchange`` turns the silos' generator sets into the pool a silo pulls (in-process, or over
    a real hub: :class:`fedsynth.evaluation.exchange.HubExchange`).
    """
    s = bench.schema
    train, test = bench.train, bench.test
    kind, beta = parse_split(cfg.split)
    if kind == "label-skew":
        parts = dirichlet_label_skew(
            train[s.target].to_numpy(), cfg.silos, beta or 0.5, seed=seed, min_rows=20
        )
    elif kind == "equal":
        parts = equal_shares(len(train), cfg.silos, cfg.fraction, seed=seed)
    else:
        raise ValueError(f"split {cfg.split!r} is not supported by the SGDE experiment (equal, label-skew:B)")
    silo_frames = [train.iloc[p].reset_index(drop=True) for p in parts]
    timing: dict[str, float] = {}

    # 1. every silo trains its generator set (the only thing that leaves a silo) — or, for a
    #    federation-level family, one generator is fitted across all silos under secure aggregation
    t0 = time.perf_counter()
    family = get_family(cfg.generator)
    gen_cfg = cfg.gen_config if cfg.gen_config is not None else family.default_config(bench.name)
    sets: list[GeneratorSet] = []
    extra: dict[str, Any] = {}
    if is_federation_family(family):
        # δ for the whole federation: the SGDE rule on the total rows (the benchmark knows N; in
        # a deployment the admin sets the round's δ)
        fed_target = PrivacyTarget(cfg.epsilon, cfg.delta or default_delta(sum(map(len, silo_frames))))
        federate = getattr(exchange, "federate", None)
        if federate is not None:  # through a hub's round API and Flower
            fed_gens, extra["round"] = federate(family, silo_frames, s, fed_target, gen_cfg, seed)
            sets.append(GeneratorSet(s, family.kind, fed_gens))
        else:
            gset, rep = fit_federation(family, silo_frames, s, fed_target, gen_cfg, seed=seed)  # type: ignore[arg-type]
            sets.append(gset)
            extra["round"] = rep.to_dict()
        if progress:
            progress("generators", cfg.silos, cfg.silos)
    else:
        target = PrivacyTarget(cfg.epsilon, cfg.delta)
        for i, df in enumerate(silo_frames):
            sets.append(family.fit(df, s, target, gen_cfg, seed=seed * 100 + i))
            if progress:
                progress("generators", i + 1, cfg.silos)
    timing["generators_total_s"] = time.perf_counter() - t0
    timing["generators_per_silo_s"] = timing["generators_total_s"] / cfg.silos
    artifact_bytes = [sum(len(c) + len(w) for c, w in map(to_artifact, gs.generators)) for gs in sets]
    t0 = time.perf_counter()
    fed_pulled = is_federation_family(family) and getattr(exchange, "federate", None) is not None
    pool = GeneratorPool(s, sets[0].generators if fed_pulled else exchange(sets))
    timing["exchange_s"] = time.perf_counter() - t0
    if is_federation_family(family) and cfg.central_floor:
        # the floor: the same mechanism on the pooled rows in one place (no federation overhead)
        t0 = time.perf_counter()
        pooled_rows = pd.concat(silo_frames, ignore_index=True)
        central = GeneratorPool(s, family.fit(pooled_rows, s, fed_target, gen_cfg, seed=seed).generators)
        c_model = fit_logreg(s, central.sample(cfg.synthetic_rows, seed=seed * 1000 + 999), seed=seed)
        y_t = test[s.target].astype(str).to_numpy()
        extra["central_synthetic_test"] = score(
            y_t, predict(c_model, s, test), list(s.classes), bench.positive
        )
        timing["central_floor_s"] = time.perf_counter() - t0

    # 2. FedAvg over the silos' private data (public-schema encoding)
    t0 = time.perf_counter()
    enc = TableEncoder(s)
    fed = run_fedavg(
        [(enc.transform(df), encode_target(df[s.target], s)) for df in silo_frames], len(s.classes), seed=seed
    )
    timing["fedavg_s"] = time.perf_counter() - t0

    # 3. pooled real data (ceiling)
    t0 = time.perf_counter()
    pooled = pd.concat(silo_frames, ignore_index=True)
    n_eval = cfg.eval_silos or cfg.silos
    pooled_probas = fit_proba(s, pooled, [test, *silo_frames[:n_eval]], seed=seed)
    timing["pooled_s"] = time.perf_counter() - t0

    classes, pos = list(s.classes), bench.positive
    per: dict[str, dict[str, list[dict[str, float]]]] = {sc: {e: [] for e in EVALS} for sc in SCENARIOS}
    fed_test = predict_proba(fed.params, enc.transform(test))
    y_test = test[s.target].astype(str).to_numpy()
    t_eval = time.perf_counter()
    for i in range(n_eval):
        local = silo_frames[i]
        y_loc = local[s.target].astype(str).to_numpy()
        prior = _prior(local, s.classes, s.target)
        synth = pool.sample(cfg.synthetic_rows, seed=seed * 1000 + i)
        # local
        loc_model, c_loc, _ = cv_fit(s, local, seed=seed)
        per["local"]["local_eval"].append(_cv_scores(bench, local, cfg.cv_folds, seed, C=c_loc))
        per["local"]["test_eval"].append(score(y_test, predict(loc_model, s, test), classes, pos))
        # federated
        per["federated"]["local_eval"].append(
            score(y_loc, predict_proba(fed.params, enc.transform(local)), classes, pos)
        )
        per["federated"]["test_eval"].append(score(y_test, fed_test, classes, pos))
        # synthetic (balanced pool sample), with and without the local prior shift; the same
        # pool-trained model feeds the stacking scenario below
        syn_model = fit_logreg(s, synth, seed=seed)
        for name, pr in (("synthetic_balanced", None), ("synthetic", prior)):
            per[name]["local_eval"].append(score(y_loc, predict(syn_model, s, local, prior=pr), classes, pos))
            per[name]["test_eval"].append(score(y_test, predict(syn_model, s, test, prior=pr), classes, pos))
        # local + synthetic (stacking): the pool-trained model's log-odds become one more feature of
        # the silo's own classifier, which learns from its real rows how far to trust them
        loc_x, test_x = log_odds_features(syn_model, s, local), log_odds_features(syn_model, s, test)
        cols = tuple(c for c in loc_x.columns if c.startswith("__syn"))
        stack_model, c_stack, only = stacking_choice(s, loc_x, cols, seed=seed)
        lps = per["local_plus_synthetic"]
        lps["local_eval"].append(
            _cv_scores(bench, loc_x, cfg.cv_folds, seed, extra_cols=cols, only_extra=only, C=c_stack)
        )
        p_stack = predict(stack_model, s, test_x, extra=cols)
        lps["test_eval"].append(score(y_test, p_stack, classes, pos))
        # local + synthetic rows: augmentation rows drawn with the silo's own class mix, so adding
        # them does not shift the prior the classifier learns
        mix = dict(zip(s.classes, prior, strict=True))
        aug = pool.sample(cfg.synthetic_rows, seed=seed * 1000 + i, class_weights=mix)
        lpr = per["local_plus_synthetic_rows"]
        rows_model, c_rows, _ = cv_fit(s, pd.concat([local, aug], ignore_index=True), seed=seed)
        lpr["local_eval"].append(_cv_scores(bench, local, cfg.cv_folds, seed, extra=aug, C=c_rows))
        p_aug = predict(rows_model, s, test)
        lpr["test_eval"].append(score(y_test, p_aug, classes, pos))
        # pooled real
        per["pooled_real"]["local_eval"].append(score(y_loc, pooled_probas[1 + i], classes, pos))
        per["pooled_real"]["test_eval"].append(score(y_test, pooled_probas[0], classes, pos))
        if progress:
            progress("evaluation", i + 1, n_eval)
    timing["evaluation_s"] = time.perf_counter() - t_eval
    avg = {
        sc: {e: {m: float(np.nanmean([d[m] for d in per[sc][e]])) for m in METRICS} for e in EVALS}
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
        "fedavg_rounds": fed.rounds,
        "fedavg_bytes_per_client_per_round": fed.bytes_per_client_per_round,
        "timing": timing,
    }


def aggregate(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and sd over seeds (:func:`~fedsynth.evaluation.metrics.aggregate_runs`)."""
    return aggregate_runs(runs, SCENARIOS, EVALS)
