"""Junction trees of marginal models in plain networkx + integers (nothing compiled, no JAX).

Private-PGM builds the same structure (``mbi.junction_tree``), but importing any part of ``mbi``
imports JAX (≈ 150 MB and ≈ 1 s), and its size query goes through JAX-traced domain arithmetic
(≈ 2 ms per call; AIM's size cap asks ≈ 1,300 times per run). The construction here is the one
mbi uses, so models, size caps and results stay the same:

1. the *interaction graph* joins every two attributes that share a measured clique;
2. an elimination order: if the graph is a tree, its DFS post-order (no fill-in); otherwise
   greedily eliminate the attribute a whose neighbourhood factor is smallest,
   cost(a) = Π_{b ∈ ∪{C ∋ a}} |Ω_b|, replacing the cliques that contain a by their union minus a
   (ties: the first attribute in domain order);
3. triangulate with that order; the maximal cliques of the chordal graph, in domain order,
   sorted, are the junction tree's nodes;
4. a maximum-weight spanning tree of the clique graph (weight |C ∩ C'|) has the running-
   intersection property (Jensen & Jensen 1994), so it is a junction tree.

Model size = Σ_C |Ω_C| · 8 bytes over its maximal cliques (AIM's size cap).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import networkx as nx

Clique = tuple[str, ...]


def canonical(attrs: Sequence[str], clique: Iterable[str]) -> Clique:
    """The clique's attributes in domain order."""
    members = set(clique)
    return tuple(a for a in attrs if a in members)


def maximal_subset(cliques: Sequence[Clique]) -> list[Clique]:
    """The cliques not contained in another (first of duplicates kept), largest first."""
    result: list[Clique] = []
    kept: list[frozenset[str]] = []
    seen: set[frozenset[str]] = set()
    for _, group in itertools.groupby(sorted(cliques, key=len, reverse=True), key=len):
        fresh = []
        for cl in group:
            s = frozenset(cl)
            if s in seen:
                continue
            seen.add(s)
            if not any(s <= m for m in kept):
                result.append(cl)
                fresh.append(s)
        kept.extend(fresh)
    return result


def _adjacency(attrs: Sequence[str], cliques: Sequence[Clique]) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {a: set() for a in attrs}
    for cl in cliques:
        for u, v in itertools.combinations(cl, 2):
            if u != v:
                adj[u].add(v)
                adj[v].add(u)
    return adj


def _is_tree(adj: dict[str, set[str]]) -> bool:
    edges = sum(len(n) for n in adj.values()) // 2
    if not adj or edges == 0 or edges != len(adj) - 1:
        return False
    start = next(iter(adj))
    seen, stack = {start}, [start]
    while stack:
        for v in adj[stack.pop()] - seen:
            seen.add(v)
            stack.append(v)
    return len(seen) == len(adj)


def greedy_order(sizes: dict[str, int], cliques: Sequence[Clique]) -> list[str]:
    """Greedy min-cost elimination order (step 2 of the module docstring), on bit masks."""
    attrs = list(sizes)
    bit = {a: 1 << k for k, a in enumerate(attrs)}
    cells: dict[int, int] = {}

    def size(mask: int) -> int:
        if mask not in cells:
            cells[mask] = math.prod(sizes[a] for a in attrs if mask & bit[a])
        return cells[mask]

    factors = {sum(bit[a] for a in set(cl)) for cl in cliques}
    order: list[str] = []
    left = list(attrs)
    while left:
        best, best_cost, best_union = "", -1, 0
        for a in left:
            union = 0  # an attribute in no factor costs 1 (mbi's rule)
            for f in factors:
                if f & bit[a]:
                    union |= f
            c = size(union)
            if best_cost < 0 or c < best_cost:
                best, best_cost, best_union = a, c, union
        order.append(best)
        left.remove(best)
        factors = {f for f in factors if not f & bit[best]}
        rest = best_union & ~bit[best]
        if rest:
            factors.add(rest)
    return order


def _elimination_order(
    sizes: dict[str, int], cliques: Sequence[Clique], adj: dict[str, set[str]]
) -> list[str]:
    """Step 2 of the module docstring: DFS post-order on a tree, else :func:`greedy_order`."""
    if _is_tree(adj):
        g = nx.Graph()
        g.add_edges_from((u, v) for u, ns in adj.items() for v in ns)
        return list(nx.dfs_postorder_nodes(g))
    return greedy_order(sizes, cliques)


def triangulated_cliques(sizes: dict[str, int], cliques: Sequence[Clique]) -> list[Clique]:
    """The maximal cliques of the triangulated graph (step 3), in domain order, sorted.

    Eliminating v in order joins its remaining neighbours; {v} ∪ N(v) at that moment is a clique
    of the chordal fill-in, and the maximal ones among them are exactly its maximal cliques
    (the order is a perfect elimination order of the fill-in graph)."""
    attrs = tuple(sizes)
    cls = [tuple(c) for c in cliques]
    adj = _adjacency(attrs, cls)
    found: list[Clique] = []
    for v in _elimination_order(sizes, cls, adj):
        nbrs = adj.pop(v)
        for u in nbrs:
            adj[u].discard(v)
            adj[u] |= nbrs - {u}
        found.append(canonical(attrs, nbrs | {v}))
    return sorted(maximal_subset(found))


def make_junction_tree(sizes: dict[str, int], cliques: Sequence[Clique]) -> nx.Graph:
    """The junction tree (nodes: maximal cliques in domain order) of the model on ``cliques``."""
    nodes = triangulated_cliques(sizes, cliques)
    complete = nx.Graph()
    complete.add_nodes_from(nodes)
    for c1, c2 in itertools.combinations(nodes, 2):
        w = len(set(c1) & set(c2))
        if w > 0:
            complete.add_edge(c1, c2, weight=-w)
    return nx.minimum_spanning_tree(complete)


def maximal_cliques(jtree: nx.Graph) -> list[Clique]:
    """The tree's cliques in DFS pre-order."""
    return list(nx.dfs_preorder_nodes(jtree))


def message_passing_order(jtree: nx.Graph) -> list[tuple[Clique, Clique]]:
    """Every directed edge (i → j) once, after all messages (k → i), k ≠ j, it depends on."""
    deps = nx.DiGraph()
    for i, j in [*jtree.edges(), *((b, a) for a, b in jtree.edges())]:
        deps.add_node((i, j))
        for k in jtree.neighbors(i):
            if k != j:
                deps.add_edge((k, i), (i, j))
    return list(nx.topological_sort(deps))


def model_size_mb(sizes: dict[str, int], cliques: Sequence[Clique]) -> float:
    """Size of the junction tree's parameters in MB (8 bytes per cell of every maximal clique)."""
    cells = sum(math.prod(sizes[a] for a in C) for C in triangulated_cliques(sizes, cliques))
    return cells * 8 / 2**20
