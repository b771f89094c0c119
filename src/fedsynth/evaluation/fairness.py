"""Group fairness gaps of a classifier: does a method (e.g. training on synthetic data) amplify bias?

For a protected attribute with groups :math:`g` (e.g. ``sex`` or ``race`` on Adult), true labels
:math:`Y`, predictions :math:`\\hat Y` (True = positive class, income >50K):

* true positive rate :math:`\\mathrm{TPR}_g = P(\\hat Y = 1 \\mid Y = 1, G = g)`; the **TPR gap**
  (equal opportunity difference) is :math:`\\max_g \\mathrm{TPR}_g - \\min_g \\mathrm{TPR}_g`;
* positive rate :math:`\\mathrm{PR}_g = P(\\hat Y = 1 \\mid G = g)`; the **positive-rate gap**
  (demographic parity difference) is :math:`\\max_g \\mathrm{PR}_g - \\min_g \\mathrm{PR}_g`;
* base rate :math:`\\mathrm{BR}_g = P(Y = 1 \\mid G = g)`; the **base-rate gap** is the same spread of
  the data itself, the reference against which a positive-rate gap should be read.

All rates are percent, gaps percentage points. A group with fewer than ``min_positives`` true
positives is left out of *every* gap: its TPR is a ratio over a handful of rows (binomial sd
:math:`\\sqrt{p(1-p)/n_+}`, about 11 points at :math:`n_+ = 20`), so with it the max − min spread
would mostly measure sampling noise of the smallest group, not the classifier. Excluding it from
all gaps keeps the three gaps over the same set of groups, hence comparable.

:func:`widening` compares a method's gaps with a reference's (e.g. a model trained on real data):
positive = the method widens the gap, i.e. amplifies the disparity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def _as_bool(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != bool:
        # 0/1 labels are accepted; anything else (e.g. class names) would be silently truthy
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values like {arr[:3].tolist()}")
        arr = arr.astype(bool)
    return arr


def _validate(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, p = _as_bool(y_true, "y_true"), _as_bool(y_pred, "y_pred")
    g = np.asarray(groups).astype(str)
    if g.ndim != 1:
        raise ValueError(f"groups must be one-dimensional, got shape {g.shape}")
    if not (len(t) == len(p) == len(g)):
        raise ValueError(
            f"y_true, y_pred and groups must have equal lengths, got {len(t)}, {len(p)} and {len(g)}"
        )
    if len(t) == 0:
        raise ValueError("y_true, y_pred and groups are empty: no rows to compute fairness gaps on")
    return t, p, g


def group_rates(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, min_positives: int = 20
) -> dict[str, dict[str, float | int]]:
    """Per group (sorted by label): ``n``, ``positives`` (true positives in ``y_true``), ``tpr``
    (percent of those predicted positive; NaN without positives), ``positive_rate`` (percent
    predicted positive), ``base_rate`` (percent truly positive) and ``reliable`` (1 when the group
    has at least ``min_positives`` positives, i.e. it enters :func:`fairness_gaps`, else 0)."""
    t, p, g = _validate(y_true, y_pred, groups)
    out: dict[str, dict[str, float | int]] = {}
    for label in sorted(set(g.tolist())):
        mask = g == label
        n, pos = int(mask.sum()), int(t[mask].sum())
        out[label] = {
            "n": n,
            "positives": pos,
            "tpr": 100.0 * float(p[mask & t].sum()) / pos if pos else math.nan,
            "positive_rate": 100.0 * float(p[mask].mean()),
            "base_rate": 100.0 * pos / n,
            "reliable": int(pos >= min_positives),
        }
    return out


def _spread(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) - min(finite) if len(finite) >= 2 else math.nan


def fairness_gaps(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, min_positives: int = 20
) -> dict[str, Any]:
    """TPR, positive-rate and base-rate gaps (percentage points, max − min over the groups with at
    least ``min_positives`` true positives), the per-group rates and the excluded groups. With
    fewer than two groups left the gaps are NaN."""
    rates = group_rates(y_true, y_pred, groups, min_positives=min_positives)
    kept = [r for r in rates.values() if r["positives"] >= min_positives]
    return {
        "tpr_gap": _spread([float(r["tpr"]) for r in kept]),
        "positive_rate_gap": _spread([float(r["positive_rate"]) for r in kept]),
        "base_rate_gap": _spread([float(r["base_rate"]) for r in kept]),
        "groups": rates,
        "excluded": [k for k, r in rates.items() if r["positives"] < min_positives],
    }


def attribute_gaps(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    attributes: tuple[str, ...] = ("sex", "race"),
    *,
    min_positives: int = 20,
) -> dict[str, dict[str, Any]]:
    """:func:`fairness_gaps` for each protected attribute, the groups read from ``frame[attr]``
    (rows aligned with ``y_true`` / ``y_pred``)."""
    missing = [a for a in attributes if a not in frame.columns]
    if missing:
        raise ValueError(
            f"attribute column(s) {missing} not in the frame; available columns: {list(frame.columns)}"
        )
    return {
        a: fairness_gaps(y_true, y_pred, frame[a].astype(str).to_numpy(), min_positives=min_positives)
        for a in attributes
    }


def widening(
    method: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]], key: str = "tpr_gap"
) -> dict[str, float]:
    """Per attribute of ``method``: its ``key`` gap minus the reference's (percentage points;
    positive = the method widens the gap). NaN where either side lacks the gap."""
    return {
        a: float(gaps.get(key, math.nan)) - float(reference.get(a, {}).get(key, math.nan))
        for a, gaps in method.items()
    }


__all__ = ["attribute_gaps", "fairness_gaps", "group_rates", "widening"]
