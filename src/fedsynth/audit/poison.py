"""Poisoned-generator detection at pull time: a silo screens every pulled generator against its own
private validation data before sampling from it.

Every generator is only *sampled* (``g.sample(n, condition=c, seed=...)``), so any family can be
screened. The unit scored is a (generator, class) pair: a per-class generator is scored for its
card's class, a joint model (card without a class) once for every class it can draw
(:func:`~fedsynth.generators.base.classes_of`), among the peers that draw that class; a generator
is dropped when any of its classes is flagged. A generator whose sampling raises, or returns
non-finite, wrongly shaped, out-of-domain or wrongly labelled rows, is flagged with that reason
(it never crashes the screen) and left out of the peers' medians.

Per scored pair (g, c), from ``n_samples`` rows g generates for class c:

* **label consistency** — mean probability the silo's own classifier (logistic regression on its
  real rows) gives to class c. A label-flipped generator (class-a data carded as b) scores low.
* **pool distance** — mean over columns of the total-variation distance between g's 1-way
  marginals and the element-wise median marginals of all pulled generators of class c.
* **rare-cell excess** — the largest share of g's rows, beyond the pool median, in a category
  that is rare (< 1 %) in the silo's own data, or in a pair of uncommon (< 5 %) categories of two
  columns. A backdoor has to plant its trigger where real data is not (else real rows would teach
  the opposite label), so a decoder emitting the pattern in 5–10 % of rows stands out.
* **own-data distance** — mean TV distance to the silo's own class-c marginals (works even when
  the pool is small).

Garbage decoders and generators trained on a permuted column mapping fail the distances (and
usually consistency). The rule is robust: a score is flagged when it lies beyond median ± k·MAD
(scaled by 1.4826, with a floor so a very tight pool does not flag noise) among generators of the
same class (k = 3 for consistency, 5 for distances) — malicious generators
are a minority, so they cannot move the median. Flagged
generators are dropped; :class:`PoolScreen` says which and why. The screen never silently
removes a class: when every generator that draws a class is flagged, the least suspicious one is
kept and :attr:`PoolScreen.warnings` says so (a class no generator can sample is reported too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rich.table import Table
from scipy.stats import wasserstein_distance
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fedsynth.artifacts.card import ArtifactError
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Column, Schema, validate_frame
from fedsynth.generators.base import Generator, classes_of

MAD_SCALE = 1.4826  # MAD -> σ for normal data


@dataclass(frozen=True)
class GeneratorScore:
    index: int  # position of the generator in the screened list
    source: str
    class_label: str  # the class scored (a joint generator has one score per class)
    label_consistency: float
    pool_distance: float
    cell_spike: float  # largest excess mass in a cell that is rare in the silo's own data
    spike_cell: str
    own_distance: float
    column_z: float  # largest robust z of one categorical column's TV to the silo's own data
    column: str
    flagged: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["reasons"] = list(self.reasons)
        return d


@dataclass
class PoolScreen:
    scores: list[GeneratorScore]
    kept: list[Generator] = field(repr=False)
    dropped: list[Generator] = field(repr=False)
    #: flagged generators kept anyway because they were the last of a class -> why
    kept_for_class: dict[int, str] = field(default_factory=dict)
    #: classes the pool had but for which no generator could be sampled at all
    missing_classes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[int]:
        """Indices of the dropped generators (any of their scored classes flagged, and not kept
        as the last generator of a class)."""
        return sorted({s.index for s in self.scores if s.flagged} - set(self.kept_for_class))

    @property
    def warnings(self) -> list[str]:
        """What a caller must show loudly: classes kept only through flagged generators, and
        classes that the screened pool can no longer draw."""
        out = [f"generator #{i}: {why}" for i, why in sorted(self.kept_for_class.items())]
        out += [
            f"class {c!r}: no generator of the pool could be sampled for it; "
            "a table drawn from this pool lacks the class"
            for c in self.missing_classes
        ]
        return out

    @property
    def generator_flags(self) -> list[bool]:
        """One flag per screened generator, in input order."""
        bad = set(self.flagged)
        return [i in bad for i in range(len(self.kept) + len(self.dropped))]

    def to_dict(self) -> dict[str, object]:
        return {
            "n_pool": len(self.kept) + len(self.dropped), "n_kept": len(self.kept),
            "n_dropped": len(self.dropped),
            "kept_for_class": {str(i): why for i, why in self.kept_for_class.items()},
            "missing_classes": list(self.missing_classes), "warnings": self.warnings,
            "generators": [s.to_dict() for s in self.scores],
        }  # fmt: skip

    def table(self) -> Table:
        n = len(self.kept) + len(self.dropped)
        t = Table(title=f"pool screen: kept {len(self.kept)} of {n} generators")
        for c in (
            "#",
            "source",
            "class",
            "label cons.",
            "pool TV",
            "rare-cell excess",
            "own TV",
            "col z",
            "verdict",
        ):
            t.add_column(c, no_wrap=c != "verdict")
        for s in self.scores:
            t.add_row(
                str(s.index), s.source[-28:], s.class_label, f"{s.label_consistency:.2f}",
                f"{s.pool_distance:.3f}",
                f"{s.cell_spike:.1%} ({s.spike_cell[:40]})", f"{s.own_distance:.3f}",
                f"{s.column_z:.1f} ({s.column})",
                ("[bold yellow]KEEP (last of class)[/] " if s.index in self.kept_for_class
                 else "[bold red]DROP[/] ") + "; ".join(s.reasons) if s.flagged else "[green]keep[/]",
            )  # fmt: skip
        return t


class _Marginals:
    """1-way marginals on fixed bins: categories, or 10 quantile bins of the silo's own data."""

    def __init__(self, schema: Schema, reference: pd.DataFrame) -> None:
        self.schema = schema
        self.edges: dict[str, np.ndarray] = {}
        for c in schema.features:
            if c.kind == "continuous":
                q = np.unique(
                    np.quantile(reference[c.name].to_numpy(dtype=float), np.linspace(0, 1, 11)[1:-1])
                )
                self.edges[c.name] = q

    def widths(self) -> list[int]:
        return [
            len(c.categories) if c.kind == "categorical" else len(self.edges[c.name]) + 1
            for c in self.schema.features
        ]

    def labels(self) -> list[list[str]]:
        return [
            list(c.categories) if c.kind == "categorical" else [f"bin{j}" for j in range(w)]
            for c, w in zip(self.schema.features, self.widths(), strict=True)
        ]

    def codes(self, df: pd.DataFrame) -> np.ndarray:
        """(rows, features) matrix of category / bin indices."""
        out = np.zeros((len(df), len(self.schema.features)), dtype=np.int64)
        for k, c in enumerate(self.schema.features):
            if c.kind == "categorical":
                out[:, k] = pd.Categorical(df[c.name].astype(str), categories=list(c.categories)).codes
            else:
                out[:, k] = np.searchsorted(
                    self.edges[c.name], df[c.name].to_numpy(dtype=float), side="right"
                )
        return out

    def __call__(self, df: pd.DataFrame) -> list[np.ndarray]:
        codes, out = self.codes(df), []
        for k, w in enumerate(self.widths()):
            counts = np.bincount(codes[:, k][codes[:, k] >= 0], minlength=w).astype(float)
            out.append(counts / max(counts.sum(), 1.0))
        return out

    def cells(self, df: pd.DataFrame) -> np.ndarray:
        """Frequencies of every category of every categorical feature, then of every pair of
        categories from two categorical features (where trigger patterns live).

        Continuous bins are left out on purpose: honest DP generators distort joint structure
        of continuous columns far more than a planted pattern would."""
        codes, w = self.codes(df), self.widths()
        cat = [k for k, c in enumerate(self.schema.features) if c.kind == "categorical"]
        parts = [np.bincount(codes[:, k], minlength=w[k]) for k in cat]
        for i, k in enumerate(cat):
            for m in cat[i + 1 :]:
                parts.append(np.bincount(codes[:, k] * w[m] + codes[:, m], minlength=w[k] * w[m]))
        if not parts:
            return np.zeros(0)
        return np.concatenate(parts).astype(float) / max(len(df), 1)

    def cell_names(self) -> list[str]:
        """Names of :meth:`cells` and whether each is a pair (2-way) cell."""
        feats = [c for c in self.schema.features if c.kind == "categorical"]
        out = [f"{c.name}={v}" for c in feats for v in c.categories]
        for i, c in enumerate(feats):
            for d in feats[i + 1 :]:
                out += [f"{c.name}={a} & {d.name}={b}" for a in c.categories for b in d.categories]
        return out

    def pair_mask(self) -> np.ndarray:
        feats = [c for c in self.schema.features if c.kind == "categorical"]
        n1 = sum(len(c.categories) for c in feats)
        n2 = sum(len(c.categories) * len(d.categories) for i, c in enumerate(feats) for d in feats[i + 1 :])
        return np.r_[np.zeros(n1, bool), np.ones(n2, bool)]

    def pair_components(self) -> tuple[np.ndarray, np.ndarray]:
        """For each cell, the indices of its 1-way components (same index twice for 1-way)."""
        feats = [c for c in self.schema.features if c.kind == "categorical"]
        starts, pos = [], 0
        for c in feats:
            starts.append(pos)
            pos += len(c.categories)
        first, second = list(range(pos)), list(range(pos))
        for i, c in enumerate(feats):
            for j in range(i + 1, len(feats)):
                d = feats[j]
                for a in range(len(c.categories)):
                    for b in range(len(d.categories)):
                        first.append(starts[i] + a)
                        second.append(starts[j] + b)
        # int64 even when empty: a schema without categorical features has no cells at all
        return np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def _robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    """(x − median) / max(1.4826·MAD, floor): positive = larger than typical."""
    med = np.median(values)
    scale = max(MAD_SCALE * float(np.median(np.abs(values - med))), floor)
    return (values - med) / scale


