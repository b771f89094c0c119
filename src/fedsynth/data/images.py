"""Image benchmarks (MNIST, Fashion-MNIST) from their original idx files, and image schemas.

**Files.** ``$FEDSYNTH_DATA/<name>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``, each with a
pinned SHA-256 (:data:`fedsynth.data.files.CHECKSUMS`; ``fedsynth data verify|fetch`` cover
them). An idx file is a big-endian header — two zero bytes, a type byte (0x08 = uint8), the number
of dimensions, one 4-byte size per dimension — then the raw values. :func:`parse_idx` checks all
of it and the exact payload length, so a truncated or corrupted file is an :class:`IdxError`
naming the file, never a silently short array.

**Image schema.** An image is a table row: one continuous integer column per pixel
(``px_0 … px_{C·H·W−1}``, row-major over (C, H, W)) with the public domain [0, 255], plus the
class column. :class:`~fedsynth.data.schema.Schema` carries the shape (``image=(C, H, W)``), its
hash covers it, and :func:`~fedsynth.data.schema.validate_frame` checks pixels strictly (integers
in 0..255, no clipping). So every generic part — families, cards, the hub, pools, screening —
handles images unchanged, while image families (:attr:`modality` ``"image"``) refuse a tabular
schema and tabular families refuse an image schema (:func:`fedsynth.generators.base.check_modality`).
The frame is only the exchange format; image code works on ``uint8`` arrays
(:func:`to_images` / :func:`to_frame`).

Everything in an image schema is public: the shape, the value range of 8-bit pixels and the class
labels (which define the task).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.data.files import DatasetError, dataset_path
from fedsynth.data.schema import Column, Schema, SchemaError

#: The image benchmarks: name -> the classes' display names (the labels are "0".."9").
IMAGE_BENCHMARKS: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
#: idx files per split
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
PIXEL_PREFIX = "px_"
MAX_IDX_BYTES = 1 << 31  # no benchmark file decompresses to more than 2 GiB


class IdxError(DatasetError):
    """An idx file is corrupted, truncated or not what its name says."""


def parse_idx(raw: bytes, what: str, *, ndim: int) -> np.ndarray:
    """Decode one (decompressed) idx payload of ``ndim`` dimensions into a uint8 array."""
    if len(raw) < 4:
        raise IdxError(f"{what}: {len(raw)} bytes is too short for an idx header")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise IdxError(f"{what}: not an idx file (magic 0x{raw[:4].hex()})")
    if dtype != 0x08:
        raise IdxError(f"{what}: idx type 0x{dtype:02x} is not uint8 (0x08)")
    if dims != ndim:
        raise IdxError(f"{what}: {dims} dimensions, expected {ndim}")
    head = 4 + 4 * dims
    if len(raw) < head:
        raise IdxError(f"{what}: truncated header ({len(raw)} of {head} bytes)")
    shape = struct.unpack(f">{dims}I", raw[4:head])
    need = int(np.prod(shape, dtype=np.int64))
    got = len(raw) - head
    if got < need:
        raise IdxError(f"{what}: truncated: {got} bytes of data, the header announces {need} {shape}")
    if got > need:
        raise IdxError(f"{what}: {got - need} bytes after the {need} the header announces {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Read a gzip-compressed idx file; a broken gzip stream is an :class:`IdxError`."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:  # bad gzip header, CRC, truncated stream
        raise IdxError(f"{path}: corrupted or truncated gzip file ({e})") from None
    if len(raw) > MAX_IDX_BYTES:
        raise IdxError(f"{path}: decompresses to more than {MAX_IDX_BYTES} bytes")
    return parse_idx(raw, str(path), ndim=ndim)


def image_schema(shape: tuple[int, int, int], classes: tuple[str, ...], target: str = "label") -> Schema:
    """The public schema of ``(C, H, W)`` 8-bit images with these class labels."""
    c, h, w = shape
    cols = tuple(
        Column(f"{PIXEL_PREFIX}{i}", "continuous", lower=0.0, upper=255.0, integer=True)
        for i in range(c * h * w)
    )
    return Schema(
        (*cols, Column(target, "categorical", categories=tuple(classes))), target=target, image=shape
    )


def pixel_columns(schema: Schema) -> list[str]:
    return [c.name for c in schema.features]


def check_images(x: np.ndarray, schema: Schema, what: str = "images") -> np.ndarray:
    """``x`` as (N, C, H, W) uint8 for ``schema``; (N, H, W) is taken as one channel."""
    if schema.image is None:
        raise SchemaError("the schema is tabular, not an image schema")
    if not isinstance(x, np.ndarray):
        raise SchemaError(f"{what} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise SchemaError(f"{what} must be uint8 pixels (0..255), got dtype {x.dtype}")
    c, h, w = schema.image
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise SchemaError(f"{what} have shape {tuple(x.shape[1:])}, the schema's images are {(c, h, w)}")
    return x


def to_frame(x: np.ndarray, labels: np.ndarray | list[str], schema: Schema) -> pd.DataFrame:
    """(N, C, H, W) uint8 images and their labels → the schema's frame (pixel columns + target)."""
    x = check_images(x, schema)
    df = pd.DataFrame(x.reshape(len(x), int(np.prod(x.shape[1:]))), columns=pixel_columns(schema))
    df[schema.target] = np.asarray(labels).astype(str)
    return df


