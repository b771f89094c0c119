"""SecAgg+ in-process secure sum: exactness, dropouts at each stage, range limits, traffic counting."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.secagg.secure_sum import (
    OutOfRangeError,
    SecAggPlusSum,
    SecureSumAborted,
    SumResult,
    check_range,
    mask_prg,
    plain_sum,
)


def _vectors(n: int, size: int, lo: int, hi: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {cid: rng.integers(lo, hi, size, dtype=np.int64) for cid in range(100, 100 + n)}


@pytest.mark.parametrize("num_shares", [None, 5])
def test_secure_sum_equals_plain_sum(num_shares: int | None) -> None:
    vecs = _vectors(8, 3000, -(10**12), 10**12, seed=1)
    res = SecAggPlusSum(num_shares=num_shares, seed=3)(vecs)
    assert isinstance(res, SumResult)
    assert res.total.dtype == np.int64
    np.testing.assert_array_equal(res.total, plain_sum(vecs).total)
    assert res.survivors == sorted(vecs)


def test_counts_above_uint16_do_not_wrap() -> None:
    # Census-sized marginals: per-client counts > 65,535 and a total far beyond 2^32.
    vecs = {c: np.full(50, 70_000 + c, dtype=np.int64) for c in range(6)}
    vecs[0][0] = 3_000_000_000  # > 2^31 on one client
    res = SecAggPlusSum(seed=0)(vecs)
    np.testing.assert_array_equal(res.total, plain_sum(vecs).total)
    assert res.total[1] == sum(70_000 + c for c in range(6))
    assert res.total[0] == 3_000_000_000 + sum(70_000 + c for c in range(1, 6))


def test_extreme_values_at_the_bound_are_exact() -> None:
    bound = 2**60
    vecs = {0: np.array([bound, -bound, 5]), 1: np.array([bound, -bound, -7]), 2: np.array([-bound, 1, 1])}
    res = SecAggPlusSum(bound=bound, seed=0)(vecs)
    assert res.total.tolist() == [bound, 1 - 2 * bound, -1]


def test_multidimensional_shape_preserved() -> None:
    rng = np.random.default_rng(5)
    vecs = {c: rng.integers(0, 1000, (4, 5, 6)) for c in range(4)}
    res = SecAggPlusSum(seed=1)(vecs)
    assert res.total.shape == (4, 5, 6)
    np.testing.assert_array_equal(res.total, plain_sum(vecs).total)


@pytest.mark.parametrize("num_shares", [None, 5])
def test_dropout_after_key_sharing_gives_exact_sum_of_survivors(num_shares: int | None) -> None:
    vecs = _vectors(9, 2000, 0, 100_000, seed=2)
    dropped = {101, 105}
    res = SecAggPlusSum(num_shares=num_shares, seed=4, drop_after_keys=dropped)(vecs)
    assert res.survivors == sorted(set(vecs) - dropped)
    expected = sum(v for c, v in vecs.items() if c not in dropped)
    np.testing.assert_array_equal(res.total, expected)
    # the dropped clients did send key shares but no masked vector
    assert all(res.bytes_sent[c] < res.bytes_sent[100] for c in dropped)


def test_dropout_before_key_sharing_excludes_the_client() -> None:
    vecs = _vectors(6, 500, -50, 50, seed=3)
    res = SecAggPlusSum(seed=0)(vecs, drop_before_keys={102})
    assert 102 not in res.survivors and len(res.survivors) == 5
    np.testing.assert_array_equal(res.total, sum(v for c, v in vecs.items() if c != 102))


def test_too_many_dropouts_abort_without_a_sum() -> None:
    vecs = _vectors(5, 100, 0, 10, seed=4)
    with pytest.raises(SecureSumAborted, match="key shares"):
        SecAggPlusSum(seed=0)(vecs, drop_before_keys={100, 101, 102, 103})
    with pytest.raises(SecureSumAborted, match="masked vectors"):
        SecAggPlusSum(seed=0)(vecs, drop_after_keys={100, 101, 102, 103})


def test_single_client_round_is_refused() -> None:
    with pytest.raises(SecureSumAborted, match="reveal"):
        SecAggPlusSum(seed=0)({7: np.arange(3)})
    with pytest.raises(ValueError, match="no client"):
        SecAggPlusSum(seed=0)({})


def test_dropout_during_unmask_tolerated_until_threshold() -> None:
    vecs = _vectors(7, 300, 0, 1000, seed=5)
    # threshold 4 of 7: one dropped after keys, one silent in unmask -> 5 shares left, enough
    res = SecAggPlusSum(seed=1)(vecs, drop_after_keys={100}, drop_in_unmask={101})
    np.testing.assert_array_equal(res.total, sum(v for c, v in vecs.items() if c != 100))
    assert 101 in res.survivors  # its masked vector was in; only its unmask reply was lost
    with pytest.raises(SecureSumAborted, match="not enough shares"):
        SecAggPlusSum(seed=1)(vecs, drop_after_keys={100}, drop_in_unmask={101, 102, 103})


def test_out_of_range_refused_with_client_named() -> None:
    vecs = {0: np.array([1, 2, 3]), 1: np.array([1, 2**40, 3])}
    with pytest.raises(OutOfRangeError, match="client 1"):
        SecAggPlusSum(bound=2**32, seed=0)(vecs)


def test_out_of_range_clipped_when_asked_and_reported() -> None:
    vecs = {0: np.array([1, 2, 3]), 1: np.array([1, 2**40, -(2**40)]), 2: np.array([0, 0, 0])}
    s = SecAggPlusSum(bound=2**32, on_out_of_range="clip", seed=0)
    res = s(vecs)
    assert res.total.tolist() == [2, 2 + 2**32, 3 - 2**32]
    assert s.last_clipped == {1: 2}


def test_uint64_beyond_int64_is_refused_not_wrapped() -> None:
    vecs = {0: np.array([2**63 + 5], dtype=np.uint64), 1: np.array([1], dtype=np.uint64)}
    with pytest.raises(OutOfRangeError):
        SecAggPlusSum(seed=0)(vecs)


def test_float_vectors_and_too_many_clients_refused() -> None:
    with pytest.raises(OutOfRangeError, match="dtype"):
        SecAggPlusSum(seed=0)({0: np.array([0.5]), 1: np.array([1.0])})
    with pytest.raises(OutOfRangeError, match="2\\^63"):
        SecAggPlusSum(bound=2**62, seed=0)({c: np.zeros(2, dtype=np.int64) for c in range(3)})
    with pytest.raises(ValueError, match="shape"):
        check_range({0: np.zeros(2, dtype=np.int64), 1: np.zeros(3, dtype=np.int64)}, 10, "refuse")


def test_masked_vectors_hide_inputs_and_bytes_are_counted() -> None:
    vecs = _vectors(4, 1000, 0, 3, seed=6)
    res = SecAggPlusSum(seed=0)(vecs)
    n = 1000
    for c in vecs:
        # each client uploads at least its masked int64 vector plus keys/shares
        assert res.bytes_sent[c] > 8 * n
        assert res.bytes_received[c] > 0
    m = mask_prg(b"seed", n)
    assert m.dtype == np.uint64 and len(np.unique(m)) == n  # full 64-bit masks


def test_plain_sum_unchanged() -> None:
    vecs = {1: np.array([1, 2]), 2: np.array([3, 4])}
    res = plain_sum(vecs)
    assert res.total.tolist() == [4, 6] and res.bytes_sent == {1: 16, 2: 16}
