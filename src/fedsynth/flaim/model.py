"""Private-PGM estimation on ``mbi`` 2.0 structures, plus fast numpy inference on the result.

Estimation: noisy marginals y_i over cliques c_i with noise σ_i define the loss
L(μ) = ½ Σ_i ‖μ_{c_i} − y_i‖² / σ_i², minimised over the marginal polytope of the graphical model
with potentials θ on the maximal measured cliques by entropic mirror descent (Private-PGM,
McKenna et al. 2019, Alg. 1): θ ← θ − η ∇_μ L(μ(θ)), μ(θ) by belief propagation, Armijo step.
Warm-started from the previous round's θ. Two engines give the same estimator:

* ``engine="numpy"`` (default): the iterations run in numpy on the junction tree of
  :func:`mbi.junction_tree.make_junction_tree`; nothing is compiled, so a new clique costs nothing;
* ``engine="mbi"``: :class:`mbi.estimation.MirrorDescent` (JAX, float64). Each new clique set is a
  fresh XLA compile (~40 programs, 5–12 s per fit on this shared 2-core machine), which is why it
  is not the default: AIM refits after every round.

Either way the result is an :class:`mbi.MarkovRandomField`, and synthetic records come from its
``synthetic_data`` (mbi 2.0 — the 1.x sampler had the false-correlation bug).

Inference without recompilation: ``mbi``'s ``model.project(q)`` jit-compiles a variable-elimination
program per distinct q (the known trap that makes naive AIM take minutes per round). Instead, once
per fit we calibrate the junction tree in numpy (HUGIN message passing in log space) to get the
maximal-clique marginals P_C, and answer any query q from them:

* q ⊆ C for some maximal clique C: sum P_C over C∖q;
* otherwise take the smallest subtree S of the junction tree covering q; on S the model factorises
  as P(x_S) = Π_{C∈S} P_C(x_C) / Π_{(C,C')∈S} P_{C∩C'}(x_{C∩C'}), and one ``np.einsum`` (greedy
  contraction order) sums out everything not in q.

The same calibrated marginals give the log-likelihood log P(x) of a record (NLL metric).
Model size = Σ_C |Ω_C| · 8 bytes over the maximal cliques of the junction tree (AIM's cap).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax

jax.config.update("jax_enable_x64", True)
# mbi emits many small programs; the on-disk cache only adds I/O (mbi warns about it).
jax.config.update("jax_enable_compilation_cache", False)

import jax.numpy as jnp  # noqa: E402
import mbi  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
from mbi import junction_tree  # noqa: E402
from mbi.clique_utils import maximal_subset  # noqa: E402

Clique = tuple[str, ...]
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def logsumexp(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Plain-numpy log Σ exp (scipy's version has array-API overhead that dominates small tables)."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


class ModelSizeError(ValueError):
    """The requested model does not fit under the size cap."""


@dataclass(frozen=True)
class Measurement:
    """A noisy marginal: ``y`` (flattened, in ``clique`` order) with noise std ``sigma``."""

    clique: Clique
    y: np.ndarray
    sigma: float


def model_size_mb(sizes: dict[str, int], cliques: list[Clique]) -> float:
    """Junction-tree size in MB (8 bytes per cell of every maximal clique)."""
    dom = mbi.Domain.fromdict(sizes)
    return float(junction_tree.hypothetical_model_size(dom, [tuple(c) for c in cliques]))


class PGM:
    """A fitted Private-PGM model with numpy marginals on its junction tree."""

    def __init__(self, sizes: dict[str, int], potentials: dict[Clique, np.ndarray], total: float):
        self.sizes = dict(sizes)
        self.attrs = tuple(sizes)
        self.potentials = potentials
        self.total = float(total)
        self.cliques: list[Clique] = list(potentials)
        self.tree = JunctionTree(self.sizes, self.cliques)
        self.jtree = self.tree.jtree
        self.max_cliques = self.tree.max_cliques
        self.log_marginals = self.tree.calibrate(potentials)
        self.prob = {C: np.exp(v) for C, v in self.log_marginals.items()}
        self._cache: dict[Clique, np.ndarray] = {}

    @property
    def model(self) -> mbi.MarkovRandomField:
        """The same model as an :class:`mbi.MarkovRandomField` (for sampling / interop)."""
        dom = mbi.Domain.fromdict(self.sizes)
        pots = mbi.CliqueVector(
            dom,
            self.cliques,
            {c: mbi.Factor(dom.project(c), jnp.asarray(v)) for c, v in self.potentials.items()},
        )
        margs = mbi.CliqueVector(
            dom,
            self.cliques,
            {
                c: mbi.Factor(dom.project(c), jnp.asarray(self.probability(c) * self.total))
                for c in self.cliques
            },
        )
        return mbi.MarkovRandomField(potentials=pots, marginals=margs, total=self.total)

    # -- queries ------------------------------------------------------------------------------
    def probability(self, q: Clique) -> np.ndarray:
        """P(x_q) as an array shaped like q (q in domain order)."""
        q = tuple(q)
        if q in self._cache:
            return self._cache[q]
        home = [C for C in self.max_cliques if set(q) <= set(C)]
        if home:
            C = min(home, key=lambda c: np.prod(self._shape(c)))
            axes = tuple(k for k, a in enumerate(C) if a not in q)
            out = self.prob[C].sum(axis=axes) if axes else self.prob[C]
        else:
            out = self._subtree_marginal(q)
        self._cache[q] = out
        return out

    def _subtree_marginal(self, q: Clique) -> np.ndarray:
        # Attributes in different connected components of the junction forest are independent.
        comp_of = {C: k for k, comp in enumerate(nx.connected_components(self.jtree)) for C in comp}
        groups: dict[int, list[str]] = {}
        for a in q:
            C = next(C for C in self.max_cliques if a in C)
            groups.setdefault(comp_of[C], []).append(a)
        parts = [self._tree_marginal(tuple(g)) for g in groups.values()]
        order = [a for g in groups.values() for a in g]
        letter = {a: _LETTERS[k] for k, a in enumerate(order)}
        lhs = ",".join("".join(letter[a] for a in g) for g in groups.values())
        expr = lhs + "->" + "".join(letter[a] for a in q)
        return np.einsum(expr, *parts)

    def _tree_marginal(self, q: Clique) -> np.ndarray:
        home = [C for C in self.max_cliques if set(q) <= set(C)]
        if home:
            C = min(home, key=lambda c: np.prod(self._shape(c)))
            axes = tuple(k for k, a in enumerate(C) if a not in q)
            return self.prob[C].sum(axis=axes) if axes else self.prob[C]
        root = next(C for C in self.max_cliques if q[0] in C)
        dist = nx.single_source_shortest_path_length(self.jtree, root)
        nodes = {root}
        for a in q[1:]:
            if any(a in C for C in nodes):
                continue
            target = min((C for C in self.max_cliques if a in C and C in dist), key=dist.__getitem__)
            nodes.update(nx.shortest_path(self.jtree, root, target))
        sub = self.jtree.subgraph(nodes)
        attrs = sorted({a for C in nodes for a in C}, key=self.attrs.index)
        letter = {a: _LETTERS[k] for k, a in enumerate(attrs)}
        ops: list[np.ndarray] = []
        subs: list[str] = []
        for C in nodes:
            ops.append(self.prob[C])
            subs.append("".join(letter[a] for a in C))
        for C1, C2 in sub.edges():
            sep = tuple(a for a in C1 if a in C2)
            ps = self.prob[C1].sum(axis=tuple(k for k, a in enumerate(C1) if a not in sep))
            ops.append(np.divide(1.0, ps, out=np.zeros_like(ps), where=ps > 0))
            subs.append("".join(letter[a] for a in sep))
        expr = ",".join(subs) + "->" + "".join(letter[a] for a in q)
        return np.einsum(expr, *ops, optimize="greedy")

    def counts(self, q: Clique) -> np.ndarray:
        """Model-estimated counts over q, flattened (total = the model's N)."""
        return self.probability(q).ravel() * self.total

    def log_likelihood(self, codes: np.ndarray) -> np.ndarray:
        """log P(x) per record: Σ_C log P_C(x_C) − Σ_{edges} log P_S(x_S) on the junction tree."""
        col = {a: k for k, a in enumerate(self.attrs)}
        ll = np.zeros(len(codes))
        for C in self.max_cliques:
            idx = tuple(codes[:, col[a]] for a in C)
            ll += np.log(np.maximum(self.prob[C][idx], 1e-300))
        for C1, C2 in self.jtree.edges():
            sep = tuple(a for a in C1 if a in C2)
            if not sep:
                continue
            ps = self.probability(sep)
            ll -= np.log(np.maximum(ps[tuple(codes[:, col[a]] for a in sep)], 1e-300))
        return ll

    def _shape(self, cl: Clique) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in cl)

    def synthetic(self, rows: int, seed: int) -> np.ndarray:
        """(rows, d) int64 codes sampled with mbi's ``synthetic_data`` (seeded, state restored)."""
        state = np.random.get_state()
        np.random.seed(seed % (2**32))
        try:
            ds = self.model.synthetic_data(rows)
        finally:
            np.random.set_state(state)
        return np.stack([np.asarray(ds.data[a]) for a in self.attrs], axis=1).astype(np.int64)


