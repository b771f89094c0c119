"""Secure summation of integer vectors across clients: the only way client data reaches the server.

Interface shared by the FLAIM core (which only ever needs a sum) and its implementations:
``plain_sum`` (the reference: no security, for tests), an in-process SecAgg+ built on Flower's
secure-aggregation primitives, and the Flower deployment (``fedsynth.federated``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class SumResult:
    total: np.ndarray  # int64, the exact sum over surviving clients
    survivors: list[int]  # client ids whose vectors are included
    bytes_sent: dict[int, int] = field(default_factory=dict)  # per client, counted from messages
    bytes_received: dict[int, int] = field(default_factory=dict)


class SecureSum(Protocol):
    def __call__(self, vectors: Mapping[int, np.ndarray]) -> SumResult: ...


def plain_sum(vectors: Mapping[int, np.ndarray]) -> SumResult:
    """Reference: the exact int64 sum, no protection. Bytes = the raw int64 payload."""
    if not vectors:
        raise ValueError("no client vectors to sum")
    arrs = [np.asarray(v, dtype=np.int64) for v in vectors.values()]
    if len({a.shape for a in arrs}) != 1:
        raise ValueError("client vectors have different shapes")
    total = np.sum(np.stack(arrs), axis=0, dtype=np.int64)
    return SumResult(total, sorted(vectors), {k: int(np.asarray(v).size * 8) for k, v in vectors.items()}, {})
