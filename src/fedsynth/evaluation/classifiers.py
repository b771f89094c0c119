"""The downstream classifier: logistic regression built as a careful practitioner would.

One-hot categoricals (categories from the public schema), standardised continuous columns, and
the L2 strength chosen by stratified cross-validation on the training data only. The local
baseline in design.md shows this alone beats the SGDE paper's *Local* column, so every scenario
uses the same recipe and differences come from the training data, not the model.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fedsynth.data.schema import Schema

CS = (0.003, 0.03, 0.3, 3.0)


def make_logreg(
    schema: Schema,
    y: np.ndarray,
    *,
    seed: int = 0,
    C: float | None = None,
    extra: tuple[str, ...] = (),
    only_extra: bool = False,
) -> Pipeline:
    """One-hot + standardise + logistic regression; ``C`` by 3-fold CV unless given.

    ``extra``: additional numeric columns (e.g. another model's log-odds, for stacking);
    ``only_extra``: use nothing else (Platt-style recalibration of that model).
    """
    cats = [c for c in schema.features if c.kind == "categorical"] if not only_extra else []
    conts = [c.name for c in schema.features if c.kind == "continuous" and not only_extra] + list(extra)
    pre = ColumnTransformer(
        [
            (
                "cat",
                OneHotEncoder(categories=[list(c.categories) for c in cats], handle_unknown="ignore"),
                [c.name for c in cats],
            ),
            ("num", StandardScaler(), conts),
        ],
        sparse_threshold=0.0,
    )
    _, counts = np.unique(y, return_counts=True)
    folds = int(min(3, counts.min())) if len(counts) > 1 else 0
    if C is not None:
        clf: LogisticRegression | LogisticRegressionCV = LogisticRegression(C=C, max_iter=500)
    elif folds >= 2:
        clf = LogisticRegressionCV(
            Cs=list(CS),
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            max_iter=500,
            scoring="neg_log_loss",
        )
    else:  # too few rows of some class to cross-validate: a fixed, moderate penalty
        clf = LogisticRegression(C=0.3, max_iter=500)
    return Pipeline([("pre", pre), ("clf", clf)])


def fit_logreg(
    schema: Schema,
    train: pd.DataFrame,
    *,
    seed: int = 0,
    C: float | None = None,
    extra: tuple[str, ...] = (),
    only_extra: bool = False,
) -> Pipeline:
    y = train[schema.target].astype(str).to_numpy()
    model = make_logreg(schema, y, seed=seed, C=C, extra=extra, only_extra=only_extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        model.fit(train[[c.name for c in schema.features] + list(extra)], y)
    model.train_prior_ = np.array([np.mean(y == c) for c in schema.classes])
    return model


def log_odds_features(
    model: Pipeline, schema: Schema, df: pd.DataFrame, prefix: str = "__syn"
) -> pd.DataFrame:
    """``df`` plus one column per class: the model's log-probability (the stacking feature)."""
    p = np.clip(model.predict_proba(df[[c.name for c in schema.features]]), 1e-6, 1.0)
    if p.shape[1] == 2:  # binary: the log-odds alone
        cols = {f"{prefix}0": np.log(p[:, 1] / p[:, 0])}
    else:
        cols = {f"{prefix}{j}": np.log(p[:, j]) for j in range(p.shape[1])}
    return df.assign(**cols)


def cv_fit(
    schema: Schema,
    train: pd.DataFrame,
    *,
    seed: int = 0,
    extra: tuple[str, ...] = (),
    only_extra: bool = False,
) -> tuple[Pipeline, float, float]:
    """Fit with C chosen by 3-fold CV; return (model, C, best mean CV log-likelihood per row).

    The C and the CV score are reused: the C fixes the penalty of an outer CV (choosing it once
    on all training rows, not per outer fold, is what keeps a 20-silo benchmark in minutes), and
    the score compares model families (see :func:`stacking_choice`).
    """
    model = fit_logreg(schema, train, seed=seed, extra=extra, only_extra=only_extra)
    clf = model.named_steps["clf"]
    if not hasattr(clf, "C_"):
        return model, float(clf.C), -np.inf
    fold_scores = next(iter(clf.scores_.values()))  # (folds, Cs), neg log-loss
    return model, float(np.atleast_1d(clf.C_)[0]), float(fold_scores.mean(axis=0).max())


def fit_proba(
    schema: Schema,
    train: pd.DataFrame,
    test_frames: list[pd.DataFrame],
    *,
    seed: int = 0,
    prior: np.ndarray | None = None,
    C: float | None = None,
    extra: tuple[str, ...] = (),
    only_extra: bool = False,
) -> list[np.ndarray]:
    """Fit on ``train`` and return class probabilities (columns = ``schema.classes``) per test frame.

    ``prior``: class prior to shift the predictions to (Bayes' rule), e.g. when the training
    data were sampled class-balanced but the silo knows its own class frequencies.
    """
    model = fit_logreg(schema, train, seed=seed, C=C, extra=extra, only_extra=only_extra)
    return [predict(model, schema, df, extra=extra, prior=prior) for df in test_frames]


def predict(
    model: Pipeline,
    schema: Schema,
    df: pd.DataFrame,
    *,
    extra: tuple[str, ...] = (),
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities in ``schema.classes`` order; optionally shifted to ``prior``.

    The training prior is read from the fitted model (``train_prior_``, set by :func:`fit_logreg`).
    """
    classes = list(schema.classes)
    p_fit = model.predict_proba(df[[c.name for c in schema.features] + list(extra)])
    p = np.zeros((len(df), len(classes)))
    for j, c in enumerate(model.classes_):
        p[:, classes.index(c)] = p_fit[:, j]
    if prior is not None:
        tp = model.train_prior_
        w = np.where(tp > 0, np.asarray(prior) / np.maximum(tp, 1e-12), 0.0)
        p = p * w
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    return p


def stacking_choice(
    schema: Schema, train: pd.DataFrame, extra: tuple[str, ...], *, seed: int = 0
) -> tuple[Pipeline, float, bool]:
    """Full stacking (own features + the other model's log-odds) or recalibration of the other
    model alone, whichever has the better 3-fold CV log-loss on ``train``; recalibration wins
    when the silo has few rows for many features. Returns (model, C, only_extra)."""
    full, c_full, s_full = cv_fit(schema, train, seed=seed, extra=extra)
    only, c_only, s_only = cv_fit(schema, train, seed=seed, extra=extra, only_extra=True)
    return (only, c_only, True) if s_only >= s_full else (full, c_full, False)
