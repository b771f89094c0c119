"""Discretised domain: every column becomes an integer code in ``0 .. size-1``.

Marginal-based synthesis (AIM, FLAIM) works on a finite domain Ω = Π_a Ω_a:

* continuous column a with *public* bounds [l, u] (from the schema): 32 equal-width bins,
  code = min(⌊(x − l)/(u − l) · B⌋, B − 1); decoded to the bin midpoint;
* categorical column: code = index in the schema's (public) category list;
* pre-binned tables (Private-PGM's ``adult.csv`` + ``domain.json``) are used as they are.

A column with a single value carries no information and breaks nothing but wastes budget; it is
refused with a message that names it (drop it first). Bounds must come from a declared/public
schema: reading them off private data leaks min/max (the CLI says so when it infers them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.data.schema import Schema, infer_schema, validate_frame


class DomainError(ValueError):
    """The table cannot be discretised (single-valued column, bad domain file, ...)."""


@dataclass(frozen=True)
class ColumnCoder:
    """How one column maps to integer codes and back."""

    name: str
    size: int
    categories: tuple[str, ...] = ()  # categorical: code -> category
    edges: tuple[float, ...] = ()  # continuous: B+1 bin edges
    prebinned: bool = False

    def encode(self, s: pd.Series) -> np.ndarray:
        if self.prebinned:
            v = pd.to_numeric(s, errors="coerce").to_numpy()
            if np.isnan(v).any() or (v < 0).any() or (v >= self.size).any() or np.any(np.mod(v, 1) != 0):
                raise DomainError(f"column {self.name!r} has codes outside 0..{self.size - 1}")
            return v.astype(np.int64)
        if self.categories:
            lookup = {c: i for i, c in enumerate(self.categories)}
            codes = s.astype(str).map(lookup)
            if codes.isna().any():
                raise DomainError(f"column {self.name!r} has values outside its declared categories")
            return codes.to_numpy(dtype=np.int64)
        lo, hi = self.edges[0], self.edges[-1]
        x = s.to_numpy(dtype=float)
        b = np.floor((x - lo) / (hi - lo) * self.size) if hi > lo else np.zeros_like(x)
        return np.clip(b, 0, self.size - 1).astype(np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        if self.prebinned:
            return codes.astype(np.int64)
        if self.categories:
            return np.asarray(self.categories, dtype=object)[codes]
        e = np.asarray(self.edges)
        return (e[codes] + e[codes + 1]) / 2.0


@dataclass(frozen=True)
class FlaimDomain:
    """Ordered attributes with their sizes, plus the coders that map values to codes."""

    coders: tuple[ColumnCoder, ...]
    target: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def attrs(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.coders)

    @property
    def sizes(self) -> dict[str, int]:
        return {c.name: c.size for c in self.coders}

    def size(self, attrs: tuple[str, ...]) -> int:
        s = self.sizes
        return int(np.prod([s[a] for a in attrs], dtype=np.int64)) if attrs else 1

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """(n, d) int64 code matrix in attribute order."""
        missing = [a for a in self.attrs if a not in df.columns]
        if missing:
            raise DomainError(f"data lacks columns {missing}")
        return np.stack([c.encode(df[c.name]) for c in self.coders], axis=1).astype(np.int64)

    def decode(self, codes: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({c.name: c.decode(codes[:, i]) for i, c in enumerate(self.coders)})


def _check_single_valued(df: pd.DataFrame, cols: list[str]) -> None:
    single = [c for c in cols if df[c].nunique(dropna=False) <= 1]
    if single:
        raise DomainError(
            f"column(s) {single} have a single value: they carry no information and cannot be "
            "modelled; drop them before synthesis"
        )


def domain_from_schema(schema: Schema, bins: int = 32) -> FlaimDomain:
    """Categoricals keep their declared categories; continuous columns get ``bins`` equal-width bins."""
    if bins < 2:
        raise DomainError(f"need at least 2 bins, got {bins}")
    coders = []
    for c in schema.columns:
        if c.kind == "categorical":
            coders.append(ColumnCoder(c.name, len(c.categories), categories=tuple(c.categories)))
        else:
            assert c.lower is not None and c.upper is not None
            coders.append(ColumnCoder(c.name, bins, edges=tuple(np.linspace(c.lower, c.upper, bins + 1))))
    return FlaimDomain(tuple(coders), target=schema.target)


def discretise(
    df: pd.DataFrame,
    schema: Schema | None = None,
    *,
    target: str | None = None,
    bins: int = 32,
    max_categories: int = 100,
) -> tuple[np.ndarray, FlaimDomain]:
    """Discretise a raw table. Without a schema one is inferred (bounds read off the data)."""
    if schema is None:
        if target is None:
            target = str(df.columns[-1])
        _check_single_valued(df, list(df.columns))
        schema = infer_schema(df, target, max_categories=max_categories)
    _check_single_valued(df, [c.name for c in schema.columns])
    clean = validate_frame(df, schema)
    dom = domain_from_schema(schema, bins)
    if schema.source == "inferred":
        dom = FlaimDomain(dom.coders, dom.target, ("bounds and categories inferred from the data",))
    return dom.encode(clean), dom


def load_prebinned(
    csv: str | Path, domain_json: str | Path, target: str | None = None
) -> tuple[np.ndarray, FlaimDomain]:
    """Load an integer-coded table and its Private-PGM domain file ``{"attr": size, ...}``."""
    try:
        sizes = json.loads(Path(domain_json).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DomainError(f"cannot read domain file {domain_json}: {e}") from None
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 1 for v in sizes.values()):
        raise DomainError(f"{domain_json} must map attribute names to positive integer sizes")
    df = pd.read_csv(csv)
    coders = tuple(ColumnCoder(str(a), int(s), prebinned=True) for a, s in sizes.items())
    tgt = target if target is not None else str(list(sizes)[-1])
    if tgt not in sizes:
        raise DomainError(f"target {tgt!r} not in domain {list(sizes)}")
    _check_single_valued(df, list(sizes))
    dom = FlaimDomain(coders, tgt)
    return dom.encode(df), dom
