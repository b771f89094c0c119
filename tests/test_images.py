"""Image data (idx files, image schemas) and image support of the generic parts (fed-merf)."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.artifacts.card import ArtifactError
from fedsynth.data.datasets import CHECKSUMS, DatasetError
from fedsynth.data.images import (
    IdxError,
    image_schema,
    load_images,
    parse_idx,
    read_idx,
    to_frame,
    to_images,
)
from fedsynth.data.schema import Column, Schema, SchemaError, validate_frame
from fedsynth.generators.base import SpecError, check_modality, get_family
from fedsynth.generators.io import from_artifact, normalise_spec, to_artifact
from fedsynth.privacy.target import PrivacyTarget

SHAPE = (1, 8, 8)


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def toy_images(n_per_class: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright left half, class 1: a bright bottom half, with noise (uint8)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(2):
        x = rng.integers(0, 60, size=(n_per_class, *SHAPE)).astype(np.int64)
        if c == 0:
            x[:, :, :, :4] += 180
        else:
            x[:, :, 4:, :] += 180
        xs.append(np.clip(x, 0, 255).astype(np.uint8))
        ys += [str(c)] * n_per_class
    return np.concatenate(xs), np.array(ys)


# ------------------------------------------------------------------------------ idx files
def test_parse_idx_round_trip() -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(a), "x", ndim=3), a)


@pytest.mark.parametrize(
    ("mutate", "msg"),
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00", "after the"),
        (lambda b: b[:10], "truncated header"),
        (lambda b: b"\x01" + b[1:], "not an idx file"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "not uint8"),
        (lambda b: b[:3] + b"\x02" + b[4:], "dimensions"),
        (lambda b: b"\x00\x00", "too short"),
    ],
)
def test_parse_idx_refuses_broken_files(mutate, msg: str) -> None:  # type: ignore[no-untyped-def]
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    with pytest.raises(IdxError, match=msg):
        parse_idx(mutate(idx_bytes(a)), "x", ndim=3)


def test_read_idx_corrupted_gzip(tmp_path: Path) -> None:
    a = np.zeros((5, 4, 4), dtype=np.uint8)
    good = gzip.compress(idx_bytes(a))
    p = tmp_path / "x.gz"
    p.write_bytes(good)
    assert read_idx(p, ndim=3).shape == (5, 4, 4)
    p.write_bytes(good[: len(good) // 2])  # a truncated download
    with pytest.raises(IdxError, match="corrupted or truncated"):
        read_idx(p, ndim=3)
    p.write_bytes(b"not gzip at all")
    with pytest.raises(IdxError, match="corrupted or truncated"):
        read_idx(p, ndim=3)


def test_load_images_checks_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "mnist"
    d.mkdir()
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (d / f).write_bytes(gzip.compress(b"\x00" * 20))
    monkeypatch.setenv("FEDSYNTH_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="sha256"):
        load_images("mnist")
    with pytest.raises(DatasetError, match="unknown image dataset"):
        load_images("cifar")
    assert {"mnist/train-images-idx3-ubyte.gz", "fashion_mnist/t10k-labels-idx1-ubyte.gz"} <= set(CHECKSUMS)


# ----------------------------------------------------------------------------- image schema
def test_image_schema_round_trip_and_hash() -> None:
    s = image_schema(SHAPE, ("0", "1"))
    assert s.image == SHAPE and len(s.features) == 64
    back = Schema.from_dict(s.to_dict())
    assert back == s and back.hash() == s.hash()
    # the shape is part of the hash: same columns, another shape
    other = image_schema((1, 4, 16), ("0", "1"))
    assert other.hash() != s.hash()
    # tabular schemas carry no image key (their hashes are unchanged)
    tab = Schema(
        (Column("a", "continuous", lower=0.0, upper=1.0), Column("y", "categorical", categories=("0", "1"))),
        "y",
    )
    assert "image" not in tab.to_dict()


def test_image_schema_layout_is_checked() -> None:
    s = image_schema(SHAPE, ("0", "1"))
    d = s.to_dict()
    d["image"] = [1, 8, 9]
    with pytest.raises(SchemaError, match="needs 72 pixel columns"):
        Schema.from_dict(d)
    d = s.to_dict()
    d["columns"][3]["upper"] = 1.0
    with pytest.raises(SchemaError, match="in \\[0, 255\\]"):
        Schema.from_dict(d)
    for bad in ([1, 8], [1, 8, True], [0, 8, 8], "1x8x8"):
        d = s.to_dict()
        d["image"] = bad
        with pytest.raises(SchemaError, match=r"schema\.image"):
            Schema.from_dict(d)


def test_image_frames_are_strict() -> None:
    s = image_schema(SHAPE, ("0", "1"))
    x, y = toy_images(3)
    df = to_frame(x, y, s)
    v = validate_frame(df, s)
    assert v[s.features[0].name].dtype == np.uint8
    x2, y2 = to_images(v, s)
    assert np.array_equal(x2, x) and list(y2) == list(y)
    for val, msg in ((300, "0..255"), (-1, "0..255"), (3.5, "integers"), (np.nan, "NaN")):
        bad = df.astype({"px_5": float})
        bad.loc[0, "px_5"] = val
        with pytest.raises(SchemaError, match=msg):
            validate_frame(bad, s)
    with pytest.raises(SchemaError, match="missing 1 pixel columns"):
        validate_frame(df.drop(columns=["px_7"]), s)
    bad = df.copy()
    bad.loc[0, "label"] = "7"
    with pytest.raises(SchemaError, match="classes not in the schema"):
        validate_frame(bad, s)


def test_check_images_refuses_wrong_shape_and_dtype() -> None:
    s = image_schema(SHAPE, ("0", "1"))
    with pytest.raises(SchemaError, match="uint8"):
        to_frame(np.zeros((2, 1, 8, 8), dtype=np.float32), ["0", "1"], s)
    with pytest.raises(SchemaError, match="shape"):
        to_frame(np.zeros((2, 1, 7, 8), dtype=np.uint8), ["0", "1"], s)
    assert len(to_frame(np.zeros((2, 8, 8), dtype=np.uint8), ["0", "1"], s)) == 2  # (N, H, W) = 1 channel


# ------------------------------------------------------------------- families and modality
def test_tabular_family_refuses_an_image_schema() -> None:
    s = image_schema(SHAPE, ("0", "1"))
    with pytest.raises(SpecError, match="does not fit an image schema"):
        check_modality(get_family("vae"), s)
    with pytest.raises(ArtifactError, match="image schema"):
        normalise_spec("pgm/1", {}, s)


def merf_config():  # type: ignore[no-untyped-def]
    fam = get_family("fed-merf")
    return dataclasses.replace(
        fam.default_config("mnist"), features=64, conv_filters=4, hidden=(8,), steps=30, batch_size=16,
        latent=4, seeded_noise=True, lengthscale=2.0,
    )  # fmt: skip


def test_fed_merf_images_fit_round_trip_and_refusals() -> None:
    fam = get_family("fed-merf")
    s = image_schema(SHAPE, ("0", "1"))
    x, y = toy_images()
    gs = fam.fit(to_frame(x, y, s), s, PrivacyTarget(1.5, 1e-5), merf_config(), seed=0)
    card = gs.cards[0]
    assert card.spec["kind"] == "merf-conv" and card.spec["conv_filters"] == 4
    assert card.epsilon <= 1.5
    card.privacy.verify()
    g = gs.generators[0]
    cb, w = to_artifact(g)
    g2 = from_artifact(cb, w, s, check=True)  # the hub's fixed-batch check passes
    out = g2.sample(40, condition="1", seed=3)
    px, labels = to_images(validate_frame(out, s), s)
    assert px.shape == (40, *SHAPE) and set(labels) == {"1"}
    assert g2.sample(5, condition="0", seed=1).equals(g2.sample(5, condition="0", seed=1))
    # the same artifact under a tabular schema (an image artifact pushed to a table federation)
    tab = Schema(
        (*(Column(f"px_{i}", "continuous", lower=0.0, upper=255.0, integer=True) for i in range(64)),
         Column("label", "categorical", categories=("0", "1"))),
        "label",
    )  # fmt: skip
    with pytest.raises(ArtifactError):
        from_artifact(cb, w, tab)
    # a poisoned generator (finite ±1e30 weights) is refused by the output check
    t = {
        k: np.where(np.arange(v.size).reshape(v.shape) % 2 == 0, 1e30, -1e30).astype(np.float32)
        for k, v in g.tensors().items()
    }
    bad = fam.load(card, t, s)
    with pytest.raises(ArtifactError):
        from_artifact(*to_artifact_unchecked(bad, card, t), s, check=True)


def to_artifact_unchecked(g, card, tensors):  # type: ignore[no-untyped-def]
    from fedsynth.artifacts.card import sha256_bytes
    from fedsynth.artifacts.safetensors import tensors_to_bytes

    w = tensors_to_bytes(tensors, card.family)
    return card.replace(weights_sha256=sha256_bytes(w)).to_json().encode(), w


def test_fed_merf_conv_spec_rules() -> None:
    fam = get_family("fed-merf")
    s = image_schema(SHAPE, ("0", "1"))
    tab = Schema(
        (Column("a", "continuous", lower=0.0, upper=1.0), Column("y", "categorical", categories=("0", "1"))),
        "y",
    )
    spec = fam.spec_for(s, merf_config()).to_dict()
    with pytest.raises(SpecError, match="image schema"):
        fam.spec_from_dict(spec, tab)
    with pytest.raises(SpecError, match="go together"):
        fam.spec_from_dict({**spec, "conv_filters": 0}, s)
    with pytest.raises(SpecError, match="at most 1"):
        fam.spec_from_dict({**spec, "marginal_weight": 0.8}, s)
    with pytest.raises(SpecError, match="divisible by 4"):
        fam.spec_for(image_schema((1, 6, 6), ("0", "1")), merf_config())
    # a tabular spec normalises as it did before images (no conv keys)
    assert "conv_filters" not in fam.spec_for(tab, fam.default_config(None)).to_dict()


def test_fed_merf_federation_over_image_silos() -> None:
    from fedsynth.generators.federation import fit_federation

    fam = get_family("fed-merf")
    s = image_schema(SHAPE, ("0", "1"))
    frames = []
    for k in range(3):
        x, y = toy_images(20, seed=k)
        frames.append(to_frame(x, y, s))
    gset, _rep = fit_federation(fam, frames, s, PrivacyTarget(1.5, 1e-5), merf_config(), seed=0)  # type: ignore[arg-type]
    assert gset.cards[0].scope == "federation" and gset.cards[0].epsilon <= 1.5
    out = gset.generators[0].sample(10, seed=0)
    assert isinstance(out, pd.DataFrame) and len(out) == 10
