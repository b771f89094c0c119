"""The SGDE exchange protocol as plain data types and checks (no HTTP, no database).

* :class:`Requirements` — what Subscribe returns: schema, decoder spec, privacy caps, budget.
* :func:`validate_generator_set` — everything the hub checks about a pushed set before it
  stores a single byte: card format, spec and schema match, class labels, ε/δ caps, weights that
  are genuine safetensors fitting the spec (never unpickled), one generator per class.
* :func:`ledger_charge` — the per-silo privacy ledger rule.

Composition. Within one push the generators are trained on the silo's disjoint class subsets,
so the set costs max ε and max δ over its cards (parallel composition). Across pushes the same
records are reused, so the ledger adds pushes up (basic sequential composition):
``ε_total = Σ_pushes max_c ε_c`` must stay ≤ the budget the admin set for each silo.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from fedsynth.artifacts.decoder import ArtifactError, GeneratorCard, verify_weights
from fedsynth.data.schema import Schema, SchemaError
from fedsynth.generators.nets import DecoderSpec, SpecError

#: Names of federations and silos: short, printable, safe anywhere (they are never used as paths
#: anyway; the store is content-addressed).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_GENERATORS_PER_PUSH = 256


class PushRefused(ValueError):
    """A push (or request) the hub refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.status = status


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise PushRefused(
            f"{kind} name {name!r} is invalid: use 1-64 letters, digits, '_', '-', '.' starting with a "
            "letter or digit",
            422,
        )
    return name


@dataclass(frozen=True)
class Requirements:
    federation: str
    schema: Schema
    spec: DecoderSpec
    max_epsilon: float
    max_delta: float
    silo_epsilon_budget: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "federation": self.federation,
            "schema": self.schema.to_dict(),
            "schema_hash": self.schema.hash(),
            "decoder_spec": self.spec.to_dict(),
            "max_epsilon": self.max_epsilon,
            "max_delta": self.max_delta,
            "silo_epsilon_budget": self.silo_epsilon_budget,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Requirements:
        try:
            return Requirements(
                federation=str(d["federation"]),
                schema=Schema.from_dict(d["schema"]),
                spec=DecoderSpec.from_dict(d["decoder_spec"]),
                max_epsilon=float(d["max_epsilon"]),
                max_delta=float(d["max_delta"]),
                silo_epsilon_budget=float(d["silo_epsilon_budget"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed federation requirements: {e}") from None


def check_requirements(
    schema_d: Any, spec_d: Any, max_epsilon: float, max_delta: float, budget: float
) -> tuple[Schema, DecoderSpec]:
    """Validate an admin's federation definition; the spec's output layout must fit the schema."""
    from fedsynth.data.encoders import TableEncoder

    try:
        schema = Schema.from_dict(schema_d)
    except (SchemaError, TypeError, ValueError, AttributeError) as e:
        raise PushRefused(f"invalid schema: {e}") from None
    try:
        spec = DecoderSpec.from_dict(spec_d) if isinstance(spec_d, dict) else None
    except SpecError as e:
        raise PushRefused(f"invalid decoder spec: {e}") from None
    if spec is None:
        raise PushRefused("decoder_spec must be a JSON object")
    want = [(b["name"], b["kind"], b["width"]) for b in TableEncoder(schema).layout()]
    if [tuple(b) for b in spec.layout] != want:
        raise PushRefused("the decoder spec's output layout does not match the schema's encoding")
    for name, v in (("max_epsilon", max_epsilon), ("silo_epsilon_budget", budget)):
        if not (math.isfinite(v) and v > 0):
            raise PushRefused(f"{name} must be a positive finite number, got {v}")
    if not (0 < max_delta < 1):
        raise PushRefused(f"max_delta must be in (0, 1), got {max_delta}")
    if budget < max_epsilon:
        raise PushRefused("silo_epsilon_budget must be >= max_epsilon (else no push could ever fit)")
    return schema, spec


@dataclass(frozen=True)
class ValidatedGenerator:
    card: GeneratorCard
    card_bytes: bytes
    weights: bytes
    card_sha256: str


@dataclass(frozen=True)
class ValidatedPush:
    generators: list[ValidatedGenerator]
    epsilon: float  # parallel composition over disjoint classes: max
    delta: float
    content_hash: str
    total_bytes: int


def validate_generator_set(req: Requirements, items: list[tuple[bytes, bytes]]) -> ValidatedPush:
    """Check a pushed set of ``(card_json_bytes, safetensors_bytes)`` against the requirements."""
    if not items:
        raise PushRefused("a push must contain at least one generator")
    if len(items) > MAX_GENERATORS_PER_PUSH:
        raise PushRefused(f"a push may contain at most {MAX_GENERATORS_PER_PUSH} generators")
    schema_hash = req.schema.hash()
    classes = set(req.schema.classes)
    seen: set[str] = set()
    out: list[ValidatedGenerator] = []
    for i, (card_b, weights) in enumerate(items):
        where = f"generator {i}"
        try:
            card = GeneratorCard.from_json(card_b)
            if card.decoder_spec() != req.spec:
                raise ArtifactError("card's decoder spec differs from the federation's decoder spec")
        except ArtifactError as e:
            raise PushRefused(f"{where}: {e}") from None
        except (RecursionError, TypeError, ValueError, AttributeError, KeyError) as e:
            raise PushRefused(f"{where}: malformed card ({type(e).__name__})") from None
        if card.schema_hash != schema_hash:
            raise PushRefused(f"{where}: card schema hash does not match the federation's schema")
        if card.class_label not in classes:
            raise PushRefused(
                f"{where}: class {card.class_label!r} is not a class of the federation's schema"
            )
        if card.class_label in seen:
            raise PushRefused(f"{where}: two generators for class {card.class_label!r} in one push")
        seen.add(card.class_label)
        if card.epsilon > req.max_epsilon:
            raise PushRefused(
                f"{where}: ε = {card.epsilon:g} exceeds the federation's cap {req.max_epsilon:g}"
            )
        if card.delta > req.max_delta:
            raise PushRefused(f"{where}: δ = {card.delta:g} exceeds the federation's cap {req.max_delta:g}")
        try:
            verify_weights(weights, req.spec, sha256=card.weights_sha256)
        except ArtifactError as e:
            raise PushRefused(f"{where}: {e}") from None
        except (TypeError, KeyError, ValueError, AttributeError, IndexError, OverflowError) as e:
            # a syntactically valid but structurally hostile header (e.g. entries that are not
            # objects) must be a refusal, never a server error
            raise PushRefused(f"{where}: malformed safetensors header ({type(e).__name__})") from None
        out.append(ValidatedGenerator(card, bytes(card_b), weights, hashlib.sha256(card_b).hexdigest()))
    h = hashlib.sha256()
    for g in sorted(out, key=lambda g: g.card.class_label):
        h.update(g.card_sha256.encode() + g.card.weights_sha256.encode())
    return ValidatedPush(
        generators=out,
        epsilon=max(g.card.epsilon for g in out),
        delta=max(g.card.delta for g in out),
        content_hash=h.hexdigest(),
        total_bytes=sum(len(g.weights) + len(g.card_bytes) for g in out),
    )


def ledger_charge(spent: float, push_epsilon: float, budget: float) -> float:
    """New cumulative ε after a push, or :class:`PushRefused` (409) if it would exceed the budget."""
    new = spent + push_epsilon
    if new > budget + 1e-12:
        raise PushRefused(
            f"privacy budget exceeded: this silo has spent ε = {spent:g} of {budget:g}; "
            f"a push of ε = {push_epsilon:g} would take it to {new:g}",
            409,
        )
    return new
