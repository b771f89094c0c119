"""Partitioners: split a training table's row indices across K silos/clients.

All are seeded and return a list of K sorted ``np.ndarray`` index arrays (disjoint).

* :func:`equal_shares` — the SGDE protocol: K non-overlapping random shares of ``fraction`` each
  (20 × 5 % covers the whole training set).
* :func:`iid` — a uniformly random partition of all rows into K near-equal parts.
* :func:`dirichlet_label_skew` — for every class c, shares ~ Dirichlet(β·1_K) of c's rows.
* :func:`cluster` — UMAP (15 neighbours, min_dist 0.1) of the (integer-coded) table, then k-means
  into K clusters: very unequal, feature-skewed clients as in FLAIM. Cached by content hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


class PartitionError(ValueError):
    pass


def _check(n: int, k: int) -> None:
    if k < 1:
        raise PartitionError(f"number of silos must be >= 1, got {k}")
    if k > n:
        raise PartitionError(f"{k} silos but only {n} rows: every silo needs at least one row")


def equal_shares(n: int, k: int, fraction: float | None = None, seed: int = 0) -> list[np.ndarray]:
    """K disjoint random shares of ``fraction``·n rows each (default 1/K)."""
    _check(n, k)
    frac = 1.0 / k if fraction is None else fraction
    if frac <= 0 or frac * k > 1 + 1e-9:
        raise PartitionError(f"{k} shares of {frac:.3f} do not fit in one table")
    size = int(np.floor(n * frac))
    if size < 1:
        raise PartitionError(f"a share of {frac} of {n} rows is empty")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(perm[i * size : (i + 1) * size]) for i in range(k)]


def iid(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    _check(n, k)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, k)]


def dirichlet_label_skew(
    labels: np.ndarray, k: int, beta: float, seed: int = 0, *, min_rows: int = 1, max_tries: int = 100
) -> list[np.ndarray]:
    """Label skew: for each class, split its rows over clients by Dirichlet(β) proportions.

    Redraws (up to ``max_tries``) until every client has ``min_rows`` rows; small β gives extreme
    skew. Raises :class:`PartitionError` when no draw leaves every client non-empty.
    """
    labels = np.asarray(labels)
    _check(len(labels), k)
    if beta <= 0:
        raise PartitionError(f"Dirichlet beta must be > 0, got {beta}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(k, beta))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(o) for o in out) >= min_rows:
            return out
    raise PartitionError(
        f"Dirichlet({beta}) over {k} clients left some client with < {min_rows} rows in {max_tries} "
        "draws; use a larger beta or fewer clients"
    )


def _cache_dir() -> Path:
    return Path(os.environ.get("FEDSYNTH_CACHE", Path.home() / ".cache" / "fedsynth"))


def cluster(
    codes: np.ndarray,
    k: int,
    seed: int = 0,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    cache: bool = True,
) -> list[np.ndarray]:
    """Feature-skewed clients: UMAP embedding of the integer-coded table, then k-means into K.

    ``codes`` is an (n, d) integer (or numeric) matrix. Results are cached on disk keyed by the
    content hash, K, seed and UMAP settings, because UMAP on 40k rows takes a while.
    Empty clusters cannot occur with k-means++ on distinct points, but are checked.
    """
    codes = np.ascontiguousarray(codes)
    _check(len(codes), k)
    key = hashlib.sha256(
        codes.tobytes() + f"{codes.shape}{k}{seed}{n_neighbors}{min_dist}".encode()
    ).hexdigest()
    path = _cache_dir() / "splits" / f"cluster-{key[:24]}.npy"
    if cache and path.exists():
        assign = np.load(path, allow_pickle=False)
    else:
        import umap  # heavy import (numba): only when needed
        from sklearn.cluster import KMeans

        emb = umap.UMAP(
            n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, n_jobs=1
        ).fit_transform(codes.astype(np.float32))
        assign = KMeans(n_clusters=k, random_state=seed, n_init=3).fit_predict(emb).astype(np.int64)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, assign, allow_pickle=False)
            os.replace(tmp, path)
    out = [np.flatnonzero(assign == i) for i in range(k)]
    empty = [i for i, o in enumerate(out) if len(o) == 0]
    if empty:
        raise PartitionError(f"cluster split left clients {empty} empty; use fewer clients")
    return out


def parse_split(spec: str) -> tuple[str, float | None]:
    """'iid' | 'label-skew:0.5' | 'cluster' -> (kind, beta)."""
    if spec in ("iid", "cluster", "equal"):
        return spec, None
    if spec.startswith("label-skew"):
        _, _, b = spec.partition(":")
        try:
            return "label-skew", float(b or 0.5)
        except ValueError:
            raise PartitionError(f"bad split {spec!r}; use label-skew:BETA, e.g. label-skew:0.5") from None
    raise PartitionError(f"unknown split {spec!r}; use iid, label-skew:BETA or cluster")
