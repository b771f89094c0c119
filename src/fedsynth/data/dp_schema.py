"""A schema estimated under differential privacy, for silos with no public schema.

Everything a generator ships (category lists, continuous bounds) would otherwise leak private
min/max values and rare categories. :func:`dp_schema` spends ``epsilon`` (split evenly over the
feature columns, basic composition) and ``delta``:

* categorical column — stability-based histogram: keep a category iff
  count + Lap(1/ε_c) > 1 + ln(1/(2δ_c))/ε_c, which is (ε_c, δ_c)-DP for one record per row;
* continuous column — lower/upper bounds = the 1st and 99th percentiles from the exponential
  mechanism over the sorted values clipped to a coarse public range [lo, hi] (Smith 2011):
  interval between consecutive order statistics chosen w.p. ∝ length · exp(−ε_q·|rank − p·n|/2),
  then a uniform point in it; ε_c is split between the two quantiles.

Privacy argument. The output is a function of (a) public facts and (b) the noisy mechanisms
above, and nothing else. Assumed public (not protected, not charged): the column names, each
column's pandas dtype (the table's declared layout, not its values), the coarse ``public_range``,
the target's class labels (``classes``: they define the task) and the list of columns declared
``categorical``. From those alone the function decides, for every column, *which* mechanism runs
and how its result is shaped: a column is categorical iff it is declared categorical or its dtype
is not numeric (text, bool, category); otherwise it is continuous, and ``integer`` iff its dtype
is an integer dtype (then the DP bounds are rounded outwards, post-processing). No such choice
reads the private values — in particular not the number of distinct values nor whether the
values happen to be integral, which would otherwise leak one bit per column outside the
guarantee. Each feature column's mechanism is (ε/k, δ/k)-DP for k feature columns, so the schema
is (ε, δ)-DP by basic composition; dropping rows with a missing value before the mechanisms is a
per-record operation and costs nothing.

The ε and δ spent are recorded in ``Schema.dp_epsilon`` / ``Schema.dp_delta`` and compose
sequentially with the generators trained on the same rows — :func:`total_epsilon` and
:func:`total_delta` do that; a generator card records them as its ``schema_privacy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype

from fedsynth.data.schema import Column, Schema, SchemaError, _as_category_strings


def dp_quantile(
    values: np.ndarray, p: float, epsilon: float, lo: float, hi: float, rng: np.random.Generator
) -> float:
    """ε-DP p-quantile of ``values`` clipped to [lo, hi] (exponential mechanism on intervals)."""
    x = np.sort(np.clip(values.astype(float), lo, hi))
    edges = np.concatenate([[lo], x, [hi]])
    lengths = np.diff(edges)
    ranks = np.arange(len(lengths))
    score = -np.abs(ranks - p * len(x))
    with np.errstate(divide="ignore"):
        logw = np.log(lengths) + epsilon * score / 2.0
    logw[~np.isfinite(logw)] = -np.inf
    if not np.isfinite(logw).any():
        return float(x[min(len(x) - 1, int(p * len(x)))]) if len(x) else lo
    w = np.exp(logw - logw.max())
    i = rng.choice(len(w), p=w / w.sum())
    return float(rng.uniform(edges[i], edges[i + 1]))


def dp_schema(
    df: pd.DataFrame,
    target: str,
    classes: list[str],
    *,
    epsilon: float,
    delta: float,
    public_range: tuple[float, float] = (-1e6, 1e6),
    categorical: Sequence[str] = (),
    seed: int | None = None,
) -> Schema:
    """(ε, δ)-DP schema of ``df``; see the module docstring for what is assumed public.

    ``categorical``: feature columns declared categorical (a numeric code column such as 0/1);
    any other column with a numeric dtype is continuous, ``integer`` iff its dtype is an integer
    dtype. These choices read the dtypes and the declaration only, never the values."""
    if not (math.isfinite(epsilon) and epsilon > 0) or not (0 < delta < 1):
        raise SchemaError("DP schema needs epsilon > 0 and 0 < delta < 1")
    if target not in df.columns:
        raise SchemaError(f"target column {target!r} not in data")
    if isinstance(categorical, str):
        raise SchemaError("categorical must be a list of column names, not one string")
    unknown = sorted(set(categorical) - {str(c) for c in df.columns})
    if unknown:
        raise SchemaError(f"columns declared categorical are not in the data: {unknown}")
    rng = np.random.default_rng(seed)
    feats = [c for c in df.columns if c != target]
    if not feats:
        raise SchemaError("the data has no feature columns besides the target")
    eps_c, delta_c = epsilon / len(feats), delta / len(feats)
    declared = set(categorical)
    cols: list[Column] = []
    for name in feats:
        col = df[name]
        # public facts only: the declaration and the dtype (never nunique or integrality of values)
        continuous = (
            str(name) not in declared and is_numeric_dtype(col.dtype) and not is_bool_dtype(col.dtype)
        )
        s = col.dropna()
        if continuous:
            lo, hi = public_range
            a = dp_quantile(s.to_numpy(dtype=float), 0.01, eps_c / 2, lo, hi, rng)
            b = dp_quantile(s.to_numpy(dtype=float), 0.99, eps_c / 2, lo, hi, rng)
            lo_b, hi_b = min(a, b), max(a, b)
            integer = bool(is_integer_dtype(col.dtype))
            if integer:
                lo_b, hi_b = math.floor(lo_b), math.ceil(hi_b)
            cols.append(
                Column(str(name), "continuous", lower=lo_b, upper=max(hi_b, lo_b + 1e-9), integer=integer)
            )
        else:
            # the strings validate_frame compares categories as (so kept categories match later)
            counts = _as_category_strings(s).value_counts()
            thresh = 1.0 + math.log(1.0 / (2.0 * delta_c)) / eps_c
            noisy = counts.to_numpy() + rng.laplace(0.0, 1.0 / eps_c, size=len(counts))
            kept = sorted(counts.index[noisy > thresh].tolist())
            if not kept:
                raise SchemaError(
                    f"no category of column {name!r} survived the DP threshold ({thresh:.1f} rows); "
                    "declare its categories in a schema file or drop the column"
                )
            cols.append(Column(str(name), "categorical", categories=tuple(kept)))
    cols.append(Column(target, "categorical", categories=tuple(str(c) for c in classes)))
    return Schema(tuple(cols), target=target, source="dp", dp_epsilon=float(epsilon), dp_delta=float(delta))


def coerce_to_schema(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Map values a DP schema dropped: rare categories -> the most frequent kept one is *not*
    allowed (data-dependent); instead rows with dropped categories are removed, which is a
    per-record operation and so preserves DP of the later training."""
    keep = np.ones(len(df), dtype=bool)
    for c in schema.features:
        if c.kind == "categorical":
            keep &= _as_category_strings(df[c.name]).isin(c.categories).to_numpy()
    return df.loc[keep].reset_index(drop=True)


def total_epsilon(schema: Schema, generator_epsilon: float) -> float:
    """Silo-level ε: DP schema estimation composes sequentially with generator training."""
    return generator_epsilon + (schema.dp_epsilon if schema.source == "dp" else 0.0)


def total_delta(schema: Schema, generator_delta: float) -> float:
    """Silo-level δ: basic sequential composition, as :func:`total_epsilon`."""
    return generator_delta + (schema.dp_delta if schema.source == "dp" else 0.0)
