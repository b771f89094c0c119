"""The HE (BFV) secure-sum backend: exact like the plain sum and SecAgg+, refuses what it must."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsynth.secagg.he_sum import (
    Decryptor,
    HEError,
    HEIntegrityError,
    HEParams,
    HESum,
    Upload,
    encrypt_vector,
)
from fedsynth.secagg.secure_sum import OutOfRangeError, SecAggPlusSum, SecureSumAborted, plain_sum

DEC = Decryptor()  # key generation once for the module (≈ 50 ms each)


def _vectors(n: int, size: int, lo: int, hi: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.integers(lo, hi + 1, size) for k in range(n)}


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(2, 8),
    size=st.sampled_from([1, 7, 4094, 4095, 9000]),  # one ciphertext, exactly full, two, three
    lo=st.sampled_from([-(2**16), -1000, 0]),
    seed=st.integers(0, 2**31),
)
def test_he_sum_equals_the_plain_sum(n: int, size: int, lo: int, seed: int) -> None:
    vecs = _vectors(n, size, lo, 2**16, seed)
    res = HESum(decryptor=DEC)(vecs)
    assert res.survivors == list(range(n))
    assert res.total.dtype == np.int64 and np.array_equal(res.total, plain_sum(vecs).total)


def test_he_sum_equals_secagg_plus_on_the_same_inputs() -> None:
    vecs = _vectors(6, 6500, -5000, 5000, 1)
    he, sa = HESum(decryptor=DEC)(vecs), SecAggPlusSum(seed=0)(vecs)
    assert np.array_equal(he.total, sa.total) and he.survivors == sa.survivors
    # bytes both ways per client: ciphertexts up (2 × ≈ 81 KB), the public key down (≈ 129 KB)
    assert 100_000 < he.bytes_sent[0] < 400_000 and 100_000 < he.bytes_received[0] < 200_000


def test_dropout_before_upload_is_excluded_after_upload_is_included() -> None:
    vecs = _vectors(5, 300, 0, 100, 2)
    res = HESum(decryptor=DEC, drop_before_upload={1}, drop_after_upload={3})(vecs)
    assert res.survivors == [0, 2, 3, 4]
    assert np.array_equal(res.total, plain_sum({k: v for k, v in vecs.items() if k != 1}).total)
    with pytest.raises(SecureSumAborted, match="need 3"):
        HESum(decryptor=DEC, threshold=3, drop_before_upload={0, 1, 2})(vecs)


def test_values_over_the_bound_are_refused_never_wrapped() -> None:
    vecs = _vectors(3, 10, 0, 10, 3)
    vecs[2][4] = 2**16 + 1
    with pytest.raises(OutOfRangeError, match="client 2"):
        HESum(decryptor=DEC)(vecs)
    clipped = HESum(decryptor=DEC, on_out_of_range="clip")
    res = clipped(vecs)
    assert res.total[4] == vecs[0][4] + vecs[1][4] + 2**16 and clipped.last_clipped == {2: 1}
    with pytest.raises(ValueError, match="could wrap"):  # 600 × 2^16 > p/2
        HESum(decryptor=DEC).check_bound(600)
    with pytest.raises(HEError, match="plaintext range"):
        encrypt_vector(DEC.open_round(), np.array([DEC.params.max_abs + 1]))


def _tampered(fn) -> HESum:
    h = HESum(decryptor=DEC)
    h.tamper[1] = fn
    return h


@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        (lambda u: replace(u, chunks=(b"\x00garbage" * 20,)), "malformed ciphertext"),
        (lambda u: replace(u, chunks=(u.chunks[0] + b"\x00" * 400_000,)), "exceeds"),
        (lambda u: replace(u, round_id="an-old-round"), "for round"),
        (lambda u: replace(u, fingerprint="0" * 32), "another public key"),
        (lambda u: replace(u, size=u.size + 1), "expected 50"),
    ],
)
def test_a_faulty_upload_is_refused_and_the_sum_over_the_others_is_exact(fn, reason: str) -> None:
    vecs = _vectors(4, 50, 0, 100, 4)
    h = _tampered(fn)
    res = h(vecs)
    assert res.survivors == [0, 2, 3] and reason in h.last_refused[1]
    assert np.array_equal(res.total, plain_sum({k: v for k, v in vecs.items() if k != 1}).total)


def test_a_ciphertext_under_another_key_with_a_forged_header_fails_the_integrity_check() -> None:
    other = Decryptor()
    vecs = _vectors(3, 50, 0, 100, 5)

    def forge(u: Upload) -> Upload:  # encrypted under another key, header copied from the round
        fake = encrypt_vector(other.open_round(u.round_id), np.zeros(50, dtype=np.int64))
        return replace(fake, fingerprint=u.fingerprint)

    with pytest.raises(HEIntegrityError, match="nothing is released"):
        _tampered(forge)(vecs)


def test_a_replayed_upload_from_another_round_fails_the_integrity_check() -> None:
    vecs = _vectors(3, 50, 0, 100, 6)
    old = encrypt_vector(DEC.open_round(), vecs[1])
    with pytest.raises(HEIntegrityError):
        _tampered(lambda u: replace(old, round_id=u.round_id))(vecs)


def test_upload_wire_format_round_trips_and_truncation_is_refused() -> None:
    up = encrypt_vector(DEC.open_round(), np.arange(10))
    blob = up.to_bytes()
    assert Upload.from_bytes(blob, max_bytes=10**6) == up
    with pytest.raises(HEError, match="truncated"):
        Upload.from_bytes(blob[:-5], max_bytes=10**6)
    with pytest.raises(HEError, match="limit"):
        Upload.from_bytes(blob, max_bytes=1000)
    with pytest.raises(ValueError, match="already open"):
        DEC.open_round(up.round_id)


def test_parameters_as_documented() -> None:
    p = HEParams()
    assert p.plain_modulus % (2 * p.poly_degree) == 1 and sum(p.coeff_bits) <= 109
    assert all(p.plain_modulus % d for d in range(2, 8200))  # prime (no factor below √p ≈ 8190)
    assert p.ciphertexts(6500) == 2 and p.ciphertexts(65_000) == 16


def test_accumulate_across_rounds_and_release_only_the_masked_cells() -> None:
    h = HESum(decryptor=DEC)
    r1, r2 = _vectors(3, 9000, 0, 50, 7), _vectors(4, 9000, 0, 50, 8)
    noise = _vectors(2, 9000, -20, 20, 9)
    for key, vecs in (("a", r1), ("a", r2), ("n", noise)):
        res = h.accumulate(key, vecs)
        assert res.total.size == 0 and res.survivors == sorted(vecs)  # nothing revealed
    exact = plain_sum(r1).total + plain_sum(r2).total
    cells = np.array([0, 5, 4093, 4094, 8999])  # across the three ciphertexts
    assert np.array_equal(h.release(["a"], cells), exact[cells])
    assert np.array_equal(h.release(["a", "n"], cells), exact[cells] + plain_sum(noise).total[cells])
    with pytest.raises(ValueError, match="outside"):
        h.release(["a"], np.array([9000]))
