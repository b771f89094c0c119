"""Decoder artifacts: safetensors weights + a JSON card. Never pickle.

A generator *set* on disk (what a silo pushes, what ``fedsynth sample`` reads)::

    DIR/manifest.json          {"format": "fedsynth-generator-set/1", "schema": {...},
                                "generators": [{"weights": "class-0.safetensors",
                                                "card": "class-0.json"}, ...]}
    DIR/class-<i>.safetensors  decoder weights (float32, names fixed by the spec)
    DIR/class-<i>.json         the card: spec, schema hash, class, (ε, δ) from the accountant, sha256

Loading (:func:`verify_weights`) parses the safetensors header itself *before* handing bytes to
the library, so a pickle or truncated upload is rejected with a specific reason, and checks every
tensor's name, shape, dtype and finiteness against the module the trusted spec builds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedsynth.data.schema import Schema
from fedsynth.generators.nets import Decoder, DecoderSpec, SpecError, build_decoder, expected_tensors

CARD_FORMAT = "fedsynth-decoder/1"
SET_FORMAT = "fedsynth-generator-set/1"
MAX_CARD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 1 << 20


class ArtifactError(ValueError):
    """A generator artifact is malformed, tampered with, or does not match what was expected."""


@dataclass(frozen=True)
class GeneratorCard:
    spec: dict[str, Any]
    schema_hash: str
    class_label: str
    epsilon: float
    delta: float
    accountant: str
    weights_sha256: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format: str = CARD_FORMAT
    library: str = "fedsynth"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str | bytes) -> GeneratorCard:
        if len(text) > MAX_CARD_BYTES:
            raise ArtifactError(f"card is larger than {MAX_CARD_BYTES} bytes")
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ArtifactError(f"card is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ArtifactError("card must be a JSON object")
        if d.get("format") != CARD_FORMAT:
            raise ArtifactError(f"card format {d.get('format')!r} is not {CARD_FORMAT!r}")
        try:
            card = GeneratorCard(
                spec=dict(d["spec"]),
                schema_hash=str(d["schema_hash"]),
                class_label=str(d["class_label"]),
                epsilon=float(d["epsilon"]),
                delta=float(d["delta"]),
                accountant=str(d["accountant"]),
                weights_sha256=str(d["weights_sha256"]),
                created=str(d.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"card is missing or has a bad field: {e}") from None
        if not (math.isfinite(card.epsilon) and card.epsilon > 0):
            raise ArtifactError(f"card epsilon must be a positive finite number, got {card.epsilon}")
        if not (0 <= card.delta < 1):
            raise ArtifactError(f"card delta must be in [0, 1), got {card.delta}")
        if len(card.weights_sha256) != 64 or any(ch not in "0123456789abcdef" for ch in card.weights_sha256):
            raise ArtifactError("card weights_sha256 must be 64 lowercase hex digits")
        return card

    def decoder_spec(self) -> DecoderSpec:
        try:
            return DecoderSpec.from_dict(self.spec)
        except SpecError as e:
            raise ArtifactError(f"card spec is invalid: {e}") from None


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def decoder_to_bytes(decoder: Decoder) -> bytes:
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in decoder.state_dict().items()}
    return st_save(tensors, metadata={"format": "fedsynth-decoder-weights/1"})


def _parse_header(data: bytes) -> dict[str, Any]:
    """Read the safetensors header by hand so non-safetensors input gets a precise reason."""
    if data[:2] == b"\x80\x04" or data[:1] == b"\x80" or data[:2] == b"PK":
        raise ArtifactError("weights are a pickle/zip (torch.save) file, not safetensors; refusing to load")
    if len(data) < 8:
        raise ArtifactError("weights file is truncated (shorter than the 8-byte safetensors header length)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or n > len(data) - 8:
        raise ArtifactError(
            f"not a safetensors file or truncated: header claims {n} bytes, file has {len(data) - 8}"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ArtifactError("not a safetensors file: header is not JSON") from None
    if not isinstance(header, dict):
        raise ArtifactError("not a safetensors file: header is not a JSON object")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        for k, v in header.items():
            if k != "__metadata__" and not (
                isinstance(v.get("shape"), list) and isinstance(v.get("dtype"), str)
            ):
                raise ValueError(k)
    except (TypeError, KeyError, ValueError, OverflowError, AttributeError, IndexError):
        raise ArtifactError("not a safetensors file: malformed tensor entries in the header") from None
    if 8 + n + end != len(data):
        raise ArtifactError(
            f"weights file is truncated or padded: expected {8 + n + end} bytes, got {len(data)}"
        )
    return header


def verify_weights(data: bytes, spec: DecoderSpec, *, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Check ``data`` against ``spec`` and return the tensors. Raises :class:`ArtifactError`."""
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise ArtifactError("weights sha256 does not match the card (tampered or corrupted)")
    header = _parse_header(data)
    expected = expected_tensors(spec)
    names = {k for k in header if k != "__metadata__"}
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        raise ArtifactError(f"tensor names do not match the spec: missing {missing}, unexpected {extra}")
    for k, shape in expected.items():
        if header[k].get("dtype") != "F32":
            raise ArtifactError(f"tensor {k!r} has dtype {header[k].get('dtype')}, expected F32")
        if tuple(header[k].get("shape", ())) != shape:
            raise ArtifactError(f"tensor {k!r} has shape {tuple(header[k]['shape'])}, spec requires {shape}")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"safetensors could not parse the weights: {e}") from None
    for k, t in tensors.items():
        if not torch.isfinite(t).all():
            raise ArtifactError(f"tensor {k!r} contains NaN or infinite values")
    return tensors


