"""The tensor half of an artifact: safetensors bytes, checked by hand before the library sees them.

:func:`parse_header` reads the 8-byte little-endian header length and the JSON header itself, so
a pickle, zip, truncated or padded upload is refused with a precise reason; :func:`verify_tensors`
then checks every tensor's name, shape and dtype against what the family's trusted spec says
(``expected``), loads with ``safetensors.numpy`` (no torch, never unpickling) and refuses
non-finite values. Families turn the numpy arrays into their own modules.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from fedsynth.artifacts.card import ArtifactError, sha256_bytes

MAX_HEADER_BYTES = 1 << 20
WEIGHTS_FORMAT = "fedsynth-weights/1"
#: safetensors dtype names ↔ numpy dtypes the families use
DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}

#: name -> (shape, safetensors dtype)
Expected = dict[str, tuple[tuple[int, ...], str]]


def _looks_pickled(data: bytes) -> bool:
    return data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:2] == b"PK"


def parse_header(data: bytes) -> dict[str, Any]:
    """The safetensors JSON header, or :class:`ArtifactError` saying why ``data`` is not one.

    The length prefix is parsed first: an honest file whose header length happens to start with
    byte 0x80 must not be mistaken for a pickle, so the pickle/zip diagnosis is only given once
    the bytes fail to be safetensors.
    """
    if len(data) < 8:
        raise ArtifactError("weights file is truncated (shorter than the 8-byte safetensors header length)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or n > len(data) - 8 or n < 2:
        if _looks_pickled(data):
            raise ArtifactError(
                "weights are a pickle/zip (torch.save) file, not safetensors; refusing to load"
            )
        raise ArtifactError(
            f"not a safetensors file or truncated: header claims {n} bytes, file has {len(data) - 8}"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        if _looks_pickled(data):
            raise ArtifactError(
                "weights are a pickle/zip (torch.save) file, not safetensors; refusing to load"
            ) from None
        raise ArtifactError("not a safetensors file: header is not JSON") from None
    if not isinstance(header, dict):
        raise ArtifactError("not a safetensors file: header is not a JSON object")
    try:
        end = 0
        for k, v in header.items():
            if k == "__metadata__":
                continue
            if not (
                isinstance(v, dict) and isinstance(v.get("shape"), list) and isinstance(v.get("dtype"), str)
            ):
                raise ValueError(k)
            off = v["data_offsets"]
            if not (isinstance(off, list) and len(off) == 2 and all(type(o) is int for o in off)):
                raise ValueError(k)
            end = max(end, off[1])
    except (TypeError, KeyError, ValueError, OverflowError, AttributeError, IndexError):
        raise ArtifactError("not a safetensors file: malformed tensor entries in the header") from None
    if 8 + n + end != len(data):
        raise ArtifactError(
            f"weights file is truncated or padded: expected {8 + n + end} bytes, got {len(data)}"
        )
    return header


def verify_tensors(data: bytes, expected: Expected, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Check ``data`` against ``expected`` and return the arrays. Raises :class:`ArtifactError`."""
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise ArtifactError("weights sha256 does not match the card (tampered or corrupted)")
    header = parse_header(data)
    names = {k for k in header if k != "__metadata__"}
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        raise ArtifactError(
            f"tensor names do not match the spec: missing {missing[:8]}, unexpected {extra[:8]}"
        )
    for k, (shape, dtype) in expected.items():
        if header[k].get("dtype") != dtype:
            raise ArtifactError(f"tensor {k!r} has dtype {header[k].get('dtype')}, expected {dtype}")
        if tuple(header[k].get("shape", ())) != tuple(shape):
            raise ArtifactError(
                f"tensor {k!r} has shape {tuple(header[k]['shape'])}, spec requires {tuple(shape)}"
            )
    from safetensors.numpy import load as st_load

    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"safetensors could not parse the weights: {e}") from None
    for k, t in tensors.items():
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise ArtifactError(f"tensor {k!r} contains NaN or infinite values")
    return tensors


def tensors_to_bytes(tensors: dict[str, np.ndarray], family: str) -> bytes:
    """Deterministic safetensors bytes (the card's sha256 is of exactly these bytes).

    The metadata holds ONE key: safetensors keeps metadata in a hash map whose iteration order
    varies between calls, so two keys would serialise in either order and break the sha256."""
    from safetensors.numpy import save as st_save

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    return st_save(arrays, metadata={"format": f"{WEIGHTS_FORMAT};family={family}"})


__all__ = ["DTYPES", "MAX_HEADER_BYTES", "Expected", "parse_header", "tensors_to_bytes", "verify_tensors"]
