"""Partitioners: split a training table's row indices across K silos/clients.

All are seeded and return a list of K sorted ``np.ndarray`` index arrays (disjoint).

* :func:`equal_shares` — the SGDE protocol: K non-overlapping random shares of ``fraction`` each
  (20 × 5 % covers the whole training set).
* :func:`iid` — a uniformly random partition of all rows into K near-equal parts.
* :func:`dirichlet_label_skew` — for every class c, shares ~ Dirichlet(β·1_K) of c's rows.
* :func:`missing_classes` — every client lacks K of the C classes (pathological non-IID): it holds
  C − K classes, each class is held by at least one client, a class's rows are split evenly over
  the clients holding it.
* :func:`quantity_skew` — client sizes ~ Dirichlet(β·1_K), rows assigned uniformly at random
  (every client sees the same label mix in expectation; only the amounts differ).
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


def missing_classes(
    labels: np.ndarray, k: int, n_missing: int, seed: int = 0, *, min_rows: int = 1
) -> list[np.ndarray]:
    """Each of ``k`` clients lacks ``n_missing`` of the C classes.

    Client i holds C − K classes: the classes are dealt round-robin from a seeded permutation
    (client i gets positions i·(C−K) … i·(C−K)+C−K−1 mod C), which covers every class as soon as
    k·(C−K) ≥ C and spreads the holders of each class as evenly as possible. Every class's rows
    are then split into equal random parts over its holders. Raises :class:`PartitionError` when
    K is out of range, the clients cannot cover every class, or some client would get fewer than
    ``min_rows`` rows.
    """
    labels = np.asarray(labels)
    _check(len(labels), k)
    classes = np.unique(labels)
    c = len(classes)
    if not 0 <= n_missing < c:
        raise PartitionError(f"missing-classes:K needs 0 <= K < {c} (the number of classes), got {n_missing}")
    held = c - n_missing
    if k * held < c:
        raise PartitionError(
            f"{k} clients holding {held} classes each cannot cover all {c} classes; "
            "use fewer missing classes or more clients"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(c)
    holds = [[int(order[(i * held + j) % c]) for j in range(held)] for i in range(k)]
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for ci, cls in enumerate(classes):
        holders = [i for i in range(k) if ci in holds[i]]
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if len(idx) < len(holders) * min_rows:
            raise PartitionError(
                f"class {cls!r} has {len(idx)} rows for {len(holders)} clients holding it "
                f"(need >= {min_rows} each); use fewer clients"
            )
        for i, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[i].append(chunk)
    out = [np.sort(np.concatenate(p)) for p in parts]
    small = [i for i, o in enumerate(out) if len(o) < min_rows]
    if small:
        raise PartitionError(f"clients {small} would get fewer than {min_rows} rows; use fewer clients")
    return out


def quantity_skew(
    n: int, k: int, beta: float, seed: int = 0, *, min_rows: int = 1, max_tries: int = 100
) -> list[np.ndarray]:
    """Quantity skew: client sizes ~ Dirichlet(β·1_K) · n, rows assigned uniformly at random.

    Redraws (up to ``max_tries``) until every client has ``min_rows`` rows."""
    _check(n, k)
    if beta <= 0:
        raise PartitionError(f"Dirichlet beta must be > 0, got {beta}")
    if k * min_rows > n:
        raise PartitionError(f"{k} clients × {min_rows} rows exceed the {n} rows available")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        cuts = (np.cumsum(rng.dirichlet(np.full(k, beta)))[:-1] * n).astype(int)
        sizes = np.diff(np.concatenate([[0], cuts, [n]]))
        if sizes.min() >= min_rows:
            perm = rng.permutation(n)
            return [np.sort(p) for p in np.split(perm, cuts)]
    raise PartitionError(
        f"Dirichlet({beta}) sizes over {k} clients left some client with < {min_rows} rows in "
        f"{max_tries} draws; use a larger beta or fewer clients"
    )


#: the non-IID splits of ``fedsynth bench drift`` and the meaning of their parameter
DRIFT_SPLITS = {
    "label-skew": "Dirichlet β of the class shares",
    "quantity-skew": "Dirichlet β of the client sizes",
    "missing-classes": "K, the number of classes each client lacks",
}


def top_up(parts: list[np.ndarray], min_rows: int, seed: int = 0) -> tuple[list[np.ndarray], int]:
    """Give every client at least ``min_rows`` rows by moving random rows from the currently
    largest client; returns the new parts and the number of rows moved. The drift benchmark's
    stated fallback when no Dirichlet draw leaves every client ``min_rows`` (at β ≤ 0.1 over 20
    clients almost none does): the skew is kept, a few rows change hands."""
    n = sum(len(p) for p in parts)
    if len(parts) * min_rows > n:
        raise PartitionError(f"{len(parts)} clients × {min_rows} rows exceed the {n} rows available")
    rng = np.random.default_rng(seed)
    out = [rng.permutation(p) for p in parts]
    moved = 0
    for i in range(len(out)):
        while len(out[i]) < min_rows:
            j = int(np.argmax([len(o) for o in out]))
            take = min(min_rows - len(out[i]), len(out[j]) - min_rows)
            out[i] = np.concatenate([out[i], out[j][:take]])
            out[j] = out[j][take:]
            moved += take
    return [np.sort(o) for o in out], moved


def drift_partition(
    kind: str, labels: np.ndarray, k: int, param: float, seed: int = 0, *, min_rows: int = 1
) -> tuple[list[np.ndarray], int]:
    """The drift benchmark's splits by name (:data:`DRIFT_SPLITS`); ``param`` is β or K.

    Returns (parts, rows moved by :func:`top_up`): the Dirichlet splits are redrawn up to 200
    times for a draw that leaves every client ``min_rows`` rows, then the last draw is topped up."""
    if kind == "missing-classes":
        if param != int(param):
            raise PartitionError(f"missing-classes:K needs an integer K, got {param}")
        return missing_classes(labels, k, int(param), seed, min_rows=min_rows), 0
    if kind not in ("label-skew", "quantity-skew"):
        raise PartitionError(f"unknown drift split {kind!r}; use one of {sorted(DRIFT_SPLITS)}")
    if k * min_rows > len(labels):
        raise PartitionError(
            f"{k} silos × {min_rows} rows exceed the {len(labels)} rows available; use fewer silos"
        )

    def draw(m: int, tries: int) -> list[np.ndarray]:
        if kind == "label-skew":
            return dirichlet_label_skew(labels, k, param, seed, min_rows=m, max_tries=tries)
        return quantity_skew(len(labels), k, param, seed, min_rows=m, max_tries=tries)

    try:
        return draw(min_rows, 200), 0
    except PartitionError:
        return top_up(draw(0, 1), min_rows, seed)


def parse_drift_split(spec: str) -> tuple[str, float | None]:
    """'label-skew' | 'label-skew:0.1' | 'quantity-skew[:β]' | 'missing-classes:K' -> (kind, param).

    ``param`` is None when the spec gives none (the benchmark then sweeps its ``--betas``)."""
    kind, _, v = spec.partition(":")
    if kind not in DRIFT_SPLITS:
        raise PartitionError(
            f"unknown split {spec!r}; use one of {', '.join(DRIFT_SPLITS)} (e.g. missing-classes:8)"
        )
    if not v:
        if kind == "missing-classes":
            raise PartitionError(
                "missing-classes needs K, the number of classes each silo lacks: missing-classes:K"
            )
        return kind, None
    try:
        param = float(v)
    except ValueError:
        raise PartitionError(f"bad split {spec!r}: {v!r} is not a number") from None
    if kind == "missing-classes" and (param != int(param) or param < 0):
        raise PartitionError(f"missing-classes:K needs a non-negative integer K, got {v!r}")
    if kind != "missing-classes" and not param > 0:
        raise PartitionError(f"{kind} needs β > 0, got {v!r}")
    return kind, param


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