def _scaled(df: pd.DataFrame, col: Column) -> np.ndarray:
    span = (col.upper - col.lower) or 1.0  # type: ignore[operator]
    return (df[col.name].to_numpy(dtype=float) - col.lower) / span


def sample_generator(
    g: Generator, schema: Schema, n: int, seed: int, *, condition: str | None = None
) -> pd.DataFrame:
    """``n`` validated rows of class ``condition`` (default: the card's class) from ``g``.

    Anything wrong with the generator's output is an :class:`ArtifactError` with the reason:
    sampling raised, non-finite values (checked before validation, which would clip ±∞ to the
    bounds), missing columns or out-of-domain values, the wrong number of rows, other classes."""
    c = condition if condition is not None else g.card.class_label
    if c is None:
        raise ValueError("a joint generator (card without a class) needs a condition to sample")
    try:
        df = g.sample(n, condition=c, seed=seed)
    except ArtifactError as e:
        raise ArtifactError(f"sampling class {c!r} failed: {e}") from None
    except Exception as e:  # a hostile or broken generator must not take the caller down
        raise ArtifactError(f"sampling class {c!r} failed: {type(e).__name__}: {e}") from None
    try:
        if not isinstance(df, pd.DataFrame):
            raise ArtifactError(f"sample returned a {type(df).__name__}, not a DataFrame")
        if len(df) != n:
            raise ArtifactError(f"returned {len(df)} rows for {n} requested")
        for col in schema.features:
            if col.kind == "continuous" and col.name in df.columns:
                v = pd.to_numeric(df[col.name], errors="coerce").to_numpy(dtype=float)
                if not np.isfinite(v).all():
                    raise ArtifactError(f"column {col.name!r} has non-finite values (NaN or infinite)")
        out = validate_frame(df, schema)
        if not (out[schema.target].astype(str) == c).all():
            raise ArtifactError(f"asked for class {c!r}, returned other classes")
    except ArtifactError:
        raise
    except Exception as e:  # SchemaError and whatever odd dtypes raise
        raise ArtifactError(f"invalid output for class {c!r}: {e}") from None
    return out


