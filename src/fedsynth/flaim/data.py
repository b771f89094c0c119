"""FLAIM data: a dataset's public domain and integer codes, its train/test split, and the clients.

``load_flaim_data`` reads Private-PGM's pre-binned Adult, discretises the raw marketing / census
CSVs (or any file), and splits 90/10 into train and test with a seeded permutation.
``make_clients`` splits the training codes over K clients (iid, label-skew:β, cluster; seeded and
cached by :mod:`fedsynth.data.partition`); a split that leaves a client empty is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsynth.data import partition
from fedsynth.flaim.domain import FlaimDomain, discretise, load_prebinned


@dataclass
class FlaimData:
    name: str
    domain: FlaimDomain
    train: np.ndarray
    test: np.ndarray

    @property
    def target_index(self) -> int:
        assert self.domain.target is not None
        return self.domain.attrs.index(self.domain.target)


def _split_train_test(codes: np.ndarray, seed: int, test_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(len(codes))
    k = round(len(codes) * test_frac)
    return codes[np.sort(perm[k:])], codes[np.sort(perm[:k])]


def load_flaim_data(
    name: str | None = None,
    path: str | Path | None = None,
    *,
    domain_json: str | Path | None = None,
    target: str | None = None,
    seed: int = 0,
) -> FlaimData:
    """``adult`` = Private-PGM's pre-binned Adult; ``marketing``/``census`` are discretised raw CSVs."""
    import pandas as pd

    from fedsynth.data.files import DatasetError, dataset_path
    from fedsynth.data.schema import infer_schema

    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"data file {p} does not exist")
        if domain_json is not None:
            codes, dom = load_prebinned(p, domain_json, target)
        else:
            codes, dom = discretise(pd.read_csv(p), target=target)
        label = p.stem
    elif name == "adult":
        codes, dom = load_prebinned(
            dataset_path("adult/adult_private_pgm.csv.gz"),
            dataset_path("adult/adult_private_pgm-domain.json"),
            "income>50K",
        )
        label = name
    elif name in ("marketing", "census"):
        rel = f"{name}/{name}.csv.gz"
        # Literal categories such as "NA" / "Not in universe" are values here, not missing data.
        df = pd.read_csv(dataset_path(rel), keep_default_na=False, na_values=[""])
        tgt = "y" if name == "marketing" else "income"
        if name == "census":
            df = df.drop(columns=["instance weight"])  # survey weight: not a feature (UCI notes)
        for c in df.columns:  # pandas 3 string dtype → plain strings for the schema
            if not pd.api.types.is_numeric_dtype(df[c]):
                df[c] = df[c].astype(str)
        # The whole published file defines the public domain (as in fedsynth.data.datasets).
        schema = infer_schema(df, tgt, max_categories=100).with_source("declared")
        codes, dom = discretise(df, schema)
        label = name
    else:
        raise DatasetError(f"unknown FLAIM dataset {name!r}; use adult, marketing, census or --data FILE")
    train, test = _split_train_test(codes, seed)
    return FlaimData(label, dom, train, test)


def make_clients(data: FlaimData, clients: int, split: str, seed: int) -> list[np.ndarray]:
    n = len(data.train)
    if clients > n:
        raise partition.PartitionError(f"{clients} clients but only {n} training rows; use fewer clients")
    kind, beta = partition.parse_split(split)
    if kind == "iid":
        parts = partition.iid(n, clients, seed)
    elif kind == "label-skew":
        assert beta is not None
        parts = partition.dirichlet_label_skew(data.train[:, data.target_index], clients, beta, seed)
    elif kind == "cluster":
        parts = partition.cluster(data.train, clients, seed)
    else:
        raise partition.PartitionError(
            f"split {split!r} is not supported for FLAIM; use iid, label-skew:B, cluster"
        )
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise partition.PartitionError(
            f"split {split!r} leaves clients {empty[:10]} empty; use fewer clients"
        )
    return parts
