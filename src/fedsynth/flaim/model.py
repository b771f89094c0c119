"""Private-PGM estimation on Private-PGM's structures, plus fast numpy inference on the result.

Estimation: noisy marginals y_i over cliques c_i with noise σ_i define the loss
L(μ) = ½ Σ_i ‖μ_{c_i} − y_i‖² / σ_i², minimised over the marginal polytope of the graphical model
with potentials θ on the maximal measured cliques by entropic mirror descent (Private-PGM,
McKenna et al. 2019, Alg. 1): θ ← θ − η ∇_μ L(μ(θ)), μ(θ) by belief propagation, Armijo step.
Warm-started from the previous round's θ. Two engines give the same estimator:

* ``engine="numpy"`` (default): the iterations run in numpy on the junction tree of
  :mod:`fedsynth.flaim.junction` (mbi's construction, without JAX); nothing is compiled, so a
  new clique costs nothing, and the per-iteration work is planned once per fit (message shapes,
  measurement homes, one pooled target ȳ per measured clique);
* ``engine="mbi"``: :class:`mbi.estimation.MirrorDescent` (JAX, float64;
  :mod:`fedsynth.flaim.mbi_engine`, imported only then). Each new clique set is a fresh XLA
  compile (~40 programs, 5–12 s per fit on this shared 2-core machine), which is why it is not
  the default: AIM refits after every round.

Synthetic records: exact forward sampling on the calibrated junction tree
(:class:`fedsynth.flaim.sampling.TreeSampler`), stratified within each separator group as mbi
2.0's ``synthetic_data`` (its default ``"round"`` method) does; the result can be handed to mbi
as a :class:`mbi.MarkovRandomField` (:attr:`PGM.model`) for interop.

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

from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from fedsynth.flaim import junction
from fedsynth.flaim.junction import maximal_subset

if TYPE_CHECKING:  # pragma: no cover
    import mbi

Clique = tuple[str, ...]
Potentials = dict[Clique, np.ndarray]
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


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
    return junction.model_size_mb(sizes, [tuple(c) for c in cliques])


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
        """The same model as an :class:`mbi.MarkovRandomField` (interop; imports mbi and JAX)."""
        from fedsynth.flaim.mbi_engine import to_markov_random_field

        return to_markov_random_field(self)

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
        """(rows, d) int64 codes: forward sampling, stratified per separator group (seeded)."""
        from fedsynth.flaim.sampling import TreeSampler

        return TreeSampler(self).sample(rows, np.random.default_rng(seed), stratified=True)


class JunctionTree:
    """Junction tree of a clique set with numpy HUGIN calibration (log space), planned once.

    ``cliques`` are the potentials' cliques; each is added into its *home*, the smallest maximal
    clique containing it. Messages i → j sum out i∖j with ``keepdims``, so a message already has
    the shape it broadcasts with in i, and a reshape gives its shape in j (both in domain order).
    """

    def __init__(self, sizes: dict[str, int], cliques: list[Clique]):
        self.sizes = sizes
        self.attrs = tuple(sizes)
        self.jtree = junction.make_junction_tree(sizes, [tuple(c) for c in cliques])
        self.max_cliques: list[Clique] = junction.maximal_cliques(self.jtree)
        self.shape = {C: tuple(sizes[a] for a in C) for C in self.max_cliques}
        self.home = {tuple(c): self._home(tuple(c)) for c in cliques}
        self.plan: list[tuple[Clique, Clique, tuple[int, ...], list[int], list[int]]] = []
        for i, j in junction.message_passing_order(self.jtree):
            axes = tuple(k for k, a in enumerate(i) if a not in j)
            self.plan.append(
                (i, j, axes, [sizes[a] if a in j else 1 for a in i], [sizes[a] if a in i else 1 for a in j])
            )

    def _cells(self, cl: Clique) -> int:
        return int(np.prod([self.sizes[a] for a in cl], dtype=np.int64))

    def _home(self, c: Clique) -> Clique:
        return min((C for C in self.max_cliques if set(c) <= set(C)), key=self._cells)

    def expand(self, values: np.ndarray, src: Clique, dst: Clique) -> np.ndarray:
        # src and dst are in domain order, so src's axes keep their relative order inside dst.
        return values.reshape([self.sizes[a] if a in src else 1 for a in dst])

    def calibrate(self, potentials: dict[Clique, np.ndarray]) -> dict[Clique, np.ndarray]:
        """log P_C for every maximal clique C (normalised to 1)."""
        beliefs = {C: np.zeros(self.shape[C]) for C in self.max_cliques}
        for c, v in potentials.items():
            h = self.home.get(c) or self._home(c)
            beliefs[h] = beliefs[h] + self.expand(np.asarray(v), c, h)
        messages: dict[tuple[Clique, Clique], np.ndarray] = {}
        for i, j, axes, in_i, in_j in self.plan:
            back = messages.get((j, i))
            tau = beliefs[i] if back is None else beliefs[i] - back.reshape(in_i)
            msg = _logsumexp_keep(tau, axes) if axes else tau
            messages[(i, j)] = msg
            beliefs[j] = beliefs[j] + msg.reshape(in_j)
        return {C: b - _logsumexp_keep(b, None) for C, b in beliefs.items()}


def _logsumexp_keep(x: np.ndarray, axes: tuple[int, ...] | None) -> np.ndarray:
    """log Σ exp over ``axes`` (None: all), dimensions kept; few numpy calls (hot loop)."""
    m = x.max(axis=axes, keepdims=True)
    if not np.isfinite(m).all():
        m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.exp(x - m).sum(axis=axes, keepdims=True))
    out += m
    return out


class _Objective:
    """L(μ) = ½ Σ_i ‖μ_{c_i} − y_i‖²/σ_i² on the model cliques, planned once per fit.

    Measurements of the same clique are pooled: Σ_m ‖μ − y_m‖²/σ_m² = W‖μ − ȳ‖² + const with
    W = Σ_m 1/σ_m² and ȳ = Σ_m (y_m/σ_m²)/W, so each measured clique costs one marginalisation
    of its home model clique's μ per evaluation.
    """

    def __init__(
        self, tree: JunctionTree, cliques: list[Clique], measurements: list[Measurement], total: float
    ) -> None:
        self.tree, self.cliques, self.total = tree, cliques, total
        self.shape = {c: tuple(tree.sizes[a] for a in c) for c in cliques}
        # each model clique's marginal comes from its tree home: sum out the home's extra axes
        self.mu_axes = {c: tuple(k for k, a in enumerate(tree.home[c]) if a not in c) for c in cliques}
        pooled: dict[Clique, tuple[float, np.ndarray, float]] = {}
        for m in measurements:
            w = 1.0 / m.sigma**2
            y = np.asarray(m.y, dtype=np.float64)
            W, b, sq = pooled.get(m.clique, (0.0, np.zeros_like(y), 0.0))
            pooled[m.clique] = (W + w, b + w * y, sq + w * float(y @ y))
        self.terms: list[tuple[Clique, tuple[int, ...], float, np.ndarray]] = []
        self.const = 0.0
        for q, (W, b, sq) in pooled.items():
            h = next(C for C in cliques if set(q) <= set(C))
            ybar = b / W
            self.const += 0.5 * (sq - W * float(ybar @ ybar))
            shape = [tree.sizes[a] if a in q else 1 for a in h]
            self.terms.append((h, tuple(k for k, a in enumerate(h) if a not in q), W, ybar.reshape(shape)))

    def mu(self, logp: dict[Clique, np.ndarray]) -> dict[Clique, np.ndarray]:
        prob = {C: np.exp(v) for C, v in logp.items()}
        out = {}
        for c in self.cliques:
            p = prob[self.tree.home[c]]
            ax = self.mu_axes[c]
            out[c] = (p.sum(axis=ax) if ax else p) * self.total
        return out

    def __call__(self, theta: Potentials) -> tuple[float, Potentials, Potentials]:
        """(loss, ∇_μ L on the model cliques, μ) at θ."""
        logp = self.tree.calibrate(theta)
        mu = self.mu(logp)
        grad = {c: np.zeros(self.shape[c]) for c in self.cliques}
        loss = self.const
        for h, axes, W, ybar in self.terms:
            diff = (mu[h].sum(axis=axes, keepdims=True) if axes else mu[h]) - ybar
            loss += 0.5 * W * float(np.vdot(diff, diff))
            grad[h] += W * diff
        return loss, grad, mu


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
    # Lipschitz constant of ∇L in μ (per model clique, Σ 1/σ²) sets the first step, 2/(L·N), as in
    # mbi 2.0; after an accepted step it grows by 1 %, after a rejected one it halves (mbi 2.0's
    # Armijo rule): the step settles just under the largest acceptable one, and an iteration
    # costs one calibration, not the two of "double, then backtrack".
    lip = max(sum(1 / m.sigma**2 for m in measurements if set(m.clique) <= set(c)) for c in cliques)
    alpha = 2.0 / (lip * total)
    objective = _Objective(tree, cliques, measurements, total)
    loss, grad, mu = objective(theta)
    for _ in range(iters):
        for _ in range(25):  # Armijo backtracking
            theta2 = {c: theta[c] - alpha * grad[c] for c in cliques}
            loss2, grad2, mu2 = objective(theta2)
            dec = sum(float(np.vdot(grad[c], mu[c] - mu2[c])) for c in cliques)
            if loss - loss2 >= 0.5 * alpha * dec:
                break
            alpha *= 0.5
        converged = loss - loss2 <= 1e-7 * max(loss, 1.0)
        theta, loss, grad, mu = theta2, loss2, grad2, mu2
        if converged:
            break
        alpha *= 1.01
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
    from fedsynth.flaim.mbi_engine import fit_mirror_descent

    return PGM(sizes, fit_mirror_descent(sizes, measurements, total, iters, warm), total)


__all__ = ["PGM", "Measurement", "ModelSizeError", "fit", "model_size_mb"]
