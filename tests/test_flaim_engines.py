"""The JAX-free marginal path (issue 16) against Private-PGM itself.

* :mod:`fedsynth.flaim.junction` builds the same junction trees, sizes and maximal subsets as
  ``mbi.junction_tree`` / ``mbi.clique_utils`` (mbi is imported here, in the test only);
* the numpy estimator and mbi's JAX ``MirrorDescent`` (``engine="mbi"``) fit the same model;
* ``PGM.model`` hands the fitted model to mbi with the same marginals;
* stratified forward sampling keeps every row's conditional distribution while putting
  ⌊m·p⌋ or ⌈m·p⌉ rows (± one for the stratum at each end) in every cell of a separator group.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.flaim import junction
from fedsynth.flaim.measure import marginal_counts
from fedsynth.flaim.model import Measurement, fit
from fedsynth.flaim.sampling import TreeSampler
from fedsynth.flaim.workload import all_kway


def _random_cliques(rng: np.random.Generator) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    d = int(rng.integers(1, 14))
    attrs = [f"a{k}" for k in range(d)]
    sizes = {a: int(rng.integers(2, 30)) for a in attrs}
    if rng.random() < 0.3:  # a tree-shaped interaction graph takes mbi's DFS post-order branch
        cl = [(attrs[0],)] + [
            tuple(sorted((attrs[i], attrs[int(rng.integers(0, i))]), key=attrs.index)) for i in range(1, d)
        ]
        return sizes, cl
    cl = []
    for _ in range(int(rng.integers(1, 12))):
        idx = sorted(rng.choice(d, int(rng.integers(1, min(4, d) + 1)), replace=False))
        cl.append(tuple(attrs[i] for i in idx))
    return sizes, cl


def test_junction_trees_are_mbis() -> None:
    mbi = pytest.importorskip("mbi")
    from mbi import junction_tree as jt
    from mbi.clique_utils import maximal_subset

    rng = np.random.default_rng(16)
    for _ in range(300):
        sizes, cl = _random_cliques(rng)
        dom = mbi.Domain.fromdict(sizes)
        ours = junction.make_junction_tree(sizes, cl)
        theirs, _ = jt.make_junction_tree(dom, cl)
        assert sorted(ours.nodes) == sorted(theirs.nodes), cl
        assert sorted(map(sorted, ours.edges)) == sorted(map(sorted, theirs.edges)), cl
        assert junction.maximal_cliques(ours) == jt.maximal_cliques(theirs)
        assert junction.model_size_mb(sizes, cl) == pytest.approx(jt.hypothetical_model_size(dom, cl), abs=0)
        assert junction.maximal_subset(cl) == maximal_subset(cl)
        order = junction.message_passing_order(ours)
        assert len(order) == 2 * ours.number_of_edges()
        done: set[tuple] = set()
        for i, j in order:  # every message after those it depends on
            assert all((k, i) in done for k in ours.neighbors(i) if k != j)
            done.add((i, j))


def _problem(n: int = 2000, seed: int = 0) -> tuple[dict[str, int], np.ndarray, list[Measurement]]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, n)
    b = (a + rng.integers(0, 2, n)) % 4
    c = (b + rng.integers(0, 2, n)) % 2
    codes = np.stack([a, b, c], axis=1).astype(np.int64)
    sizes = {"a": 3, "b": 4, "c": 2}
    ms = [
        Measurement(
            q,
            marginal_counts(codes, sizes, q, tuple(sizes))
            + rng.normal(0, 5.0, np.prod([sizes[x] for x in q])),
            5.0,
        )
        for q in [("a",), ("b",), ("c",), ("a", "b"), ("b", "c")]
    ]
    return sizes, codes, ms


def test_numpy_and_mbi_engines_fit_the_same_model() -> None:
    pytest.importorskip("mbi")
    sizes, codes, ms = _problem()
    ours = fit(sizes, ms, len(codes), iters=1000)
    theirs = fit(sizes, ms, len(codes), iters=1000, engine="mbi")
    for q in [("a", "b"), ("b", "c"), ("a", "c")]:
        assert np.abs(ours.probability(q) - theirs.probability(q)).max() < 2e-3, q
    # interop: the same model as an mbi MarkovRandomField, same marginals
    mrf = ours.model
    for q in [("a", "b"), ("b", "c")]:
        np.testing.assert_allclose(
            np.asarray(mrf.project(q).datavector(flatten=False)) / len(codes), ours.probability(q), atol=1e-6
        )
    with pytest.raises(ValueError, match="unknown estimation engine"):
        fit(sizes, ms, len(codes), engine="jax")


def test_stratified_sampling_rounds_within_each_group() -> None:
    sizes, codes, ms = _problem(5000, 1)
    model = fit(sizes, ms, len(codes), iters=300)
    n = 20_000
    strat = TreeSampler(model).sample(n, np.random.default_rng(0), stratified=True)
    iid = TreeSampler(model).sample(n, np.random.default_rng(0))
    attrs = tuple(sizes)
    root, p_root = TreeSampler(model).roots[0]
    got = marginal_counts(strat, sizes, root, attrs)
    assert np.abs(got - n * p_root.ravel()).max() <= 2.0  # a stratum per row: rounding, not noise
    # children: within each separator group of m rows, counts are m·P(new | sep) up to ±2
    for C, sep, new, _ in TreeSampler(model).plan:
        pc = model.probability(C)
        joint = marginal_counts(strat, sizes, C, attrs).reshape(pc.shape)
        axes = tuple(C.index(a) for a in new)
        m = joint.sum(axis=axes, keepdims=True)
        cond = pc / pc.sum(axis=axes, keepdims=True)
        assert sep and np.abs(joint - m * cond).max() <= 2.0, C
    # the one-way errors of the stratified draw are far below the i.i.d. draw's
    errs = [
        np.abs(marginal_counts(x, sizes, q, attrs) / n - model.probability(q).ravel()).sum()
        for x in (strat, iid)
        for q in all_kway(attrs, 2)
    ]
    k = len(all_kway(attrs, 2))
    assert np.mean(errs[:k]) < 0.5 * np.mean(errs[k:])
    # seeded: the same rows again; a class condition needs a target
    assert np.array_equal(model.synthetic(100, 3), model.synthetic(100, 3))
    with pytest.raises(ValueError, match="no target"):
        TreeSampler(model).sample(10, np.random.default_rng(0), condition=1)
