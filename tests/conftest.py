"""Shared fixtures: small tables with a declared schema, quiet logs, one torch thread."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.schema import Column, Schema

os.environ.setdefault("FEDSYNTH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))


@pytest.fixture(autouse=True, scope="session")
def _quiet_and_single_threaded() -> None:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*Full backward hook.*")
    logging.getLogger("flwr").setLevel(logging.ERROR)


@pytest.fixture
def toy_schema() -> Schema:
    return Schema(
        (
            Column("age", "continuous", lower=18, upper=90, integer=True),
            Column("income", "continuous", lower=0.0, upper=200.0),
            Column("color", "categorical", categories=("red", "green", "blue")),
            Column("label", "categorical", categories=("no", "yes")),
        ),
        target="label",
    )


def make_toy(n: int, seed: int = 0) -> pd.DataFrame:
    """Two classes that differ in every column, so generators and classifiers have signal."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    age = np.where(y, rng.normal(55, 8, n), rng.normal(32, 8, n)).clip(18, 90).round()
    income = np.where(y, rng.normal(120, 25, n), rng.normal(50, 20, n)).clip(0, 200)
    color = np.where(
        y, rng.choice(["red", "green"], n, p=[0.8, 0.2]), rng.choice(["green", "blue"], n, p=[0.3, 0.7])
    )
    return pd.DataFrame({"age": age, "income": income, "color": color, "label": np.where(y, "yes", "no")})


@pytest.fixture
def toy_frame() -> pd.DataFrame:
    return make_toy(600)


def has_data_dir() -> bool:
    return (Path(os.environ["FEDSYNTH_DATA"]) / "adult" / "adult.csv.gz").exists()
