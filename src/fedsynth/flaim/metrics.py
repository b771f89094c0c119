"""Utility metrics for FLAIM runs.

* workload L1: mean over the downward closure Q of ‖M_q(D)/|D| − M_q(S)/|S|‖₁ (0 = identical,
  2 = disjoint), D the training data, S the synthetic data;
* NLL: −(1/|D_test|) Σ_x log P̂(x) in nats/record under the final graphical model;
* AUC: GradientBoostingClassifier(n_estimators=100, max_depth=4) trained on the synthetic codes,
  scored on the real test split (integer codes as ordinal features; trees split on them directly).
"""

from __future__ import annotations

import numpy as np

from fedsynth.flaim.measure import marginal_counts
from fedsynth.flaim.model import PGM
from fedsynth.flaim.workload import Clique


def workload_l1(train: np.ndarray, synth: np.ndarray, sizes: dict[str, int], cliques: list[Clique]) -> float:
    attrs = tuple(sizes)
    errs = []
    for q in cliques:
        a = marginal_counts(train, sizes, q, attrs)
        b = marginal_counts(synth, sizes, q, attrs)
        errs.append(np.abs(a / max(a.sum(), 1) - b / max(b.sum(), 1)).sum())
    return float(np.mean(errs))


def nll(model: PGM, test: np.ndarray) -> float:
    return float(-np.mean(model.log_likelihood(test)))


def gbdt_auc(synth: np.ndarray, test: np.ndarray, target_index: int, seed: int = 0) -> float:
    """ROC AUC (one-vs-rest macro for >2 classes); nan when the synthetic data has one class."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    X = np.delete(synth, target_index, axis=1)
    y = synth[:, target_index]
    Xt = np.delete(test, target_index, axis=1)
    yt = test[:, target_index]
    if len(np.unique(y)) < 2 or len(np.unique(yt)) < 2:
        return float("nan")
    clf = GradientBoostingClassifier(n_estimators=100, max_depth=4, random_state=seed).fit(X, y)
    proba = clf.predict_proba(Xt)
    if proba.shape[1] == 2:
        return float(roc_auc_score(yt, proba[:, 1]))
    return float(roc_auc_score(yt, proba, multi_class="ovr", labels=clf.classes_))
