"""Workloads and AIM candidates.

A workload W is a list of attribute tuples (marginal queries). AIM's candidates are the
downward closure of W (every non-empty subset of every workload query), each weighted by its
overlap with the workload:  w_q = Σ_{r ∈ W} |q ∩ r|.
"""

from __future__ import annotations

import itertools

import numpy as np

Clique = tuple[str, ...]


def _canon(q: tuple[str, ...], order: tuple[str, ...]) -> Clique:
    pos = {a: i for i, a in enumerate(order)}
    return tuple(sorted(q, key=pos.__getitem__))


def all_kway(attrs: tuple[str, ...], k: int) -> list[Clique]:
    if not 1 <= k <= len(attrs):
        raise ValueError(f"cannot form {k}-way marginals over {len(attrs)} attributes")
    return [tuple(c) for c in itertools.combinations(attrs, k)]


def random_kway(attrs: tuple[str, ...], k: int = 3, num: int = 64, seed: int = 0) -> list[Clique]:
    """``num`` distinct k-way marginals drawn uniformly (seeded) from all of them."""
    allq = all_kway(attrs, k)
    if num >= len(allq):
        return allq
    idx = np.random.default_rng(seed).choice(len(allq), size=num, replace=False)
    return [allq[i] for i in sorted(idx)]


def target_kway(attrs: tuple[str, ...], target: str, k: int = 3) -> list[Clique]:
    """Every k-way marginal that includes the target."""
    others = tuple(a for a in attrs if a != target)
    return [_canon((target, *c), attrs) for c in itertools.combinations(others, k - 1)]


def make_workload(
    attrs: tuple[str, ...], kind: str = "3way-64", *, target: str | None = None, seed: int = 0
) -> list[Clique]:
    """'3way-64' (64 random 3-way, FLAIM default), 'all-2way', 'target-3way'."""
    if kind == "3way-64":
        return random_kway(attrs, 3, 64, seed)
    if kind == "all-2way":
        return all_kway(attrs, 2)
    if kind == "target-3way":
        if target is None:
            raise ValueError("target-3way workload needs a target column")
        return target_kway(attrs, target, 3)
    raise ValueError(f"unknown workload {kind!r}; use 3way-64, all-2way or target-3way")


def downward_closure(workload: list[Clique], order: tuple[str, ...]) -> list[Clique]:
    out: set[Clique] = set()
    for q in workload:
        for r in range(1, len(q) + 1):
            out.update(_canon(c, order) for c in itertools.combinations(q, r))
    return sorted(out, key=lambda c: (len(c), [order.index(a) for a in c]))


def candidate_weights(workload: list[Clique], order: tuple[str, ...]) -> dict[Clique, float]:
    """w_q = Σ_{r∈W} |q ∩ r| over the downward closure."""
    ws = [set(r) for r in workload]
    return {q: float(sum(len(set(q) & r) for r in ws)) for q in downward_closure(workload, order)}


def candidate_pool(
    sizes: dict[str, int], workload: list[Clique], cells: int, allowed: set[Clique] | None = None
) -> list[Clique]:
    """A public, data-independent subset of the candidates whose answers fit in ``cells`` cells.

    Every one-way is in (the model needs all of them); the remaining budget is filled greedily with
    the closure's marginals of two or more attributes in decreasing weight per cell, w_q / |Ω_q|
    (ties: fewer cells, then closure order), skipping any that no longer fit. The pool depends only
    on the schema and the workload, so clients and server compute the same one. ``allowed``
    (public, e.g. the candidates under a model-size cap) restricts the multi-way marginals.
    """
    attrs = tuple(sizes)
    weights = candidate_weights(workload, attrs)
    size = {q: int(np.prod([sizes[a] for a in q], dtype=np.int64)) for q in weights}
    ones = [(a,) for a in attrs]
    used = sum(sizes.values())
    if used > cells:
        raise ValueError(
            f"the one-way marginals alone have {used} cells, over the pool budget of {cells}; "
            "raise the budget (pool_cells) or coarsen the binning"
        )
    rest = sorted(
        (q for q in weights if len(q) > 1 and (allowed is None or q in allowed)),
        key=lambda q: (-weights[q] / size[q], size[q]),
    )
    pool: list[tuple[str, ...]] = list(ones)
    for q in rest:
        if used + size[q] <= cells:
            pool.append(q)
            used += size[q]
    return pool
