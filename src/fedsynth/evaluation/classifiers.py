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


def make_logreg(schema: Schema, y: np.ndarray, *, seed: int = 0, C: float | None = None) -> Pipeline:
    """One-hot + standardise + logistic regression; ``C`` by 3-fold CV unless given."""
    cats = [c for c in schema.features if c.kind == "categorical"]
    conts = [c for c in schema.features if c.kind == "continuous"]
    pre = ColumnTransformer(
        [
            (
                "cat",
                OneHotEncoder(categories=[list(c.categories) for c in cats], handle_unknown="ignore"),
                [c.name for c in cats],
            ),
            ("num", StandardScaler(), [c.name for c in conts]),
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


def fit_logreg(schema: Schema, train: pd.DataFrame, *, seed: int = 0, C: float | None = None) -> Pipeline:
    y = train[schema.target].astype(str).to_numpy()
    model = make_logreg(schema, y, seed=seed, C=C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        model.fit(train[[c.name for c in schema.features]], y)
    return model


def choose_C(schema: Schema, train: pd.DataFrame, *, seed: int = 0) -> float:
    """The L2 strength that 3-fold CV picks on ``train`` (reused across outer CV folds for speed)."""
    clf = fit_logreg(schema, train, seed=seed).named_steps["clf"]
    return float(np.atleast_1d(clf.C_)[0]) if hasattr(clf, "C_") else float(clf.C)


def fit_proba(
    schema: Schema,
    train: pd.DataFrame,
    test_frames: list[pd.DataFrame],
    *,
    seed: int = 0,
    prior: np.ndarray | None = None,
    C: float | None = None,
) -> list[np.ndarray]:
    """Fit on ``train`` and return class probabilities (columns = ``schema.classes``) per test frame.

    ``prior``: class prior to shift the predictions to (Bayes' rule), e.g. when the training
    data were sampled class-balanced but the silo knows its own class frequencies.
    """
    classes = list(schema.classes)
    model = fit_logreg(schema, train, seed=seed, C=C)
    y = train[schema.target].astype(str).to_numpy()
    fitted = list(model.classes_)
    train_prior = np.array([np.mean(y == c) for c in classes])
    out = []
    for df in test_frames:
        p_fit = model.predict_proba(df[[c.name for c in schema.features]])
        p = np.zeros((len(df), len(classes)))
        for j, c in enumerate(fitted):
            p[:, classes.index(c)] = p_fit[:, j]
        if prior is not None:
            w = np.where(train_prior > 0, np.asarray(prior) / np.maximum(train_prior, 1e-12), 0.0)
            p = p * w
            p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        out.append(p)
    return out
