"""Benchmark dataset registry.

Files are read from the data directory ``$FEDSYNTH_DATA`` (CI points it at ``../shared/datasets``),
laid out as ``<name>/<file>.csv.gz``. Every file has a pinned SHA-256; :func:`fetch` downloads a
missing file from a mirror URL (``$FEDSYNTH_DATA_MIRROR`` or ``--mirror``) with the same layout and
refuses a file whose checksum differs.

Each loader returns a :class:`BenchmarkData`: the cleaned table, its *declared* schema and the
train/test split. Benchmark schemas are public: category lists and bounds are the documented
domain of the published dataset (computed over the whole public file), not a silo's private data.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.data.schema import Column, Schema, SchemaError, infer_schema, validate_frame

_FM = "fashion_mnist/"
#: sha256 of every file this registry reads (the data-directory layout).
CHECKSUMS: dict[str, str] = {
    "adult/adult.csv.gz": "020e937679cdc52788c5245ee380b93586fdfdcbd89503550194edbfa5a35831",
    "adult/adult_private_pgm.csv.gz": "75d12835de9e6bed32e18134f610e551383aa7f834658c8c0169dcb9fe40ce7d",
    "breast_cancer/breast_cancer.csv.gz": "d644ad112b9a1681f05e7618d6c6e61f9b9b93ef7227bd08508a88ddd61fd6b7",
    "census/census.csv.gz": "6d30fbcce2d2d7ec9b17f7ce68fdb526092bc5ae85f16bd923c3a52139e49cdc",
    "intrusion/intrusion.csv.gz": "f13d77842933d14ff8b51df5b6e838e92bf135aa31f80de80a647ec294a5d37f",
    "marketing/marketing.csv.gz": "fc2e40c64a0f59b41addf4c19ded85c20196f8ef0fb275743b96d1f14d775b73",
    "mushroom/mushroom.csv.gz": "f4b2f164b644e69a50e50bcde8f5b8c9293a369df1a67eb1ee40dec21b1c5eef",
    "titanic/titanic.csv.gz": "84a2745ba4093dd94e9f6d39b48db665ec69619bd169cfdeac091a88b77ffaa6",
    "wine_quality/wine_quality.csv.gz": "80ac5639b451223d54e67c10c02d68c122222786d75c1230dc836b687c5d2bbc",
    "mnist/train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist/train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "mnist/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    _FM + "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    _FM + "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    _FM + "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    _FM + "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}


class DatasetError(ValueError):
    """A benchmark dataset is unknown, missing or fails its checksum (a user error: CLI exit 2)."""


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


def data_dir() -> Path:
    d = os.environ.get("FEDSYNTH_DATA")
    if not d:
        here = Path.cwd() / ".." / "shared" / "datasets"
        if here.is_dir():
            return here.resolve()
        raise DatasetError(
            "no data directory: set FEDSYNTH_DATA to the folder holding the benchmark datasets "
            "(e.g. export FEDSYNTH_DATA=../shared/datasets), or run `fedsynth data fetch --mirror URL`"
        )
    return Path(d)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_path(rel: str, *, verify: bool = False) -> Path:
    p = data_dir() / rel
    if not p.exists():
        raise DatasetError(f"dataset file {p} not found; set FEDSYNTH_DATA or run `fedsynth data fetch`")
    if verify and sha256_file(p) != CHECKSUMS[rel]:
        raise DatasetError(f"{p} does not match its pinned sha256; re-download it")
    return p


def fetch(rel: str, mirror: str, dest: Path | None = None) -> Path:
    """Download ``rel`` from ``mirror`` (same layout), verify its checksum, write atomically."""
    if rel not in CHECKSUMS:
        raise DatasetError(f"unknown dataset file {rel!r}")
    root = dest or data_dir()
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(mirror.rstrip("/") + "/" + rel, timeout=60) as r, open(tmp, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
    got = sha256_file(tmp)
    if got != CHECKSUMS[rel]:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"checksum mismatch for {rel}: got {got}, expected {CHECKSUMS[rel]}")
    os.replace(tmp, target)
    return target


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