def to_images(df: pd.DataFrame, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """A frame of the schema (validated: integer pixels in 0..255) → ((N, C, H, W) uint8, labels)."""
    if schema.image is None:
        raise SchemaError("the schema is tabular, not an image schema")
    cols = pixel_columns(schema)
    missing = [c for c in cols[:3] + cols[-1:] if c not in df.columns]
    if missing or len(df.columns) < len(cols):
        raise SchemaError(
            f"an image frame needs the {len(cols)} pixel columns {cols[0]}..{cols[-1]}; "
            f"got {len(df.columns)} columns"
        )
    v = df[cols].to_numpy()
    if v.dtype != np.uint8:
        if not np.issubdtype(v.dtype, np.number):
            raise SchemaError("pixel columns must be numeric")
        vf = v.astype(np.float64)
        if not np.isfinite(vf).all():
            raise SchemaError("pixel values must be finite integers in 0..255 (found NaN or inf)")
        if (vf < 0).any() or (vf > 255).any() or (np.mod(vf, 1) != 0).any():
            raise SchemaError("pixel values must be integers in 0..255 (uint8 images)")
        v = vf.astype(np.uint8)
    labels = df[schema.target].astype(str).to_numpy() if schema.target in df.columns else np.array([])
    return v.reshape(len(df), *schema.image), labels


@dataclass(frozen=True)
class ImageData:
    """An image benchmark: public schema, the standard train / test split as uint8 arrays."""

    name: str
    schema: Schema
    train_x: np.ndarray  # (N, C, H, W) uint8
    train_y: np.ndarray  # (N,) int64 class indices
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]

    def frame(self, idx: np.ndarray | None = None, *, split: str = "train") -> pd.DataFrame:
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        if idx is not None:
            x, y = x[idx], y[idx]
        return to_frame(x, np.asarray(self.schema.classes)[y], self.schema)


def load_images(name: str) -> ImageData:
    """MNIST or Fashion-MNIST: 60,000 / 10,000 standard split, checksums verified."""
    if name not in IMAGE_BENCHMARKS:
        raise DatasetError(f"unknown image dataset {name!r}; choose one of {sorted(IMAGE_BENCHMARKS)}")
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (img_f, lab_f) in IDX_FILES.items():
        x = read_idx(dataset_path(f"{name}/{img_f}", verify=True), ndim=3)
        y = read_idx(dataset_path(f"{name}/{lab_f}", verify=True), ndim=1)
        if len(x) != len(y):
            raise IdxError(f"{name} {split}: {len(x)} images but {len(y)} labels")
        if y.max(initial=0) >= len(IMAGE_BENCHMARKS[name]):
            raise IdxError(f"{name} {split}: label {int(y.max())} out of range")
        arrays[split] = (x[:, None], y.astype(np.int64))
    shape = tuple(int(d) for d in arrays["train"][0].shape[1:])
    schema = image_schema(
        (shape[0], shape[1], shape[2]), tuple(str(i) for i in range(len(IMAGE_BENCHMARKS[name])))
    )
    return ImageData(name, schema, *arrays["train"], *arrays["test"], IMAGE_BENCHMARKS[name])


__all__ = [
    "IMAGE_BENCHMARKS",
    "IdxError",
    "ImageData",
    "check_images",
    "image_schema",
    "load_images",
    "parse_idx",
    "pixel_columns",
    "read_idx",
    "to_frame",
    "to_images",
]
