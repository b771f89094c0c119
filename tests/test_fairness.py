"""Group fairness gaps: hand-computed TPR / positive-rate / base-rate gaps on a tiny example, the
exclusion of groups with too few positives, NaN with fewer than two groups, input validation and
the sign of :func:`widening`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.fairness import attribute_gaps, fairness_gaps, group_rates, widening


def toy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group a: 4 rows, 2 positives, one of them predicted, plus one false positive.
    Group b: 6 rows, 3 positives, all three predicted, no false positive.
    Group c: 2 rows, 0 positives, none predicted."""
    y_true = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    y_pred = np.array([1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    groups = np.array(["a"] * 4 + ["b"] * 6 + ["c"] * 2)
    return y_true, y_pred, groups


def test_group_rates_by_hand() -> None:
    rates = group_rates(*toy(), min_positives=2)
    assert list(rates) == ["a", "b", "c"]
    a, b, c = rates["a"], rates["b"], rates["c"]
    assert (a["n"], a["positives"], b["n"], b["positives"]) == (4, 2, 6, 3)
    assert a["tpr"] == pytest.approx(50.0)  # 1 of 2 positives predicted
    assert b["tpr"] == pytest.approx(100.0)  # 3 of 3
    assert a["positive_rate"] == pytest.approx(50.0)  # 2 of 4 predicted positive
    assert b["positive_rate"] == pytest.approx(50.0)  # 3 of 6
    assert a["base_rate"] == pytest.approx(50.0) and b["base_rate"] == pytest.approx(50.0)
    assert math.isnan(float(c["tpr"]))  # no positives: TPR undefined
    assert c["positive_rate"] == 0.0 and c["base_rate"] == 0.0
    assert (a["reliable"], b["reliable"], c["reliable"]) == (1, 1, 0)


def test_gaps_by_hand_and_small_groups_excluded_from_all_gaps() -> None:
    gaps = fairness_gaps(*toy(), min_positives=2)
    assert gaps["excluded"] == ["c"]
    assert gaps["tpr_gap"] == pytest.approx(50.0)  # 100 − 50
    # c (positive rate 0, base rate 0) would make both gaps 50 if it were kept
    assert gaps["positive_rate_gap"] == pytest.approx(0.0)
    assert gaps["base_rate_gap"] == pytest.approx(0.0)
    kept_all = fairness_gaps(*toy(), min_positives=0)
    assert kept_all["excluded"] == []
    assert kept_all["positive_rate_gap"] == pytest.approx(50.0)  # 50 − 0
    assert kept_all["tpr_gap"] == pytest.approx(50.0)  # c's NaN TPR is skipped, not propagated


def test_fewer_than_two_groups_gives_nan() -> None:
    gaps = fairness_gaps(*toy(), min_positives=3)  # only b has 3 positives
    assert gaps["excluded"] == ["a", "c"]
    assert all(math.isnan(gaps[k]) for k in ("tpr_gap", "positive_rate_gap", "base_rate_gap"))
    assert gaps["groups"]["a"]["tpr"] == pytest.approx(50.0)  # still reported per group


def test_validation() -> None:
    y_true, y_pred, groups = toy()
    with pytest.raises(ValueError, match="equal lengths"):
        fairness_gaps(y_true, y_pred[:-1], groups)
    with pytest.raises(ValueError, match="empty"):
        fairness_gaps(np.array([], dtype=bool), np.array([], dtype=bool), np.array([]))
    with pytest.raises(ValueError, match="boolean"):
        group_rates(np.array(["yes", "no"]), np.array([True, False]), np.array(["a", "a"]))


def test_attribute_gaps_and_missing_column() -> None:
    y_true, y_pred, groups = toy()
    frame = pd.DataFrame({"sex": groups, "race": np.where(np.arange(12) < 6, "x", "y")})
    out = attribute_gaps(frame, y_true, y_pred, min_positives=2)
    assert set(out) == {"sex", "race"}
    assert out["sex"]["tpr_gap"] == pytest.approx(50.0)
    # race: x = rows 0..5 (positives 0,1,4,5; predicted 0,4,5 → TPR 75), y = rows 6..11 (1 positive)
    assert out["race"]["excluded"] == ["y"] and math.isnan(out["race"]["tpr_gap"])
    assert out["race"]["groups"]["x"]["tpr"] == pytest.approx(75.0)
    with pytest.raises(ValueError, match=r"age.*available columns.*sex"):
        attribute_gaps(frame, y_true, y_pred, ("sex", "age"))


def test_widening_sign() -> None:
    reference = {"sex": {"tpr_gap": 10.0, "positive_rate_gap": 8.0}, "race": {"tpr_gap": 20.0}}
    method = {"sex": {"tpr_gap": 15.0, "positive_rate_gap": 5.0}, "race": {"tpr_gap": 12.5}}
    assert widening(method, reference) == pytest.approx({"sex": 5.0, "race": -7.5})
    assert widening(method, reference, key="positive_rate_gap")["sex"] == pytest.approx(-3.0)
    assert math.isnan(widening(method, reference, key="positive_rate_gap")["race"])