def screen_pool(
    generators: Sequence[Generator],
    schema: Schema,
    validation: pd.DataFrame,
    *,
    n_samples: int = 1000,
    z: float = 3.0,
    z_distance: float = 5.0,
    z_column: float = 6.0,
    swap_min: float = 0.1,
    swap_ratio: float = 3.0,
    spike_mass: float = 0.03,
    single_mass: float = 0.07,
    rare: float = 0.01,
    rare_pair: float = 0.05,
    z_pair: float = 3.0,
    consistency_floor: float = 0.06,
    seed: int = 0,
) -> PoolScreen:
    """Score and screen ``generators`` with the silo's private ``validation`` rows (never shared).

    Robust z-scores (median, 1.4826·MAD with a floor) among the (generator, class) pairs of the
    same class: label consistency below −``z``; pool / own-data distance above ``z_distance``
    (stricter: honest DP generators of small silos legitimately vary more there). Trigger check:
    beyond what the pool median puts there, more than ``single_mass`` of rows in a category that
    holds < ``rare`` of the silo's own rows (and a robust outlier, z > 2·``z_distance``, among
    peers), or more than ``spike_mass`` in a pair of categories each < ``rare_pair`` (and
    z > ``z_pair`` among peers); "rare" uses the silo's count + 3 (see below). Label consistency's
    spread has the floor ``consistency_floor``. A pair whose sampling fails
    (:func:`sample_generator`) is flagged with the reason and takes no part in the medians.
    """
    gens = list(generators)
    if not gens:
        raise ValueError("the generator pool is empty: nothing to screen")
    if n_samples < 50:
        raise ValueError("n_samples must be >= 50 for stable marginals")
    val = validate_frame(validation, schema)
    y = val[schema.target].astype(str)
    if y.nunique() < 2:
        raise ValueError("validation data must contain at least two classes to check label consistency")
    enc = TableEncoder(schema)
    classes = list(schema.classes)
    scaler = StandardScaler().fit(enc.transform(val, validated=True))
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(
        scaler.transform(enc.transform(val, validated=True)), y
    )
    clf_classes = list(clf.classes_)
    margs = _Marginals(schema, val)
    own = {c: margs(val[y == c]) for c in classes if (y == c).sum() >= 10}

    # Scored pairs (generator index, class); sampling failures are kept aside with their reason.
    pairs: list[tuple[int, str]] = []
    failed: dict[tuple[int, str], str] = {}
    cons, marg, cells = [], [], []
    samples: list[pd.DataFrame] = []
    for i, g in enumerate(gens):
        if g.card.class_label is not None and g.card.class_label not in classes:
            raise ValueError(
                f"generator {i} ({g.source}) has class {g.card.class_label!r} outside the schema"
            )
        for c in classes_of(g, schema):
            try:
                df = sample_generator(g, schema, n_samples, seed * 7919 + i, condition=c)
            except ArtifactError as e:
                failed[(i, c)] = str(e)
                continue
            pairs.append((i, c))
            x = scaler.transform(enc.transform(df, validated=True))
            prob = clf.predict_proba(x)
            cons.append(float(prob[:, clf_classes.index(c)].mean()) if c in clf_classes else 0.0)
            marg.append(margs(df))
            cells.append(margs.cells(df))
            samples.append(df)
    n = len(pairs)
    pcls = [c for _, c in pairs]
    n_cells = len(margs.cell_names())
    cell_freq = np.stack(cells) if cells else np.zeros((0, n_cells))
    own_cells = margs.cells(val)
    cell_names = margs.cell_names()
    # Rare cells: a category below ``rare`` of the silo's rows, or a pair of two categories that
    # are each below ``rare_pair`` (honest generators, which do not reproduce every correlation,
    # still leave such pairs nearly empty; pairs involving a common category are not checked).
    pair = margs.pair_mask()
    c1, c2 = margs.pair_components()
    # "Rare" must be known, not a small-sample accident: the silo's count + 3 over its rows (the
    # rule of three's 95 % upper bound when the count is 0) must be below the threshold. A silo
    # of 45 rows cannot tell a 1 % category from an absent one, and honest DP generators of small
    # silos put a lot of mass in such categories (titanic, pgm at ε = 1: most were flagged).
    ucb = own_cells + 3.0 / len(val)
    rare_cells = np.where(pair, (ucb[c1] < rare_pair) & (ucb[c2] < rare_pair), ucb < rare)
    cell_threshold = np.where(pair, spike_mass, single_mass)

    names = [c.name for c in schema.features]
    pool_d = np.zeros(n)
    own_d = np.full(n, np.nan)
    col_tv = np.zeros((n, len(names)))
    own_col = np.zeros((n, len(names)))
    conts = [k for k, col in enumerate(schema.features) if col.kind == "continuous"]
    # Per pair and continuous column: W1 to the same own column, and the best other own column.
    w_self = np.zeros((n, len(names)))
    w_best = np.zeros((n, len(names)))
    best_of = np.zeros((n, len(names)), dtype=np.int64)
    for i in range(n):
        c = pcls[i]
        same = [j for j in range(n) if pcls[j] == c]
        for k in range(len(names)):
            med = np.median(np.stack([marg[j][k] for j in same]), axis=0)
            med = med / max(med.sum(), 1e-12)
            col_tv[i, k] = _tv(marg[i][k], med)
        pool_d[i] = col_tv[i].mean()
        if c in own:
            own_col[i] = [_tv(marg[i][k], own[c][k]) for k in range(len(names))]
            # Continuous columns: does column k look more like another column of the silo's own
            # data than like itself (Wasserstein-1 on the public [0, 1] scale)? That is the mark
            # of a swapped column mapping (flagged when two or more columns show it: a single noisy
            # DP column can resemble another column by accident).
            own_vals = {k: _scaled(val.loc[y == c], schema.features[k]) for k in conts}
            for k in conts:
                mine = _scaled(samples[i], schema.features[k])
                w = {j: float(wasserstein_distance(mine, own_vals[j])) for j in conts}
                best = min((j for j in conts if j != k), key=lambda j: w[j], default=k)
                w_self[i, k], w_best[i, k], best_of[i, k] = w[k], w[best], best
            own_d[i] = float(np.mean(own_col[i]))

    flags: list[list[str]] = [[] for _ in range(n)]
    spike = np.zeros(n)
    spike_col = [""] * n
    col_z = np.zeros(n)
    col_name = [""] * n
    cons_a = np.asarray(cons)
    for c in set(pcls):
        idx = np.array([i for i in range(n) if pcls[i] == c])
        if len(idx) < 3:
            # Too few peers for a robust spread: fall back to the silo's own data only.
            for i in idx:
                if not math.isnan(own_d[i]) and own_d[i] > 0.25:
                    flags[i].append(f"marginals far from own class-{c} data (TV {own_d[i]:.2f})")
            continue
        zc = _robust_z(cons_a[idx], floor=consistency_floor)
        zp = _robust_z(pool_d[idx], floor=0.02)
        od = own_d[idx]
        zo = _robust_z(np.nan_to_num(od, nan=float(np.nanmedian(od)) if np.isfinite(od).any() else 0.0), 0.02)
        # One column far off the silo's own data while its peers are not (a swapped column mapping).
        zcol = np.stack([_robust_z(own_col[idx, k], floor=0.05) for k in range(len(names))], axis=1)
        zcol[:, conts] = 0.0
        zsw = np.stack([_robust_z(w_self[idx, k], floor=0.02) for k in range(len(names))], axis=1)
        # Trigger check: categories (and pairs of uncommon ones) that are rare in the silo's own
        # data are where a backdoor must plant its pattern; honest generators leave them nearly
        # empty. A single category must also be a robust outlier among peers: DP noise in a
        # column with few categories can lift a rare one to several % in honest generators too.
        sub = cell_freq[idx]
        med_cells = np.median(sub, axis=0)
        scale = np.maximum(MAD_SCALE * np.median(np.abs(sub - med_cells), axis=0), 0.02)
        excess = sub - np.maximum(med_cells, own_cells)[None, :]
        excess[:, ~rare_cells] = 0.0
        excess[(~pair)[None, :] & ((sub - med_cells) / scale <= 2 * z_distance)] = 0.0
        # A pair must stand out among peers too: honest DP generators of a few hundred rows put
        # 3–5 % in some rare pair by chance (mushroom, pgm at ε = 1), each in a different pair.
        excess[pair[None, :] & ((sub - med_cells) / scale <= z_pair)] = 0.0
        excess = excess - cell_threshold[None, :]  # > 0: over the threshold
        for a, i in enumerate(idx):
            if excess.shape[1]:  # no categorical features: no rare cells to check
                k = int(np.argmax(excess[a]))
                spike[i], spike_col[i] = float(excess[a, k] + cell_threshold[k]), cell_names[k]
            if zc[a] < -z:
                med = float(np.median(cons_a[idx]))
                flags[i].append(f"label consistency {cons_a[i]:.2f} (pool median {med:.2f})")
            if zp[a] > z_distance:
                flags[i].append(f"marginals far from pool median (TV {pool_d[i]:.3f})")
            kc = int(np.argmax(zcol[a]))
            col_z[i], col_name[i] = float(zcol[a, kc]), names[kc]
            # A column counts as swapped only if it is also far from its own column compared with
            # its peers: with many similar columns (breast cancer: 30), honest DP generators of
            # small silos are all far from the own data, and some other column is close by chance.
            swaps = [
                f"column {names[k]!r} matches own {names[best_of[i, k]]!r} "
                f"(W1 {w_best[i, k]:.2f} vs {w_self[i, k]:.2f})"
                for k in conts
                if c in own
                and w_self[i, k] > swap_min
                and w_self[i, k] > swap_ratio * w_best[i, k]
                and zsw[a, k] > z_distance
            ]
            if len(swaps) >= 2:  # a permutation moves at least two columns; one noisy column is not one
                flags[i].extend(swaps)
            if zcol[a, kc] > z_column:
                tv = own_col[i, kc]
                flags[i].append(f"column {names[kc]!r} far from own data ({tv:.2f}, z {zcol[a, kc]:.1f})")
            if zo[a] > z_distance:
                flags[i].append(f"marginals far from own class-{c} data (TV {own_d[i]:.3f})")
            if excess.shape[1] and excess[a, k] > 0:
                share = excess[a, k] + cell_threshold[k]
                flags[i].append(f"{share:.1%} excess rows with rare pattern {cell_names[k]}")

    at = {p: j for j, p in enumerate(pairs)}
    nan = float("nan")
    scores: list[GeneratorScore] = []
    for i, g in enumerate(gens):
        for c in classes_of(g, schema):
            if (i, c) in failed:
                scores.append(GeneratorScore(
                    i, g.source, c, nan, nan, nan, "", nan, nan, "", True, (failed[(i, c)],)
                ))  # fmt: skip
                continue
            j = at[(i, c)]
            scores.append(GeneratorScore(
                i, g.source, c, cons[j], float(pool_d[j]), float(spike[j]), spike_col[j],
                float(own_d[j]) if not math.isnan(own_d[j]) else nan, col_z[j], col_name[j],
                bool(flags[j]), tuple(flags[j]),
            ))  # fmt: skip
    bad = {s.index for s in scores if s.flagged}
    rescued, missing = _keep_every_class(gens, schema, scores, bad, failed)
    bad -= set(rescued)
    kept = [g for i, g in enumerate(gens) if i not in bad]
    dropped = [g for i, g in enumerate(gens) if i in bad]
    return PoolScreen(scores, kept, dropped, kept_for_class=rescued, missing_classes=missing)


