"""Artifacts ↔ generators, knowing no family: ``to_artifact`` / ``from_artifact`` and sets on disk.

A generator *set* on disk (what a silo pushes, what ``fedsynth sample`` reads)::

    DIR/manifest.json        {"format": "fedsynth-generator-set/1", "schema": {...},
                              "generators": [{"weights": "gen-0.safetensors", "card": "gen-0.json"}, ...]}
    DIR/gen-<i>.safetensors  tensors (names, shapes and dtypes fixed by the family's spec)
    DIR/gen-<i>.json         the card (family, spec, schema hash, class, privacy claim, sha256)

:func:`from_artifact` is the single loading path (sets on disk, hub pushes, hub pulls): card
format → family known (and accepted) → spec fits the schema (and equals the required one) →
schema hash and class → tensors fit the family's expectation (hand-parsed header, never
unpickled) → the family loads them → optionally a fixed-batch output check.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsynth.artifacts.card import ArtifactError, GeneratorCard, sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes, verify_tensors
from fedsynth.data.schema import Schema
from fedsynth.generators.base import (
    Generator,
    SpecError,
    check_modality,
    check_output,
    get_family,
    resolve_kind,
)

SET_FORMAT = "fedsynth-generator-set/1"


def to_artifact(g: Generator) -> tuple[bytes, bytes]:
    """(card JSON bytes, safetensors bytes); refuses a card whose sha256 is not of these tensors."""
    w = tensors_to_bytes(g.tensors(), g.card.family)
    if sha256_bytes(w) != g.card.weights_sha256:
        raise ArtifactError("card sha256 does not match the generator's tensors")
    return g.card.to_json().encode(), w


def normalise_spec(kind: str, spec: Any, schema: Schema) -> dict[str, Any]:
    """A family spec as the family itself writes it (so equal specs compare equal)."""
    try:
        fam = get_family(kind)
        check_modality(fam, schema)
        return fam.spec_from_dict(spec, schema).to_dict()
    except SpecError as e:
        raise ArtifactError(f"invalid {kind} spec: {e}") from None


def from_artifact(
    card_bytes: bytes | GeneratorCard,
    weights: bytes,
    schema: Schema,
    *,
    required: Mapping[str, dict[str, Any]] | None = None,
    source: str = "",
    check: bool = False,
) -> Generator:
    """Verify and load one artifact. ``required`` maps accepted family kinds to their (normalised)
    specs; ``check`` runs :func:`~fedsynth.generators.base.check_output` on a fixed batch."""
    card = card_bytes if isinstance(card_bytes, GeneratorCard) else GeneratorCard.from_json(card_bytes)
    kind = resolve_kind(card.family)
    if required is not None and kind not in required:
        raise ArtifactError(
            f"family {card.family!r} is not accepted here; accepted: {', '.join(required) or 'none'}"
        )
    spec = normalise_spec(kind, card.spec, schema)
    if required is not None and spec != required[kind]:
        raise ArtifactError(f"card's {kind} spec differs from the required spec")
    if card.schema_hash != schema.hash():
        raise ArtifactError("card schema hash does not match the schema (trained for another schema)")
    if card.class_label is not None and card.class_label not in schema.classes:
        raise ArtifactError(f"class {card.class_label!r} is not a class of the schema")
    fam = get_family(kind)
    expected = fam.expected_tensors(card, schema)
    tensors = verify_tensors(weights, expected, sha256=card.weights_sha256)
    g = fam.load(card, tensors, schema)
    g.source = source
    if check:
        check_output(g, schema)
    return g


def write_generator_set(
    out_dir: str | Path, schema: Schema, generators: Sequence[Generator], *, extra: dict | None = None
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
        for i, g in enumerate(generators):
            card_b, w = to_artifact(g)
            (tmp / f"gen-{i}.safetensors").write_bytes(w)
            (tmp / f"gen-{i}.json").write_bytes(card_b)
            entries.append({"weights": f"gen-{i}.safetensors", "card": f"gen-{i}.json"})
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


def read_generator_set(path: str | Path, *, schema: Schema | None = None) -> tuple[Schema, list[Generator]]:
    """Load and verify a generator set. ``schema``, if given, must match the set's schema hash."""
    p = Path(path)
    mf = p / "manifest.json"
    if not mf.exists():
        raise ArtifactError(f"{p} is not a generator set (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mf} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SET_FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{mf}: format {fmt!r} is not {SET_FORMAT!r}")
    try:
        set_schema = Schema.from_dict(manifest["schema"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ArtifactError(f"{mf}: missing or invalid schema ({e})") from None
    if schema is not None and schema.hash() != set_schema.hash():
        raise ArtifactError(f"generator set {p} was trained for a different schema (hash mismatch)")
    out: list[Generator] = []
    entries = manifest.get("generators", [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "weights" in e and "card" in e for e in entries
    ):
        raise ArtifactError(f"{mf}: 'generators' must be a list of {{weights, card}} entries")
    for entry in entries:
        wname, cname = str(entry["weights"]), str(entry["card"])
        if "/" in wname or "/" in cname or ".." in wname or ".." in cname:
            raise ArtifactError(f"{mf}: file names must be plain names, got {wname!r}, {cname!r}")
        try:
            g = from_artifact(
                (p / cname).read_bytes(), (p / wname).read_bytes(), set_schema, source=str(p / wname)
            )
        except ArtifactError as err:
            raise ArtifactError(f"{p / wname}: {err}") from None
        out.append(g)
    if not out:
        raise ArtifactError(f"{p} contains no generators")
    return set_schema, out


__all__ = [
    "SET_FORMAT",
    "from_artifact",
    "normalise_spec",
    "read_generator_set",
    "to_artifact",
    "write_generator_set",
]