class JunctionTree:
    """Junction tree of a clique set with numpy HUGIN calibration (log space)."""

    def __init__(self, sizes: dict[str, int], cliques: list[Clique]):
        self.sizes = sizes
        self.attrs = tuple(sizes)
        dom = mbi.Domain.fromdict(sizes)
        self.jtree, _ = junction_tree.make_junction_tree(dom, [tuple(c) for c in cliques])
        self.max_cliques: list[Clique] = [tuple(c) for c in junction_tree.maximal_cliques(self.jtree)]
        self.order = [(tuple(i), tuple(j)) for i, j in junction_tree.message_passing_order(self.jtree)]
        self.home = {
            tuple(c): min((C for C in self.max_cliques if set(c) <= set(C)), key=self._cells) for c in cliques
        }

    def _cells(self, cl: Clique) -> int:
        return int(np.prod([self.sizes[a] for a in cl], dtype=np.int64))

    def expand(self, values: np.ndarray, src: Clique, dst: Clique) -> np.ndarray:
        # src and dst are in domain order, so src's axes keep their relative order inside dst.
        return values.reshape([self.sizes[a] if a in src else 1 for a in dst])

    def calibrate(self, potentials: dict[Clique, np.ndarray]) -> dict[Clique, np.ndarray]:
        """log P_C for every maximal clique C (normalised to 1)."""
        beliefs = {C: np.zeros([self.sizes[a] for a in C]) for C in self.max_cliques}
        for c, v in potentials.items():
            h = self.home[c]
            beliefs[h] = beliefs[h] + self.expand(np.asarray(v), c, h)
        messages: dict[tuple[Clique, Clique], np.ndarray] = {}
        for i, j in self.order:
            sep = tuple(a for a in i if a in j)
            tau = beliefs[i] - self.expand(messages[(j, i)], sep, i) if (j, i) in messages else beliefs[i]
            axes = tuple(k for k, a in enumerate(i) if a not in sep)
            msg = logsumexp(tau, axis=axes) if axes else tau
            messages[(i, j)] = msg
            beliefs[j] = beliefs[j] + self.expand(msg, sep, j)
        return {C: b - logsumexp(b) for C, b in beliefs.items()}

    def project(self, logp: dict[Clique, np.ndarray], c: Clique) -> np.ndarray:
        if c not in self.home:
            self.home[c] = min((C for C in self.max_cliques if set(c) <= set(C)), key=self._cells)
        h = self.home[c]
        p = np.exp(logp[h])
        axes = tuple(k for k, a in enumerate(h) if a not in c)
        return p.sum(axis=axes) if axes else p


