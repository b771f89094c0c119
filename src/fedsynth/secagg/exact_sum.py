"""Exact integer sums through Flower's SecAgg+ (which natively computes a weighted mean of floats).

Flower's ``secaggplus_mod`` clips each value to ``[-c, c]``, maps it to ``x + c`` scaled by
``Q / (2c)`` with stochastic rounding, multiplies by ``round(num_examples / max_weight * Q) / Q`` and
sums modulo ``M`` (``modulus_range``, at most 2^32); the workflow then divides by the summed weights.
With ``Q = 2c`` (one quantum = 1), ``num_examples == max_weight`` (weight factor exactly 1) and integer
inputs, every step is exact and the server gets ``sum(x) / n``; multiplying by the number of surviving
clients ``n`` and rounding gives the exact sum (|sum| < 2^32 ≪ 2^53, so float64 is exact).

Limits: each quantised value ``x + c`` lies in ``[0, Q]`` and ``n * Q < M`` must hold, or the modular
sum wraps. We therefore split each (shifted, non-negative) value into base-2^b *limbs* with
``n * 2^b < M``: a client value must satisfy ``|x| <= bound`` (public, part of the request) and the
number of limbs is ``ceil(bits(2 * bound + 1) / b)``. Counts per client up to 2^27 with 10 clients fit
in one limb; larger bounds cost more limbs (more traffic), never correctness. Values outside the bound
are refused by the client (it raises, i.e. it drops out of that round; never wrapped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOWER_MAX_MODULUS = 2**32  # SecAggPlusWorkflow's documented upper limit for modulus_range


@dataclass(frozen=True)
class LimbPlan:
    bound: int  # public per-client bound: |x| <= bound
    max_clients: int  # plan valid for rounds with at most this many clients
    limb_bits: int  # b: each limb lies in [0, 2^b)
    n_limbs: int
    modulus: int = FLOWER_MAX_MODULUS

    @property
    def half_range(self) -> int:
        """Flower ``clipping_range`` c = Q/2 (a limb l is sent as l - c, so l - c + c = l)."""
        return 2 ** (self.limb_bits - 1)

    @property
    def quantization_range(self) -> int:
        return 2**self.limb_bits

    def workflow_kwargs(self) -> dict[str, float | int]:
        """Settings for ``SecAggPlusWorkflow`` that make its mean an exact integer sum."""
        return {
            "max_weight": 1.0,
            "clipping_range": float(self.half_range),
            "quantization_range": self.quantization_range,
            "modulus_range": self.modulus,
        }

    def to_config(self) -> dict[str, int]:
        return {"sum.bound": self.bound, "sum.limb_bits": self.limb_bits, "sum.n_limbs": self.n_limbs}

    @classmethod
    def from_config(cls, cfg: dict) -> LimbPlan:
        return cls(int(cfg["sum.bound"]), 0, int(cfg["sum.limb_bits"]), int(cfg["sum.n_limbs"]))


def plan_exact_sum(bound: int, max_clients: int, modulus: int = FLOWER_MAX_MODULUS) -> LimbPlan:
    """Choose the limb width so that ``max_clients * 2^b < modulus`` and the int64 total cannot overflow."""
    if bound < 0:
        raise ValueError("bound must be >= 0")
    if max_clients < 2:
        raise ValueError("secure aggregation needs at least 2 clients")
    if modulus > FLOWER_MAX_MODULUS or modulus & (modulus - 1):
        raise ValueError("modulus must be a power of two <= 2^32 (Flower's limit)")
    if max_clients * (2 * bound + 1) >= 2**62:
        raise ValueError(f"{max_clients} clients × bound {bound} could overflow the int64 total")
    b = 1
    while max_clients * 2 ** (b + 1) < modulus and b + 1 <= 30:  # quantize() casts to int32
        b += 1
    if max_clients * 2**b >= modulus:
        raise ValueError(f"too many clients ({max_clients}) for modulus {modulus}")
    n_limbs = max(1, -(-int(2 * bound).bit_length() // b))
    return LimbPlan(int(bound), int(max_clients), b, n_limbs, modulus)


def encode(x: np.ndarray, plan: LimbPlan) -> np.ndarray:
    """Client side: int vector -> float64 vector of limbs (limb-major), each in [-c, c)."""
    a = np.asarray(x)
    if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"secure sum needs an integer vector, got dtype {a.dtype}")
    a = a.reshape(-1)
    if a.size and (int(a.min()) < -plan.bound or int(a.max()) > plan.bound):
        raise ValueError(
            f"vector values in [{int(a.min())}, {int(a.max())}] exceed the public bound ±{plan.bound}; "
            "refusing to send (the sum would wrap)"
        )
    u = a.astype(np.int64) + plan.bound  # in [0, 2*bound]
    mask = (1 << plan.limb_bits) - 1
    limbs = [((u >> (plan.limb_bits * j)) & mask) for j in range(plan.n_limbs)]
    return (np.concatenate(limbs) - plan.half_range).astype(np.float64)


def decode(mean: np.ndarray, n_clients: int, plan: LimbPlan) -> np.ndarray:
    """Server side: the workflow's mean over ``n_clients`` survivors -> exact int64 sum."""
    m = np.asarray(mean, dtype=np.float64).reshape(plan.n_limbs, -1)
    limb_sums = np.rint(m * n_clients).astype(np.int64) + n_clients * plan.half_range
    if (limb_sums < 0).any() or (limb_sums > n_clients * ((1 << plan.limb_bits) - 1)).any():
        raise ValueError("decoded limb sums are out of range: the secure sum was corrupted or wrapped")
    total = np.zeros(m.shape[1], dtype=np.int64)
    for j in range(plan.n_limbs):  # partial sums stay <= n * 2 * bound < 2^62: no overflow
        total += limb_sums[j] << (plan.limb_bits * j)
    return total - n_clients * plan.bound
