"""The drift benchmark's non-IID splits: seeded, β-faithful, and clear about what cannot be split."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.data.partition import (
    PartitionError,
    dirichlet_label_skew,
    drift_partition,
    missing_classes,
    parse_drift_split,
    quantity_skew,
    top_up,
)


def _disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    allrows = np.concatenate(parts)
    assert len(allrows) == n and len(np.unique(allrows)) == n


@pytest.mark.parametrize(
    ("kind", "param"), [("label-skew", 0.1), ("quantity-skew", 0.5), ("missing-classes", 3)]
)
def test_same_seed_same_partition_other_seed_other(kind: str, param: float) -> None:
    labels = np.repeat(np.arange(5), 400)
    a, _ = drift_partition(kind, labels, 8, param, seed=11, min_rows=5)
    b, _ = drift_partition(kind, labels, 8, param, seed=11, min_rows=5)
    c, _ = drift_partition(kind, labels, 8, param, seed=12, min_rows=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    _disjoint_cover(a, len(labels))
    assert min(len(p) for p in a) >= 5


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dirichlet_class_shares_follow_beta(beta: float) -> None:
    # one client's share of each class is Beta(β, (K−1)β): mean 1/K, variance (1/K)(1−1/K)/(Kβ+1);
    # 400 classes of 5,000 rows give 400 independent draws per client (integer rounding ≤ 1/5,000)
    k, classes, per = 10, 400, 5000
    labels = np.repeat(np.arange(classes), per)
    parts = dirichlet_label_skew(labels, k, beta, seed=5, min_rows=1)
    shares = np.array([[np.sum(labels[p] == c) / per for c in range(classes)] for p in parts])  # (k, C)
    assert np.allclose(shares.sum(axis=0), 1.0)
    expected_var = (1 / k) * (1 - 1 / k) / (k * beta + 1)
    assert shares.mean() == pytest.approx(1 / k, rel=1e-9)
    assert shares.var() == pytest.approx(expected_var, rel=0.12)
    # ... and the wrong β is rejected by the same check: variance at 2β is ≥ 25 % off
    wrong = (1 / k) * (1 - 1 / k) / (k * 2 * beta + 1)
    assert abs(shares.var() - wrong) / wrong > 0.2


def test_smaller_beta_is_more_skewed() -> None:
    labels = np.repeat(np.arange(4), 2000)

    def mean_max_share(beta: float) -> float:
        parts = dirichlet_label_skew(labels, 10, beta, seed=1)
        return float(np.mean([np.bincount(labels[p], minlength=4).max() / len(p) for p in parts if len(p)]))

    assert mean_max_share(0.05) > mean_max_share(1.0) + 0.2


def test_missing_classes_each_client_lacks_exactly_k() -> None:
    labels = np.repeat(np.arange(10), 300)
    parts = missing_classes(labels, 20, 8, seed=0)
    _disjoint_cover(parts, len(labels))
    held = [set(np.unique(labels[p]).tolist()) for p in parts]
    assert all(len(h) == 2 for h in held)
    assert set().union(*held) == set(range(10))  # every class has a holder


def test_missing_classes_refuses_what_cannot_be_split() -> None:
    labels = np.repeat(np.arange(10), 30)
    with pytest.raises(PartitionError, match="K < 10"):
        missing_classes(labels, 5, 10)
    with pytest.raises(PartitionError, match="cannot cover"):
        missing_classes(labels, 3, 8)  # 3 clients × 2 classes < 10 classes
    with pytest.raises(PartitionError, match="fewer clients"):
        missing_classes(labels, 20, 8, min_rows=10)  # 30 rows of a class over its 4 holders


def test_quantity_skew_skews_sizes_not_labels() -> None:
    labels = np.tile(np.arange(2), 5000)
    parts = quantity_skew(len(labels), 10, 0.3, seed=2, min_rows=20)
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() > 4 * sizes.min()
    mixes = [np.mean(labels[p]) for p in parts if len(p) >= 200]
    assert max(abs(m - 0.5) for m in mixes) < 0.12


def test_top_up_keeps_the_skew_and_reports_rows_moved() -> None:
    labels = np.repeat(np.arange(2), [9000, 1000])
    # β = 0.05 over 20 clients: almost no draw leaves every client 20 rows; the fallback tops up
    parts, moved = drift_partition("label-skew", labels, 20, 0.05, seed=0, min_rows=20)
    _disjoint_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 20
    assert 0 < moved <= 20 * 20
    parts2, moved2 = top_up([np.arange(0, 3), np.arange(3, 100)], 10)
    assert moved2 == 7 and sorted(len(p) for p in parts2) == [10, 90]
    with pytest.raises(PartitionError, match="exceed"):
        top_up([np.arange(5), np.arange(5, 9)], 5)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("label-skew:0", "β > 0"),
        ("label-skew:-1", "β > 0"),
        ("label-skew:x", "not a number"),
        ("missing-classes", "needs K"),
        ("missing-classes:1.5", "integer"),
        ("iid", "unknown split"),
    ],
)
def test_parse_drift_split_errors(spec: str, match: str) -> None:
    with pytest.raises(PartitionError, match=match):
        parse_drift_split(spec)


def test_parse_drift_split_values() -> None:
    assert parse_drift_split("label-skew") == ("label-skew", None)
    assert parse_drift_split("label-skew:0.1") == ("label-skew", 0.1)
    assert parse_drift_split("missing-classes:8") == ("missing-classes", 8.0)
    assert parse_drift_split("quantity-skew:1") == ("quantity-skew", 1.0)


def test_more_silos_than_rows_is_a_clear_error() -> None:
    labels = np.repeat(np.arange(2), 50)
    with pytest.raises(PartitionError, match="exceed"):
        drift_partition("label-skew", labels, 20, 0.5, min_rows=10)
