"""The drift benchmark's view of a dataset (:class:`DriftTask`): model inputs, labels, how pool
rows become model inputs, and the frames the generators train on (tables or images)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.data.schema import Schema
from fedsynth.evaluation.fedtrain import ModelSpec

FAIRNESS_ATTRIBUTES = ("sex", "race")


@dataclass
class DriftTask:
    """A dataset as the drift benchmark needs it: model inputs, labels, how to turn pool rows
    into model inputs, and the frames the generators train on."""

    name: str
    schema: Schema
    spec: ModelSpec
    x_train: np.ndarray  # float32 (encoded table) or uint8 (N, C, H, W)
    y_train: np.ndarray  # int64 class indices in schema order
    x_test: np.ndarray
    y_test: np.ndarray
    positive: str | None
    frames: Callable[[np.ndarray], pd.DataFrame]  # training rows -> frame for the generators
    to_xy: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]  # pool rows -> inputs, labels
    test_frame: pd.DataFrame | None = None  # tables: for the group-fairness gaps

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.schema.classes]

    @property
    def fairness_attributes(self) -> tuple[str, ...]:
        if self.test_frame is None:
            return ()
        return tuple(a for a in FAIRNESS_ATTRIBUTES if a in self.test_frame.columns)


def load_task(
    dataset: str, *, hidden: int = 64, max_train_rows: int | None = None, seed: int = 0
) -> DriftTask:
    """A tabular benchmark (MLP on the public-schema encoding) or mnist / fashion_mnist (CNN).
    ``max_train_rows``: a seeded random subset of the training split (images: CPU time)."""
    from fedsynth.data.images import IMAGE_BENCHMARKS

    def subset(n: int) -> np.ndarray:
        if max_train_rows is None or max_train_rows >= n:
            return np.arange(n)
        if max_train_rows < 1:
            raise ValueError("--max-train-rows must be >= 1")
        return np.sort(np.random.default_rng(seed).choice(n, max_train_rows, replace=False))

    if dataset in IMAGE_BENCHMARKS:
        from fedsynth.data.images import load_images, to_images

        data = load_images(dataset)
        keep = subset(len(data.train_x))
        tx, ty = data.train_x[keep], data.train_y[keep]
        schema = data.schema
        index = {c: i for i, c in enumerate(schema.classes)}

        def img_xy(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            x, lab = to_images(df, schema)
            return x, np.array([index[str(v)] for v in lab], dtype=np.int64)

        spec = ModelSpec("cnn", len(schema.classes), image=schema.image, hidden=128)
        return DriftTask(
            dataset,
            schema,
            spec,
            tx,
            ty,
            data.test_x,
            data.test_y,
            None,
            lambda idx: data.frame(keep[idx]),
            img_xy,
        )
    from fedsynth.data.datasets import load_dataset
    from fedsynth.data.encoders import TableEncoder, encode_target

    bench = load_dataset(dataset)
    train, test = bench.train, bench.test
    keep = subset(len(train))
    train = train.iloc[keep].reset_index(drop=True)
    s = bench.schema
    enc = TableEncoder(s)

    def tab_xy(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return enc.transform(df), encode_target(df[s.target], s)

    x_tr, y_tr = tab_xy(train)
    x_te, y_te = tab_xy(test)
    spec = ModelSpec("mlp", len(s.classes), input_dim=enc.dim, hidden=hidden)
    return DriftTask(
        dataset,
        s,
        spec,
        x_tr,
        y_tr,
        x_te,
        y_te,
        bench.positive,
        lambda idx: train.iloc[idx].reset_index(drop=True),
        tab_xy,
        test,
    )


__all__ = ["FAIRNESS_ATTRIBUTES", "DriftTask", "load_task"]
