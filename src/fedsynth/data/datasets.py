"""Benchmark dataset registry: loaders over the pinned files of :mod:`fedsynth.data.files`.

Each loader returns a :class:`BenchmarkData`: the cleaned table, its *declared* schema and the
train/test split. Benchmark schemas are public: category lists and bounds are the documented
domain of the published dataset (computed over the whole public file), not a silo's private data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.data.files import CHECKSUMS, DatasetError, data_dir, dataset_path, fetch
from fedsynth.data.schema import Column, Schema, SchemaError, infer_schema, validate_frame


@dataclass(frozen=True)
class BenchmarkData:
    name: str
    frame: pd.DataFrame  # cleaned, validated against schema
    schema: Schema
    train_index: np.ndarray
    test_index: np.ndarray
    positive: str | None = None  # positive class for binary F1

    @property
    def train(self) -> pd.DataFrame:
        return self.frame.iloc[self.train_index].reset_index(drop=True)

    @property
    def test(self) -> pd.DataFrame:
        return self.frame.iloc[self.test_index].reset_index(drop=True)


def _random_split(n: int, seed: int, test_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = round(n * test_frac)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _public_schema(df: pd.DataFrame, target: str, categorical: list[str] | None = None) -> Schema:
    # The whole published file defines the documented domain: public knowledge, not a silo's data.
    return infer_schema(df, target, categorical=categorical, max_categories=100).with_source("declared")


def load_adult(seed: int = 0) -> BenchmarkData:
    df = pd.read_csv(dataset_path("adult/adult.csv.gz"), skipinitialspace=True)
    df["income"] = df["income"].astype(str).str.rstrip(".")
    df = df.drop(columns=["education"])  # duplicate of education-num
    schema = _public_schema(df, "income")
    n_train = 32561  # the official adult.data / adult.test split
    return BenchmarkData(
        "adult", df, schema, np.arange(n_train), np.arange(n_train, len(df)), positive=">50K"
    )


def load_titanic(seed: int = 0) -> BenchmarkData:
    raw = pd.read_csv(dataset_path("titanic/titanic.csv.gz"))
    df = raw.drop(columns=["PassengerId", "Name", "Ticket", "Cabin"]).copy()
    # Missing age is informative; encode it rather than impute from private statistics.
    df["AgeKnown"] = np.where(df["Age"].isna(), "no", "yes")
    df["Age"] = df["Age"].fillna(-1.0)  # sentinel inside the declared bounds; AgeKnown marks it
    df["Embarked"] = df["Embarked"].fillna("unknown")
    df["Survived"] = df["Survived"].astype(str)
    schema = _public_schema(df, "Survived", categorical=["Pclass", "SibSp", "Parch"])
    tr, te = _random_split(len(df), seed)
    return BenchmarkData("titanic", df, schema, tr, te, positive="1")


def load_breast_cancer(seed: int = 0) -> BenchmarkData:
    df = pd.read_csv(dataset_path("breast_cancer/breast_cancer.csv.gz"))
    return _breast_cancer_frame(df, seed)


def _breast_cancer_frame(df: pd.DataFrame, seed: int) -> BenchmarkData:
    schema = _public_schema(df, "diagnosis")
    tr, te = _random_split(len(df), seed)
    return BenchmarkData("breast_cancer", df, schema, tr, te, positive="M")


def load_breast_cancer_offline(seed: int = 0) -> BenchmarkData:
    """The same WDBC table as shipped inside scikit-learn: needs no data directory."""
    from sklearn.datasets import load_breast_cancer as skl

    b = skl(as_frame=True)
    df = b.frame.drop(columns=["target"]).copy()
    df["diagnosis"] = np.where(b.frame["target"] == 0, "M", "B")
    return _breast_cancer_frame(df, seed)


def load_mushroom(seed: int = 0) -> BenchmarkData:
    df = pd.read_csv(dataset_path("mushroom/mushroom.csv.gz"), dtype=str, keep_default_na=False)
    df = df.drop(columns=["veil-type"])  # a single value: carries no information
    schema = _public_schema(df, "class")
    tr, te = _random_split(len(df), seed)
    return BenchmarkData("mushroom", df, schema, tr, te, positive="p")


def load_wine(seed: int = 0, label: str = "type") -> BenchmarkData:
    """Wine Quality. ``label='type'`` (red vs white, default) or ``'quality6'`` (quality >= 6)."""
    df = pd.read_csv(dataset_path("wine_quality/wine_quality.csv.gz"))
    if label == "type":
        target, positive = "type", "red"
    elif label == "quality6":
        df["good"] = np.where(df["quality"] >= 6, "yes", "no")
        df = df.drop(columns=["quality"])
        target, positive = "good", "yes"
    else:
        raise DatasetError(f"unknown wine label {label!r}; use 'type' or 'quality6'")
    schema = _public_schema(df, target)
    tr, te = _random_split(len(df), seed)
    return BenchmarkData(
        f"wine_quality{'' if label == 'type' else '_' + label}", df, schema, tr, te, positive
    )


def load_marketing(seed: int = 0) -> BenchmarkData:
    df = pd.read_csv(dataset_path("marketing/marketing.csv.gz"))
    schema = _public_schema(df, "y")
    tr, te = _random_split(len(df), seed)
    return BenchmarkData("marketing", df, schema, tr, te, positive="yes")


LOADERS: dict[str, Callable[..., BenchmarkData]] = {
    "adult": load_adult,
    "titanic": load_titanic,
    "breast_cancer": load_breast_cancer,
    "breast_cancer_sklearn": load_breast_cancer_offline,
    "mushroom": load_mushroom,
    "wine_quality": load_wine,
    "wine_quality_quality6": lambda seed=0: load_wine(seed, label="quality6"),
    "marketing": load_marketing,
}

TABULAR_BENCHMARKS = ("titanic", "breast_cancer", "mushroom", "adult", "wine_quality")


def load_dataset(name: str, seed: int = 0) -> BenchmarkData:
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    b = LOADERS[name](seed=seed)
    # one representation everywhere: categories as the schema's strings, continuous as float
    return replace(b, frame=validate_frame(b.frame, b.schema))


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a user CSV or Parquet file."""
    p = Path(path)
    if not p.exists():
        raise SchemaError(f"data file {p} does not exist")
    if p.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(p)
    try:
        return pd.read_csv(p)
    except Exception as e:
        raise SchemaError(f"cannot read {p} as CSV: {e}") from None


__all__ = [
    "CHECKSUMS",
    "LOADERS",
    "TABULAR_BENCHMARKS",
    "BenchmarkData",
    "Column",
    "DatasetError",
    "data_dir",
    "fetch",
    "load_dataset",
    "load_table",
]