def _loss_grad(
    tree: JunctionTree,
    cliques: list[Clique],
    measurements: list[Measurement],
    logp: dict[Clique, np.ndarray],
    total: float,
) -> tuple[float, dict[Clique, np.ndarray]]:
    """½ Σ ‖μ_c − y‖²/σ² and its gradient w.r.t. μ on the model cliques (μ in counts)."""
    loss = 0.0
    grad = {c: np.zeros([tree.sizes[a] for a in c]) for c in cliques}
    home = {c: next(C for C in cliques if set(c) <= set(C)) for c in {m.clique for m in measurements}}
    proj: dict[Clique, np.ndarray] = {}
    for m in measurements:
        if m.clique not in proj:
            proj[m.clique] = tree.project(logp, m.clique) * total
        mu = proj[m.clique]
        diff = (mu.ravel() - m.y) / m.sigma**2
        loss += 0.5 * float(diff @ (mu.ravel() - m.y))
        h = home[m.clique]
        grad[h] = grad[h] + tree.expand(diff.reshape(mu.shape), m.clique, h)
    return loss, grad


def _fit_numpy(
    sizes: dict[str, int], measurements: list[Measurement], total: float, iters: int, warm: PGM | None
) -> dict[Clique, np.ndarray]:
    cliques = [tuple(c) for c in maximal_subset([m.clique for m in measurements])]
    tree = JunctionTree(sizes, cliques)
    theta = {c: np.zeros([sizes[a] for a in c]) for c in cliques}
    if warm is not None:  # carry old potentials into the clique that now contains them
        for c, v in warm.potentials.items():
            h = next((C for C in cliques if set(c) <= set(C)), None)
            if h is not None:  # a clique whose measurement was dropped this time starts afresh
                theta[h] = theta[h] + tree.expand(v, c, h)
    # Lipschitz constant of ∇L in μ (per model clique, Σ 1/σ²) sets the first step, as in mbi.
    lip = max(sum(1 / m.sigma**2 for m in measurements if set(m.clique) <= set(c)) for c in cliques)
    alpha = 1.0 / (lip * total)
    logp = tree.calibrate(theta)
    loss, grad = _loss_grad(tree, cliques, measurements, logp, total)
    for _ in range(iters):
        mu = {c: tree.project(logp, c) * total for c in cliques}
        alpha *= 2.0
        for _ in range(25):  # Armijo backtracking
            theta2 = {c: theta[c] - alpha * grad[c] for c in cliques}
            logp2 = tree.calibrate(theta2)
            loss2, grad2 = _loss_grad(tree, cliques, measurements, logp2, total)
            mu2 = {c: tree.project(logp2, c) * total for c in cliques}
            dec = sum(float(np.sum(grad[c] * (mu[c] - mu2[c]))) for c in cliques)
            if loss - loss2 >= 0.5 * alpha * dec:
                break
            alpha *= 0.5
        converged = loss - loss2 <= 1e-7 * max(loss, 1.0)
        theta, logp, loss, grad = theta2, logp2, loss2, grad2
        if converged:
            break
    return theta


def fit(
    sizes: dict[str, int],
    measurements: list[Measurement],
    total: float,
    *,
    iters: int = 1000,
    warm: PGM | None = None,
    engine: str = "numpy",
) -> PGM:
    """Fit the model to the measurements, warm-started from ``warm``; see the module docstring."""
    if engine == "numpy":
        return PGM(sizes, _fit_numpy(sizes, measurements, total, iters, warm), total)
    if engine != "mbi":
        raise ValueError(f"unknown estimation engine {engine!r}; use numpy or mbi")
    dom = mbi.Domain.fromdict(sizes)
    ms = [
        mbi.LinearMeasurement(np.asarray(m.y, dtype=np.float64), tuple(m.clique), stddev=float(m.sigma))
        for m in measurements
    ]
    model = mbi.estimation.MirrorDescent().estimate(
        dom, ms, known_total=float(total), iters=iters, warm_start=warm.model if warm is not None else None
    )
    pots = {tuple(c): np.asarray(model.potentials[c].values) for c in model.cliques}
    return PGM(sizes, pots, total)