def _keep_every_class(
    gens: list[Generator],
    schema: Schema,
    scores: list[GeneratorScore],
    bad: set[int],
    failed: dict[tuple[int, str], str],
) -> tuple[dict[int, str], list[str]]:
    """Dropping every generator of a class would silently write a table without that class (the
    pooled sample has to be class-balanced), so for such a class the least-suspicious flagged
    generator is kept, with the reason. Least suspicious: fewest reasons, then the smallest
    distance to the pool. A generator that could not be sampled is never kept; if no generator
    of the pool can draw the class at all, the class is reported missing instead."""
    pooled = {c for i, g in enumerate(gens) for c in classes_of(g, schema)}
    rescued: dict[int, str] = {}
    missing: list[str] = []
    for c in schema.classes:
        if c not in pooled:
            continue  # the pool never had it: nothing was removed by the screen
        draws = [i for i, g in enumerate(gens) if c in classes_of(g, schema)]
        if any(i not in bad or i in rescued for i in draws):
            continue
        usable = [i for i in draws if not any(k[0] == i for k in failed)]
        if not usable:
            missing.append(c)
            continue

        def suspicion(i: int) -> tuple[int, float]:
            mine = [s for s in scores if s.index == i]
            return sum(len(s.reasons) for s in mine), max(s.pool_distance for s in mine)

        best = min(usable, key=suspicion)
        n = len(draws)
        rescued[best] = (
            f"kept although flagged: all {n} generator{'s' if n > 1 else ''} of class {c!r} "
            "were flagged and dropping them would remove the class; it is the least suspicious "
            "(check its reasons before trusting its rows)"
        )
    return rescued, missing


class PoolScreener:
    """Opt-in hook for the pull side: ``screen=PoolScreener(validation, schema)`` turns a list of
    pulled generators into the kept ones; the last :class:`PoolScreen` is kept for reporting."""

    def __init__(self, validation: pd.DataFrame, schema: Schema, **kwargs: object) -> None:
        self.validation = validation
        self.schema = schema
        self.kwargs = kwargs
        self.last: PoolScreen | None = None

    def __call__(self, generators: Sequence[Generator]) -> list[Generator]:
        self.last = screen_pool(generators, self.schema, self.validation, **self.kwargs)  # type: ignore[arg-type]
        if not self.last.kept:
            raise ValueError("every generator in the pool was flagged as suspicious; refusing to sample")
        return self.last.kept


__all__ = ["GeneratorScore", "PoolScreen", "PoolScreener", "sample_generator", "screen_pool"]