def load_decoder_bytes(weights: bytes, card: GeneratorCard, *, spec: DecoderSpec | None = None) -> Decoder:
    """Build the decoder from a trusted spec (default: the card's) and load verified weights."""
    trusted = spec or card.decoder_spec()
    if spec is not None and card.decoder_spec() != spec:
        raise ArtifactError("card's decoder spec differs from the required spec")
    tensors = verify_weights(weights, trusted, sha256=card.weights_sha256)
    dec = build_decoder(trusted)
    dec.load_state_dict(tensors, strict=True)
    dec.eval()
    return dec


# ---------------------------------------------------------------------------------------------
# Generator sets on disk
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedGenerator:
    card: GeneratorCard
    decoder: Decoder
    source: str  # where it came from (path or hub id)


def write_generator_set(
    out_dir: str | Path,
    schema: Schema,
    items: list[tuple[Decoder, GeneratorCard]],
    *,
    extra: dict | None = None,
) -> Path:
    """Write a set atomically: build it in a temp folder next to ``out_dir``, then rename.

    Refuses to touch an existing non-empty ``out_dir``.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArtifactError(f"{out} already exists and is not empty; choose a new output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries = []
        for i, (dec, card) in enumerate(items):
            w = decoder_to_bytes(dec)
            if sha256_bytes(w) != card.weights_sha256:
                raise ArtifactError("card sha256 does not match the decoder being written")
            (tmp / f"class-{i}.safetensors").write_bytes(w)
            (tmp / f"class-{i}.json").write_text(card.to_json())
            entries.append({"weights": f"class-{i}.safetensors", "card": f"class-{i}.json"})
        manifest = {"format": SET_FORMAT, "schema": schema.to_dict(), "generators": entries, **(extra or {})}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_generator_set(
    path: str | Path, *, schema: Schema | None = None
) -> tuple[Schema, list[LoadedGenerator]]:
    """Load and verify a generator set. ``schema``, if given, must match the set's schema hash."""
    p = Path(path)
    mf = p / "manifest.json"
    if not mf.exists():
        raise ArtifactError(f"{p} is not a generator set (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mf} is not valid JSON: {e}") from None
    if manifest.get("format") != SET_FORMAT:
        raise ArtifactError(f"{mf}: format {manifest.get('format')!r} is not {SET_FORMAT!r}")
    set_schema = Schema.from_dict(manifest["schema"])
    if schema is not None and schema.hash() != set_schema.hash():
        raise ArtifactError(f"generator set {p} was trained for a different schema (hash mismatch)")
    out: list[LoadedGenerator] = []
    for e in manifest.get("generators", []):
        wname, cname = str(e["weights"]), str(e["card"])
        if "/" in wname or "/" in cname or ".." in wname or ".." in cname:
            raise ArtifactError(f"{mf}: file names must be plain names, got {wname!r}, {cname!r}")
        card = GeneratorCard.from_json((p / cname).read_bytes())
        if card.schema_hash != set_schema.hash():
            raise ArtifactError(f"{p / cname}: card schema hash does not match the set's schema")
        if card.class_label not in set_schema.classes:
            raise ArtifactError(f"{p / cname}: class {card.class_label!r} is not a class of the schema")
        try:
            dec = load_decoder_bytes((p / wname).read_bytes(), card)
        except ArtifactError as err:
            raise ArtifactError(f"{p / wname}: {err}") from None
        if dec.spec.output_dim != sum(w for _, _, w in dec.spec.layout):
            raise ArtifactError(f"{p / wname}: spec layout inconsistent")
        out.append(LoadedGenerator(card, dec, str(p / wname)))
    if not out:
        raise ArtifactError(f"{p} contains no generators")
    return set_schema, out
