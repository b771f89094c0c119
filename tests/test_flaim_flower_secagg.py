"""Exact integer sums through Flower's SecAgg+ (real ServerApp/ClientApp, secaggplus_mod, in-process grid)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage

from fedsynth.federated.local import run_in_process
from fedsynth.federated.secure_rounds import (
    ScriptedDriver,
    SecAggSettings,
    SumRequest,
    make_client_app,
    make_server_app,
)
from fedsynth.secagg.exact_sum import FLOWER_MAX_MODULUS, decode, encode, plan_exact_sum
from fedsynth.secagg.secure_sum import SecureSumAborted


def _data(n: int, size: int, hi: int, seed: int = 0) -> dict[int, np.ndarray]:
    return {p: np.random.default_rng(seed + p).integers(0, hi, size, dtype=np.int64) for p in range(n)}


def _vector_fn(data: Mapping[int, np.ndarray]):  # type: ignore[no-untyped-def]
    def factory(context: Context):  # type: ignore[no-untyped-def]
        def f(pid: int, payload: Mapping[str, Any]) -> np.ndarray:
            if pid in payload.get("crash", []):
                raise RuntimeError("client crashed while computing its answer")
            x = data[pid] * int(payload.get("scale", 1))
            if pid in payload.get("poison", []):
                x = x.copy()
                x[0] = 2**62  # out of range on purpose
            return x

        return f

    return factory


def _run(data, requests, settings=None, drop=None):  # type: ignore[no-untyped-def]
    driver = ScriptedDriver(list(requests))
    run_in_process(
        make_server_app(lambda c: driver, settings), make_client_app(_vector_fn(data)), len(data), drop
    )
    return driver.results


def test_flower_secaggplus_round_returns_exact_integer_sum() -> None:
    data = _data(6, 10_000, 200_000)  # per-client counts > 65,535; total > 2^20
    (res,) = _run(data, [SumRequest({"scale": 1}, bound=200_000)])
    np.testing.assert_array_equal(res.total, sum(data.values()))
    assert res.total.dtype == np.int64 and res.survivors == list(range(6))
    for p in range(6):  # every client uploads at least its masked vector; counted from the wire format
        assert res.bytes_sent[p] > 8 * 10_000 and res.bytes_received[p] > 0


def test_large_and_negative_values_use_limbs_and_stay_exact() -> None:
    data = _data(4, 500, 2**40, seed=3)
    reqs = [
        SumRequest({"scale": -3}, bound=3 * 2**40),
        SumRequest({"scale": 1}, bound=2**40, participants=[1, 3]),
    ]
    r1, r2 = _run(data, reqs)
    np.testing.assert_array_equal(r1.total, -3 * sum(data.values()))
    assert r2.survivors == [1, 3]
    np.testing.assert_array_equal(r2.total, data[1] + data[3])


def test_dropout_after_key_sharing_is_tolerated_and_exact() -> None:
    data = _data(6, 2_000, 70_000, seed=1)
    (res,) = _run(data, [SumRequest({"crash": [2]}, bound=70_000)])
    assert res.survivors == [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(res.total, sum(v for p, v in data.items() if p != 2))


def _lost_at_setup(pid: int, msg: Message) -> bool:
    cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
    return pid == 4 and cfg is not None and cfg.get("stage") == Stage.SETUP


def test_dropout_before_key_sharing_halts_flower_round_then_reruns_without_it() -> None:
    data = _data(5, 300, 1000, seed=2)
    (res,) = _run(data, [SumRequest({}, bound=1000)], drop=_lost_at_setup)
    assert res.survivors == [0, 1, 2, 3]
    np.testing.assert_array_equal(res.total, sum(v for p, v in data.items() if p != 4))
    with pytest.raises(SecureSumAborted, match="before key sharing"):
        _run(
            data,
            [SumRequest({}, bound=1000)],
            SecAggSettings(retry_without_early_dropouts=False),
            _lost_at_setup,
        )


def test_client_lost_during_unmasking_is_tolerated() -> None:
    data = _data(6, 400, 5000, seed=7)

    def lost_in_unmask(pid: int, msg: Message) -> bool:
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
        return pid == 0 and cfg is not None and cfg.get("stage") == Stage.UNMASK

    (res,) = _run(data, [SumRequest({}, bound=5000)], drop=lost_in_unmask)
    assert res.survivors == list(range(6))  # its masked vector was in; only its shares are missing
    np.testing.assert_array_equal(res.total, sum(data.values()))


def test_out_of_range_client_is_refused_never_wrapped() -> None:
    data = _data(5, 100, 1000, seed=4)
    (res,) = _run(data, [SumRequest({"poison": [1]}, bound=1000)])
    assert 1 not in res.survivors
    np.testing.assert_array_equal(res.total, sum(v for p, v in data.items() if p != 1))


def test_exact_sum_plan_respects_flower_limits() -> None:
    for n in (2, 10, 100):
        plan = plan_exact_sum(2**20, n)
        assert n * plan.quantization_range < FLOWER_MAX_MODULUS
        assert plan.quantization_range == 2 * plan.half_range  # one quantum is exactly 1
        kw = plan.workflow_kwargs()
        assert kw["clipping_range"] * 2 == kw["quantization_range"] and kw["max_weight"] == 1.0
    assert plan_exact_sum(100_000, 10).n_limbs == 1
    assert plan_exact_sum(2**40, 10).n_limbs == 2
    with pytest.raises(ValueError, match="overflow"):
        plan_exact_sum(2**61, 10)
    with pytest.raises(ValueError, match="at least 2"):
        plan_exact_sum(10, 1)


def test_encode_decode_roundtrip_and_refusal() -> None:
    rng = np.random.default_rng(0)
    plan = plan_exact_sum(2**45, 7)
    xs = [rng.integers(-(2**45), 2**45, 1000) for _ in range(7)]
    mean = sum(encode(x, plan) for x in xs) / 7  # what the workflow hands to the strategy
    np.testing.assert_array_equal(decode(mean, 7, plan), sum(xs))
    with pytest.raises(ValueError, match="bound"):
        encode(np.array([2**46]), plan)
    with pytest.raises(ValueError, match="integer"):
        encode(np.array([0.5]), plan)


# ----------------------------------------------------------------------------- the HE backend on Flower
HE = SecAggSettings(backend="he")


def test_flower_he_round_returns_the_exact_sum_and_survives_a_crash() -> None:
    data = _data(4, 5_000, 1000, seed=5)
    r1, r2 = _run(data, [SumRequest({}, bound=1000), SumRequest({"crash": [1]}, bound=1000)], HE)
    np.testing.assert_array_equal(r1.total, sum(data.values()))
    assert r1.survivors == [0, 1, 2, 3]
    # BFV ciphertexts up (2 × ≈ 81 KB for 5,000 counts) and the public key down (≈ 129 KB)
    assert all(r1.bytes_sent[p] > 150_000 and r1.bytes_received[p] > 120_000 for p in range(4))
    assert r2.survivors == [0, 2, 3]
    np.testing.assert_array_equal(r2.total, sum(v for p, v in data.items() if p != 1))


def test_flower_he_refuses_a_bound_the_plaintext_cannot_hold() -> None:
    with pytest.raises(SecureSumAborted, match="plaintext range"):
        _run(_data(3, 10, 10), [SumRequest({}, bound=2**40)], HE)
