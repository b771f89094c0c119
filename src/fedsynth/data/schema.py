"""Table schema: which columns exist, their types, categories or bounds, and the target.

A schema is *public knowledge*: everything in it may be shipped with a generator. It is either
``declared`` by the user (JSON/YAML), ``inferred`` from the data (which leaks the private min/max
and category lists, so the CLI says so), or estimated with differential privacy (``dp``; see
:mod:`fedsynth.data.dp_schema`), in which case the (ε, δ) it cost is recorded in ``dp_epsilon`` /
``dp_delta``. ``source == "dp"`` ⇔ ``dp_epsilon > 0``: a declared or inferred schema cost no ε, a DP
one always did. Neither the source nor the DP cost is part of :meth:`Schema.hash` (the hash fixes
the encoding, not how the schema was obtained).

Validation (:func:`validate_frame`) is the boundary of the system: every table that enters is
checked here and gets a :class:`SchemaError` that names the column and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - pandas loads only where frames are handled (hub at rest: never)
    import pandas as pd

from fedsynth import jsonsafe

ColumnKind = Literal["categorical", "continuous"]
SchemaSource = Literal["declared", "inferred", "dp"]
SOURCES: tuple[SchemaSource, ...] = ("declared", "inferred", "dp")


class SchemaError(ValueError):
    """A table or schema violates the declared schema; the message says which column and why."""


@dataclass(frozen=True)
class Column:
    """One column: categorical with its (public) category list, or continuous within bounds."""

    name: str
    kind: ColumnKind
    categories: tuple[str, ...] = ()
    lower: float | None = None
    upper: float | None = None
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise SchemaError("column name must be a non-empty string")
        if self.kind == "categorical":
            if len(self.categories) < 1:
                raise SchemaError(f"categorical column {self.name!r} needs at least one category")
            if len(set(self.categories)) != len(self.categories):
                raise SchemaError(f"categorical column {self.name!r} has duplicate categories")
        elif self.kind == "continuous":
            if self.lower is None or self.upper is None:
                raise SchemaError(f"continuous column {self.name!r} needs lower and upper bounds")
            if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
                raise SchemaError(f"continuous column {self.name!r} has non-finite bounds")
            if self.upper < self.lower:
                raise SchemaError(
                    f"continuous column {self.name!r}: upper bound {self.upper} < lower {self.lower}"
                )
        else:
            raise SchemaError(f"column {self.name!r}: kind must be 'categorical' or 'continuous'")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            d["categories"] = list(self.categories)
        else:
            d.update(lower=float(self.lower), upper=float(self.upper), integer=self.integer)  # type: ignore[arg-type]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Column:
        if not isinstance(d, dict):
            raise SchemaError(f"column entry {d!r} must be an object")
        try:
            kind = d["kind"]
            name = str(d["name"])
        except KeyError as e:
            raise SchemaError(f"column entry {d!r} is missing {e.args[0]!r}") from None
        if kind == "categorical":
            return Column(name, "categorical", categories=tuple(str(c) for c in d.get("categories", [])))
        lo, hi = d.get("lower"), d.get("upper")
        return Column(
            name,
            kind,
            lower=None if lo is None else float(lo),
            upper=None if hi is None else float(hi),
            integer=bool(d.get("integer", False)),
        )


#: the largest image side (and channel count) a schema may declare
MAX_IMAGE_SIDE = 4096
#: the most pixel values an image schema may declare (one column each)
MAX_IMAGE_VALUES = 1 << 16


@dataclass(frozen=True)
class Schema:
    """Columns (features and target) of a table. The target must be categorical."""

    columns: tuple[Column, ...]
    target: str
    source: SchemaSource = "declared"
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0
    # (C, H, W) for an image schema (one integer pixel column in [0, 255] per value, row-major;
    # see fedsynth.data.images); None for a table
    image: tuple[int, int, int] | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise SchemaError("schema has duplicate column names")
        if self.target not in names:
            raise SchemaError(f"target {self.target!r} is not among the schema's columns {names}")
        t = self.column(self.target)
        if t.kind != "categorical":
            raise SchemaError(f"target {self.target!r} must be categorical (a class label)")
        if len(t.categories) < 2:
            raise SchemaError(f"target {self.target!r} has only one class {list(t.categories)}; need >= 2")
        if not self.features:
            raise SchemaError("schema has no feature columns besides the target")
        if self.image is not None:
            _check_image_layout(self)
        if self.source not in SOURCES:
            raise SchemaError(f"schema.source must be one of {list(SOURCES)}, got {self.source!r}")
        for what, v in (("dp_epsilon", self.dp_epsilon), ("dp_delta", self.dp_delta)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise SchemaError(f"schema.{what} must be a finite number >= 0, got {v!r}")
        if self.dp_delta >= 1:
            raise SchemaError(f"schema.dp_delta must be < 1, got {self.dp_delta!r}")
        if self.source == "dp" and self.dp_epsilon <= 0:
            raise SchemaError(
                "a schema with source 'dp' must record the ε its estimation cost (dp_epsilon > 0); "
                "give dp_epsilon, or mark the schema 'declared' if its bounds are public knowledge"
            )
        if self.source != "dp" and (self.dp_epsilon > 0 or self.dp_delta > 0):
            raise SchemaError(
                f"a {self.source!r} schema cost no privacy, but it records dp_epsilon = "
                f"{self.dp_epsilon:g}, dp_delta = {self.dp_delta:g}; set source to 'dp' if it was "
                "estimated under DP, or drop dp_epsilon/dp_delta"
            )

    # -- accessors ---------------------------------------------------------------------------
    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise SchemaError(f"no column {name!r} in schema")

    @property
    def features(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.name != self.target)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.column(self.target).categories

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"target": self.target, "source": self.source, "dp_epsilon": self.dp_epsilon}
        if self.dp_delta:  # written only when nonzero: older schema JSON stays byte-identical
            d["dp_delta"] = self.dp_delta
        if self.image is not None:
            d["image"] = list(self.image)
        d["columns"] = [c.to_dict() for c in self.columns]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Schema:
        if not isinstance(d, dict) or "columns" not in d or "target" not in d:
            raise SchemaError("schema must be a mapping with 'columns' and 'target'")
        try:  # finite numbers, bounded integers, clean strings: stored and echoed as strict JSON
            jsonsafe.check_json(d, "schema")
        except jsonsafe.JSONValueError as e:
            raise SchemaError(str(e)) from None
        if not isinstance(d["columns"], list):
            raise SchemaError("schema 'columns' must be a list of column objects")
        dp: dict[str, float] = {}
        for what in ("dp_epsilon", "dp_delta"):
            v = d.get(what, 0.0)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise SchemaError(f"schema.{what} must be a finite number >= 0, got {v!r}")
            dp[what] = float(v)
        if dp["dp_delta"] >= 1:
            raise SchemaError(f"schema.dp_delta must be < 1, got {dp['dp_delta']!r}")
        source = d.get("source", "declared")
        if source not in SOURCES:
            raise SchemaError(f"schema.source must be one of {list(SOURCES)}, got {source!r}")
        image = d.get("image")
        if image is not None and (
            not isinstance(image, list)
            or len(image) != 3
            or any(
                isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_IMAGE_SIDE for v in image
            )
        ):
            raise SchemaError(
                f"schema.image must be [channels, height, width] of integers in 1..{MAX_IMAGE_SIDE}"
            )
        return Schema(
            columns=tuple(Column.from_dict(c) for c in d["columns"]),
            target=str(d["target"]),
            source=source,
            dp_epsilon=dp["dp_epsilon"],
            dp_delta=dp["dp_delta"],
            image=None if image is None else (image[0], image[1], image[2]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def hash(self) -> str:
        """SHA-256 of the canonical content that fixes the encoding (not how it was obtained)."""
        body: dict[str, Any] = {"target": self.target, "columns": [c.to_dict() for c in self.columns]}
        if self.image is not None:  # only image schemas carry it: tabular hashes are unchanged
            body["image"] = list(self.image)
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def with_source(self, source: SchemaSource, dp_epsilon: float = 0.0, dp_delta: float = 0.0) -> Schema:
        return replace(self, source=source, dp_epsilon=dp_epsilon, dp_delta=dp_delta)


def _check_image_layout(schema: Schema) -> None:
    """An image schema is exactly C·H·W integer pixel columns ``px_i`` in [0, 255] + the target."""
    assert schema.image is not None
    c, h, w = schema.image
    n = c * h * w
    if n > MAX_IMAGE_VALUES:
        raise SchemaError(f"an image schema may have at most {MAX_IMAGE_VALUES} pixel values, got {n}")
    feats = schema.features
    if len(feats) != n:
        raise SchemaError(f"an image schema of shape {(c, h, w)} needs {n} pixel columns, got {len(feats)}")
    for i, col in enumerate(feats):
        if (
            col.name != f"px_{i}"
            or col.kind != "continuous"
            or not col.integer
            or col.lower != 0.0
            or col.upper != 255.0
        ):
            raise SchemaError(
                f"image schema column {i} must be 'px_{i}', continuous, integer, in [0, 255]; "
                f"got {col.name!r} ({col.kind})"
            )


def _validate_image_frame(df: pd.DataFrame, schema: Schema, require_target: bool) -> pd.DataFrame:
    import pandas as pd

    """Image frames are checked strictly and vectorised: pixels must be integers in 0..255 (no
    clipping — an out-of-range or fractional pixel is not an 8-bit image)."""
    names = [c.name for c in schema.features]
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise SchemaError(
            f"image data is missing {len(missing)} pixel columns (e.g. {missing[:3]}); an image of "
            f"shape {schema.image} needs {names[0]}..{names[-1]}"
        )
    v = df[names].to_numpy()
    if v.dtype != np.uint8:
        if not np.issubdtype(v.dtype, np.number):
            raise SchemaError("pixel columns must be numeric (uint8 values 0..255)")
        v = v.astype(np.float64)
        if not np.isfinite(v).all():
            raise SchemaError("pixel values must be finite integers in 0..255 (found NaN or inf)")
        if (v < 0).any() or (v > 255).any() or (np.mod(v, 1) != 0).any():
            raise SchemaError("pixel values must be integers in 0..255 (uint8 images)")
        v = v.astype(np.uint8)
    res = pd.DataFrame(v, columns=names)
    if require_target:
        tc = schema.column(schema.target)
        if schema.target not in df.columns:
            raise SchemaError(f"data is missing target column [{schema.target!r}]")
        t = df[schema.target]
        if int(t.isna().sum()):
            raise SchemaError(f"target column {schema.target!r} has missing values")
        vals = _as_category_strings(t)
        unseen = sorted(set(vals.unique()) - set(tc.categories))
        if unseen:
            raise SchemaError(f"target {schema.target!r} has classes not in the schema: {unseen[:10]}")
        res[schema.target] = vals.to_numpy().astype(object)
    return res


def load_schema(path: str | Path) -> Schema:
    """Read a declared schema from JSON or YAML."""
    p = Path(path)
    if not p.exists():
        raise SchemaError(f"schema file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:
        raise SchemaError(f"cannot parse schema file {p}: {e}") from None
    return Schema.from_dict(data)


def _as_category_strings(s: pd.Series) -> pd.Series:
    import pandas as pd
    from pandas.api.types import is_numeric_dtype

    """Categories are compared as strings; integral floats (1.0) print as integers (1)."""
    if is_numeric_dtype(s):
        vals = s.to_numpy()
        if np.all(np.isfinite(vals.astype(float))) and np.all(np.mod(vals.astype(float), 1) == 0):
            return pd.Series(vals.astype(np.int64).astype(str), index=s.index)
    return s.astype(str)


def infer_schema(
    df: pd.DataFrame,
    target: str,
    *,
    max_categories: int = 64,
    categorical: list[str] | None = None,
) -> Schema:
    """Infer a schema from *private* data: bounds and category lists are read off the data.

    The result is flagged ``source="inferred"``: it leaks min/max and the set of categories, so it
    is only appropriate when those are public knowledge. Use :func:`fedsynth.data.dp_schema.dp_schema`
    for a version estimated under DP.
    """
    if target not in df.columns:
        raise SchemaError(f"target column {target!r} not in data; columns are {list(df.columns)}")
    forced = set(categorical or [])
    cols: list[Column] = []
    import pandas as pd
    from pandas.api.types import is_numeric_dtype

    for name in df.columns:
        s = df[name]
        if s.isna().all():
            raise SchemaError(f"column {name!r} is entirely missing; drop it or declare it")
        numeric = is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        nunique = s.nunique(dropna=True)
        if name == target or name in forced or not numeric or nunique <= 2:
            if not numeric and nunique > max_categories and name != target:
                raise SchemaError(
                    f"column {name!r} has {nunique} distinct text values (> {max_categories}); "
                    "drop it (identifiers, free text) or declare it in a schema file"
                )
            cats = sorted(_as_category_strings(s.dropna()).unique().tolist())
            cols.append(Column(str(name), "categorical", categories=tuple(cats)))
        else:
            v = s.dropna().to_numpy(dtype=float)
            is_int = bool(np.all(np.mod(v, 1) == 0))
            cols.append(
                Column(str(name), "continuous", lower=float(v.min()), upper=float(v.max()), integer=is_int)
            )
    return Schema(tuple(cols), target=target, source="inferred")


def validate_frame(df: pd.DataFrame, schema: Schema, *, require_target: bool = True) -> pd.DataFrame:
    """Check ``df`` against ``schema`` and return a clean copy.

    Categoricals become strings from the declared category list; continuous columns become
    float64 clipped to the declared bounds (values outside public bounds are clipped, not
    rejected, because bounds are a modelling choice). Raises :class:`SchemaError` for a missing
    column, NaNs, unseen categories or non-numeric values in a continuous column.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise SchemaError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if schema.image is not None:
        return _validate_image_frame(df, schema, require_target)
    cols = schema.columns if require_target else schema.features
    missing = [c.name for c in cols if c.name not in df.columns]
    if missing:
        which = "target column" if missing == [schema.target] else "columns"
        raise SchemaError(f"data is missing {which} {missing}; present: {list(df.columns)}")
    out: dict[str, pd.Series] = {}
    for c in cols:
        s = df[c.name]
        n_na = int(s.isna().sum())
        if n_na:
            raise SchemaError(
                f"column {c.name!r} has {n_na} missing values (NaN); impute them or encode "
                "missingness as a declared category before training"
            )
        if c.kind == "categorical":
            vals = _as_category_strings(s)
            unseen = sorted(set(vals.unique()) - set(c.categories))
            if unseen:
                raise SchemaError(
                    f"column {c.name!r} has categories not in the schema: {unseen[:10]}"
                    f"{' ...' if len(unseen) > 10 else ''}; declared: {list(c.categories)[:20]}"
                )
            out[c.name] = vals.astype(object)
        else:
            num = pd.to_numeric(s, errors="coerce")
            bad = s[num.isna()]
            if len(bad):
                raise SchemaError(
                    f"continuous column {c.name!r} has non-numeric values, e.g. {bad.iloc[0]!r} "
                    f"(row {bad.index[0]!r})"
                )
            v = num.to_numpy(dtype=float)
            if not np.all(np.isfinite(v)):
                raise SchemaError(f"continuous column {c.name!r} has infinite values")
            out[c.name] = pd.Series(np.clip(v, c.lower, c.upper), index=df.index)
    res = pd.DataFrame(out, index=df.index)
    if require_target:
        present = set(res[schema.target].unique())
        if len(present) < 1:
            raise SchemaError("data has no rows")
    return res.reset_index(drop=True)


def check_training_target(df: pd.DataFrame, schema: Schema) -> None:
    """A training table must contain at least two classes of the target."""
    if schema.target not in df.columns:
        raise SchemaError(f"target column {schema.target!r} not in data")
    present = df[schema.target].nunique()
    if present < 2:
        only = df[schema.target].iloc[0] if len(df) else None
        raise SchemaError(
            f"target {schema.target!r} has a single class ({only!r}) in this data; "
            "a classifier/per-class generator set needs at least two"
        )
