"""Membership audits of a generator set: does its synthetic data reveal who was in the training set?

Setting: the silo's training table (members), an equal-distribution holdout the generators never saw
(non-members), split into an evaluation half (the non-members scored) and a reference half (the
attacker's population sample). All rows are compared in one numeric space: the schema's encoding
with one-hot blocks scaled by 1/√2 (a category mismatch costs distance 1, like a full-range jump
of a continuous column) plus the class label, weighted so rows of different classes never match.

Checks:

* DCR share — fraction of synthetic rows closer to a member than to a non-member (ties ½); 0.5 for a
  generator that learned the distribution, > band for one that copies its training rows;
  exact-copy rate vs members and vs non-members.
* DOMIAS (van Breugel et al. 2023) — score(x) = log p_syn(x) − log p_ref(x): members of an
  overfitted generator sit where synthetic density is high relative to the population. Two density
  estimators: k-NN (local, sensitive to memorised points) and a Gaussian KDE on a PCA projection.
* Shadow models on the most vulnerable targets (Stadler et al. 2022) — the rows most isolated in the
  population are inserted (each with probability ½) into shadow training sets, shadow generators are
  trained by the same code path (the audited family's ``fit``, same ε, δ and spec), and a
  classifier learns how a target's presence shows in the synthetic data (distance to the nearest
  synthetic row, relative to its isolation); it then scores the audited generators' synthetic data.

The audited generators are only sampled (through :class:`~fedsynth.generators.pool.GeneratorPool`),
so they apply to any family, per-class or joint.

Each attack yields AUC with its 95 % null band, TPR at 1 % / 0.1 % FPR and a 95 % lower bound on ε.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import gaussian_kde
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

from fedsynth.audit.stats import AttackResult, evaluate_attack, share_band
from fedsynth.audit.training import Trainer
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema, validate_frame
from fedsynth.generators.base import Generator
from fedsynth.generators.pool import GeneratorPool

log = logging.getLogger(__name__)

#: Trains a generator set on a table by the audited code path (the audited generators' family,
#: ε, δ and spec): used for shadow models.
ShadowTrainer = Trainer


class RowSpace:
    """Tables -> points in one metric space (see module docstring)."""

    def __init__(self, schema: Schema, class_weight: float = 4.0) -> None:
        self.schema = schema
        self.enc = TableEncoder(schema)
        w = np.ones(self.enc.dim, dtype=np.float32)
        for b in self.enc.blocks:
            if b.kind == "categorical":
                w[b.start : b.start + b.width] = 1 / math.sqrt(2)
        self.w = w
        self.class_weight = class_weight

    def __call__(self, df: pd.DataFrame) -> np.ndarray:
        data = validate_frame(df, self.schema)
        x = self.enc.transform(data, validated=True) * self.w
        codes = pd.Categorical(
            data[self.schema.target].astype(str), categories=list(self.schema.classes)
        ).codes
        y = np.eye(len(self.schema.classes), dtype=np.float32)[codes] * self.class_weight
        return np.concatenate([x, y], axis=1)


def _nn_dist(ref: np.ndarray, q: np.ndarray, k: int = 1) -> np.ndarray:
    nn = NearestNeighbors(n_neighbors=min(k, len(ref))).fit(ref)
    d, _ = nn.kneighbors(q)
    return d[:, -1]


@dataclass(frozen=True)
class DCRResult:
    share: float  # synthetic rows closer to a member than to a non-member
    band: tuple[float, float]  # 95 % null band (permutation of the member/non-member labels)
    binomial_band: tuple[float, float]  # 0.5 ± binomial 95 % over synthetic rows (too narrow; see below)
    n_synthetic: int
    copy_rate_members: float  # synthetic rows identical to some member
    copy_rate_nonmembers: float

    @property
    def inside_band(self) -> bool:
        return self.share <= self.band[1]

    def to_dict(self) -> dict[str, object]:
        return {
            "share": self.share,
            "band": list(self.band),
            "binomial_band": list(self.binomial_band),
            "n_synthetic": self.n_synthetic,
            "inside_band": bool(self.inside_band),
            "copy_rate_members": self.copy_rate_members,
            "copy_rate_nonmembers": self.copy_rate_nonmembers,
        }


def _row_keys(df: pd.DataFrame, schema: Schema) -> pd.Series:
    cols = [c.name for c in schema.columns]
    parts = []
    for c in schema.columns:
        s = df[c.name]
        parts.append(s.astype(float).round(6).astype(str) if c.kind == "continuous" else s.astype(str))
    return pd.concat(parts, axis=1, keys=cols).agg("\x1f".join, axis=1)


def dcr_and_copies(
    space: RowSpace,
    syn: pd.DataFrame,
    members: pd.DataFrame,
    nonmembers: pd.DataFrame,
    *,
    n_permutations: int = 400,
    seed: int = 0,
) -> DCRResult:
    """DCR share with a permutation null band.

    The binomial band over synthetic rows assumes they are independent trials, but they are all
    compared with the same two record sets: even real held-out data used as "synthetic" lands
    outside it when one set happens to sit nearer the data's mode. Under the null (the generator
    does not depend on which records were members) the member/non-member labels are exchangeable,
    so re-splitting the pooled records at random gives the exact null distribution. Each synthetic
    row keeps its K nearest pooled records; its nearest member (non-member) is the first of them
    with that label (all K on one side has probability 2^-K).
    """
    if len(members) != len(nonmembers):
        raise ValueError("DCR needs members and non-members of equal size")
    s = space(syn)
    pooled = np.r_[space(members), space(nonmembers)]
    n = len(members)
    k = min(24, len(pooled))
    d, idx = NearestNeighbors(n_neighbors=k).fit(pooled).kneighbors(s)

    def share_for(is_member: np.ndarray) -> float:
        lab = is_member[idx]
        fm, fn = lab.argmax(axis=1), (~lab).argmax(axis=1)
        dm, dn = d[np.arange(len(s)), fm], d[np.arange(len(s)), fn]
        return float(((dm < dn) + 0.5 * (dm == dn)).mean())

    truth = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    share = share_for(truth)
    rng = np.random.default_rng(seed)
    null = [share_for(truth[rng.permutation(2 * n)]) for _ in range(n_permutations)]
    band = (float(np.quantile(null, 0.025)), float(np.quantile(null, 0.975)))
    keys = _row_keys(syn, space.schema)
    km, kn = set(_row_keys(members, space.schema)), set(_row_keys(nonmembers, space.schema))
    return DCRResult(
        share=share,
        band=band,
        binomial_band=share_band(len(syn)),
        n_synthetic=len(syn),
        copy_rate_members=float(keys.isin(km).mean()),
        copy_rate_nonmembers=float(keys.isin(kn).mean()),
    )


def domias_knn_scores(targets: np.ndarray, syn: np.ndarray, ref: np.ndarray, k: int = 1) -> np.ndarray:
    """log p_syn − log p_ref with k-NN densities (p ∝ k / (n·r_k^d)); the common factor d is dropped
    (monotone), leaving log r_k(ref) − log r_k(syn) up to a constant."""
    eps = 1e-6
    return np.log(_nn_dist(ref, targets, k) + eps) - np.log(_nn_dist(syn, targets, k) + eps)


def domias_kde_scores(
    targets: np.ndarray, syn: np.ndarray, ref: np.ndarray, dims: int = 8, seed: int = 0
) -> np.ndarray:
    """log p_syn − log p_ref with Gaussian KDEs (Scott bandwidth) on a PCA projection fit on ref."""
    d = max(1, min(dims, ref.shape[1], len(ref) - 2))
    pca = PCA(n_components=d, random_state=seed).fit(ref)
    # Jitter avoids a singular covariance when a projected coordinate is constant.
    rng = np.random.default_rng(seed)
    zs = pca.transform(syn) + rng.normal(0, 1e-4, (len(syn), d))
    zr = pca.transform(ref) + rng.normal(0, 1e-4, (len(ref), d))
    zt = pca.transform(targets)
    return gaussian_kde(zs.T).logpdf(zt.T) - gaussian_kde(zr.T).logpdf(zt.T)


def _shadow_features(t: np.ndarray, syn: np.ndarray, iso: np.ndarray) -> np.ndarray:
    d1 = _nn_dist(syn, t, 1)
    d5 = _nn_dist(syn, t, 5)
    return np.c_[np.log(d1 + 1e-6), np.log(d1 + 1e-6) - np.log(iso + 1e-6), np.log(d5 + 1e-6)]


def sample_like(
    gens: Sequence[Generator], schema: Schema, n: int, like: pd.DataFrame, seed: int
) -> pd.DataFrame:
    """``n`` synthetic rows with the class mix of ``like`` (the training table)."""
    freq = like[schema.target].astype(str).value_counts(normalize=True).to_dict()
    pool = GeneratorPool(schema, list(gens))
    weights = {c: float(freq.get(c, 0.0)) for c in pool.classes}
    if sum(weights.values()) <= 0:
        weights = dict.fromkeys(pool.classes, 1.0)
    return pool.sample(n, seed=seed, class_weights=weights)


@dataclass
class MembershipAudit:
    n_members: int
    n_nonmembers: int
    n_reference: int
    dcr: DCRResult
    attacks: list[AttackResult]

    def to_dict(self, with_curves: bool = False) -> dict[str, object]:
        return {
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "n_reference": self.n_reference,
            "dcr": self.dcr.to_dict(),
            "attacks": [a.to_dict(with_curves) for a in self.attacks],
        }


def membership_audit(
    schema: Schema,
    generators: Sequence[Generator],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    delta: float,
    n_synthetic: int | None = None,
    max_eval: int = 2000,
    shadow_trainer: ShadowTrainer | None = None,
    n_shadows: int = 6,
    n_targets: int = 100,
    seed: int = 0,
) -> MembershipAudit:
    """Run DCR / copies, DOMIAS (k-NN and KDE) and, with ``shadow_trainer``, the shadow attack.

    The holdout is split in two: non-members scored (as many as members scored) and the attacker's
    reference sample. ``n_synthetic`` defaults to 2 × the training size (at least 2000).
    """
    rng = np.random.default_rng(seed)
    if len(holdout) < 20 or len(train) < 10:
        raise ValueError(
            f"need at least 10 training rows and 20 holdout rows (got {len(train)}, {len(holdout)})"
        )
    n_eval = min(len(train), len(holdout) // 2, max_eval)
    hperm = rng.permutation(len(holdout))
    nonmembers = holdout.iloc[hperm[:n_eval]].reset_index(drop=True)
    reference = holdout.iloc[hperm[n_eval:]].reset_index(drop=True)
    members = train.iloc[rng.permutation(len(train))[:n_eval]].reset_index(drop=True)
    n_syn = n_synthetic or max(2000, 2 * len(train))
    syn = sample_like(generators, schema, n_syn, train, seed=seed + 1)
    space = RowSpace(schema)
    dcr = dcr_and_copies(
        space, syn.iloc[: max(n_eval, min(n_syn, 4 * n_eval))], members, nonmembers, seed=seed
    )
    xs, xm, xn, xr = space(syn), space(members), space(nonmembers), space(reference)
    attacks = []
    knn = domias_knn_scores(np.r_[xm, xn], xs, xr)
    attacks.append(evaluate_attack("domias-knn", knn[:n_eval], knn[n_eval:], delta))
    kde = domias_kde_scores(np.r_[xm, xn], xs, xr, seed=seed)
    attacks.append(evaluate_attack("domias-kde", kde[:n_eval], kde[n_eval:], delta))
    if shadow_trainer is not None and n_shadows > 0:
        attacks.append(
            shadow_attack(
                schema,
                space,
                syn,
                members,
                nonmembers,
                reference,
                shadow_trainer,
                delta=delta,
                n_shadows=n_shadows,
                n_targets=n_targets,
                n_synthetic=n_syn,
                train_size=len(train),
                seed=seed,
            )
        )
    return MembershipAudit(n_eval, n_eval, len(reference), dcr, attacks)


def shadow_attack(
    schema: Schema,
    space: RowSpace,
    syn: pd.DataFrame,
    members: pd.DataFrame,
    nonmembers: pd.DataFrame,
    reference: pd.DataFrame,
    trainer: ShadowTrainer,
    *,
    delta: float,
    n_shadows: int,
    n_targets: int,
    n_synthetic: int,
    train_size: int,
    seed: int,
) -> AttackResult:
    rng = np.random.default_rng(seed + 7)
    xr = space(reference)
    xm, xn = space(members), space(nonmembers)
    # Vulnerable targets: the rows most isolated from the population (distance to their 5th
    # nearest reference row), the same number from members and from non-members.
    half = max(2, min(n_targets // 2, len(members) // 2))
    iso_m, iso_n = _nn_dist(xr, xm, 5), _nn_dist(xr, xn, 5)
    tm, tn = np.argsort(-iso_m)[:half], np.argsort(-iso_n)[:half]
    targets = pd.concat([members.iloc[tm], nonmembers.iloc[tn]], ignore_index=True)
    xt = np.r_[xm[tm], xn[tn]]
    iso = np.r_[iso_m[tm], iso_n[tn]]
    feats, labels = [], []
    # Shadow training sets: reference rows (up to the audited training size) plus each target
    # with probability ½; shadows never see the audited members other than targets.
    base = max(1, min(len(reference), train_size) - half)
    for s in range(n_shadows):
        inc = rng.random(len(targets)) < 0.5
        rows = reference.iloc[rng.permutation(len(reference))[:base]]
        shadow_df = pd.concat([rows, targets[inc]], ignore_index=True)
        gens = trainer(shadow_df, seed * 1000 + 100 + s)
        ssyn = space(sample_like(gens, schema, n_synthetic, shadow_df, seed=seed + 200 + s))
        feats.append(_shadow_features(xt, ssyn, iso))
        labels.append(inc)
    clf = LogisticRegression(max_iter=1000).fit(np.concatenate(feats), np.concatenate(labels))
    score = clf.decision_function(_shadow_features(xt, space(syn), iso))
    return evaluate_attack("shadow-outliers", score[:half], score[half:], delta)


__all__ = [
    "DCRResult",
    "MembershipAudit",
    "RowSpace",
    "ShadowTrainer",
    "dcr_and_copies",
    "domias_kde_scores",
    "domias_knn_scores",
    "membership_audit",
    "sample_like",
    "shadow_attack",
]
