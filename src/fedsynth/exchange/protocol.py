"""The SGDE exchange protocol as plain data types and checks (no HTTP, no database).

* :class:`Requirements` — what Subscribe returns: schema, the accepted generator families (each
  with its spec), privacy caps, budget.
* :func:`validate_generator_set` — everything the hub checks about a pushed set before it
  stores a single byte: card format, family accepted, spec equal to the federation's spec for that
  family, schema hash and class labels, ε/δ caps, the privacy claim re-derived from its
  parameters, tensors that are genuine safetensors fitting the spec (never unpickled), and a fixed
  batch of output that is finite and inside the schema's domain. All of it goes through
  :func:`fedsynth.generators.io.from_artifact`; this module knows no family.
* :func:`family_spec` — the one path from a family name (+ optional spec) to a normalised spec
  (a missing spec is the family's default for the schema); federations and rounds both use it.
* :func:`check_caps` — the one ε/δ check against a federation's caps (pushes and rounds).
* :func:`ledger_charge` / :func:`check_budget` — the per-silo privacy ledger rule; ε reserved by an
  open round counts as used (spent + reserved + new ≤ budget).

Composition. Within one push, per-class generators are trained on the silo's disjoint class
subsets, so the set costs max ε and max δ over its cards (parallel composition); a joint model
costs its own claim (:func:`fedsynth.generators.base.set_cost`, the one place for that rule).
Across pushes the same records are reused, so the ledger adds pushes up (basic sequential
composition): ``ε_total = Σ_pushes ε_push`` must stay ≤ the budget the admin set for each silo.

A DP schema. A federation whose schema was estimated under DP (``schema.source == "dp"``) names
the silos whose rows the estimate used (``Requirements.schema_silos``). Those silos spent the
schema's (ε, δ) once, on the same records their generators are trained on: :func:`schema_charge`
(the one place for the rule) is what the ledger charges such a silo when it is added, and what
each of its pushed cards must record as ``schema_privacy`` (so a card's total is the silo's true
total for that generator). Any other silo, and a federation round's result, carry no schema cost.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fedsynth import jsonsafe
from fedsynth.artifacts.card import LEGACY_CARD_FORMAT, ArtifactError, GeneratorCard
from fedsynth.data.schema import Schema, SchemaError
from fedsynth.generators.base import SpecError, UnknownFamilyError, get_family, resolve_kind, set_cost
from fedsynth.generators.io import from_artifact, normalise_spec
from fedsynth.privacy.target import PrivacyParameterError

#: Names of federations and silos: short, printable, safe anywhere (they are never used as paths
#: anyway; the store is content-addressed). Always ``fullmatch``: ``$`` also matches before a
#: trailing newline, so ``"silo0\n"`` would pass and look like ``silo0``.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_GENERATORS_PER_PUSH = 256


class PushRefused(ValueError):
    """A push (or request) the hub refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.status = status


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
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
    families: dict[str, dict[str, Any]]  # accepted family kind -> its (normalised) spec
    max_epsilon: float
    max_delta: float
    silo_epsilon_budget: float
    #: accept cards with a ``legacy`` claim (format fedsynth-decoder/1: ε without the parameters
    #: to recompute it). Off by default: such a claim can only be trusted, not verified.
    allow_legacy_cards: bool = False
    #: a DP schema (``schema.source == "dp"``): the silos whose rows its estimate used; each is
    #: charged the schema's (ε, δ) when added (:func:`schema_charge`). Empty for any other schema.
    schema_silos: tuple[str, ...] = ()

    def spec(self, family: str) -> dict[str, Any]:
        kind = resolve_kind(family)
        if kind not in self.families:
            raise UnknownFamilyError(
                f"this federation does not accept family {family!r}; accepted: {', '.join(self.families)}"
            )
        return self.families[kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "federation": self.federation,
            "schema": self.schema.to_dict(),
            "schema_hash": self.schema.hash(),
            "families": [{"kind": k, "spec": v} for k, v in self.families.items()],
            "max_epsilon": self.max_epsilon,
            "max_delta": self.max_delta,
            "silo_epsilon_budget": self.silo_epsilon_budget,
            "allow_legacy_cards": self.allow_legacy_cards,
            "schema_silos": list(self.schema_silos),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Requirements:
        """Parse requirements; a legacy ``decoder_spec`` (before families) means dp-vae only."""
        try:
            fams = d.get("families")
            if fams is None and "decoder_spec" in d:
                fams = [{"kind": "dp-vae/1", "spec": d["decoder_spec"]}]
            if not isinstance(fams, list) or not fams:
                raise ValueError("'families' must be a non-empty list of {kind, spec}")
            families: dict[str, dict[str, Any]] = {}
            for f in fams:
                if not isinstance(f, dict) or not isinstance(f.get("spec"), dict):
                    raise ValueError("each family entry needs a 'kind' and a 'spec' object")
                families[str(f["kind"])] = dict(f["spec"])
            silos = d.get("schema_silos", [])
            if not isinstance(silos, list) or not all(
                isinstance(n, str) and NAME_RE.fullmatch(n) for n in silos
            ):
                raise ValueError("'schema_silos' must be a list of silo names")
            return Requirements(
                federation=str(d["federation"]),
                schema=Schema.from_dict(d["schema"]),
                families=families,
                max_epsilon=float(d["max_epsilon"]),
                max_delta=float(d["max_delta"]),
                silo_epsilon_budget=float(d["silo_epsilon_budget"]),
                allow_legacy_cards=d.get("allow_legacy_cards", False) is True,
                schema_silos=tuple(silos),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"malformed federation requirements: {e}") from None


#: (card bytes, weights, schema, accepted families' specs) -> None, or ArtifactError saying why
ArtifactCheck = Callable[[bytes, bytes, Schema, Mapping[str, dict[str, Any]]], None]
#: (family name, spec or None, schema) -> (kind, normalised spec), or ArtifactError
FamilySpec = Callable[[Any, Any, Schema], tuple[str, dict[str, Any]]]


def family_spec(name: Any, spec_d: Any, schema: Schema) -> tuple[str, dict[str, Any]]:
    """(kind, normalised spec) for a family named by kind or short name; ``spec_d`` ``None`` means
    the family's default spec for ``schema`` (``family.spec_for(schema, family.default_config())``).
    Raises :class:`ArtifactError` (unknown family, a spec that does not fit the schema)."""
    if not isinstance(name, str):
        raise ArtifactError("the family must be a string (a kind such as 'pgm/1' or a short name)")
    try:  # a spec is stored and echoed: strict JSON only (finite, bounded, clean strings)
        jsonsafe.check_str(name, "family")
        if spec_d is not None:
            jsonsafe.check_json(spec_d, "spec")
    except jsonsafe.JSONValueError as e:
        raise ArtifactError(str(e)) from None
    kind = resolve_kind(name)
    if spec_d is None:
        fam = get_family(kind)
        try:
            spec_d = fam.spec_for(schema, fam.default_config()).to_dict()
        except (SpecError, TypeError, ValueError) as e:
            raise ArtifactError(f"{kind}: its default spec does not fit the schema: {e}") from None
    try:
        return kind, normalise_spec(kind, spec_d, schema)
    except ArtifactError:
        raise
    except (TypeError, KeyError, AttributeError, ValueError, OverflowError) as e:  # a hostile spec
        raise ArtifactError(f"invalid {kind} spec: {type(e).__name__}: {e}") from None


def check_requirements(
    schema_d: Any,
    families_d: Any,
    max_epsilon: float,
    max_delta: float,
    budget: float,
    *,
    schema_silos: Any = (),
    spec: FamilySpec = family_spec,
) -> tuple[Schema, dict[str, dict[str, Any]]]:
    """Validate an admin's federation definition; every family's spec must fit the schema.

    ``families_d``: a list of ``{"kind": ..., "spec": {...}}``. ``schema_silos``: for a DP schema
    (source ``"dp"``), the silos whose rows the estimate used — required then, refused otherwise;
    the budget must then leave room for the schema's ε plus one push at the cap. ``spec``
    normalises each family's spec (:func:`family_spec`, or the hub's worker process)."""
    try:
        jsonsafe.check_json(families_d, "families")
    except jsonsafe.JSONValueError as e:
        raise PushRefused(str(e)) from None
    try:
        schema = Schema.from_dict(schema_d)
    except (SchemaError, TypeError, ValueError, AttributeError) as e:
        raise PushRefused(f"invalid schema: {e}") from None
    if not isinstance(families_d, list) or not families_d:
        raise PushRefused("families must be a non-empty list of {kind, spec} objects")
    families: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(families_d):
        if not isinstance(f, dict) or not isinstance(f.get("kind"), str):
            raise PushRefused(f"families[{i}] must be an object with a string 'kind' and a 'spec'")
        try:
            kind, normalised = spec(f["kind"], f.get("spec"), schema)
            families[kind] = normalised
        except ArtifactError as e:  # unknown family or a spec that does not fit the schema
            raise PushRefused(f"families[{i}]: {e}") from None
    for name, v in (("max_epsilon", max_epsilon), ("silo_epsilon_budget", budget)):
        if not (math.isfinite(v) and v > 0):
            raise PushRefused(f"{name} must be a positive finite number, got {v}")
    if not (0 < max_delta < 1):
        raise PushRefused(f"max_delta must be in (0, 1), got {max_delta}")
    if budget < max_epsilon:
        raise PushRefused("silo_epsilon_budget must be >= max_epsilon (else no push could ever fit)")
    check_schema_silos(schema, schema_silos, max_epsilon, budget)
    return schema, families


def check_schema_silos(schema: Schema, silos: Any, max_epsilon: float, budget: float) -> tuple[str, ...]:
    """The schema silos of a federation definition (422 naming what to do), as a tuple."""
    if not isinstance(silos, list | tuple) or not all(isinstance(n, str) for n in silos):
        raise PushRefused("schema_silos must be a list of silo names")
    names = tuple(check_name("silo", n) for n in silos)
    if len(set(names)) != len(names):
        raise PushRefused(f"schema_silos names a silo twice: {list(names)}")
    if schema.source == "dp":
        if not names:
            raise PushRefused(
                f"the schema was estimated under DP (dp_epsilon = {schema.dp_epsilon:g}): give "
                "schema_silos, the silos whose rows the estimate used (CLI: --schema-silo NAME, "
                "repeatable), so the hub can charge them its ε"
            )
        if budget < schema.dp_epsilon + max_epsilon - 1e-12:
            raise PushRefused(
                f"silo_epsilon_budget {budget:g} < the DP schema's ε {schema.dp_epsilon:g} + "
                f"max_epsilon {max_epsilon:g}: a schema silo, charged the schema's ε when added, "
                "could never push; raise the budget or lower max_epsilon"
            )
    elif names:
        raise PushRefused(
            f"schema_silos is only for a schema estimated under DP (source 'dp'); this schema's "
            f"source is {schema.source!r}: drop schema_silos"
        )
    return names


def schema_charge(req: Requirements, silo: str | None) -> tuple[float, float]:
    """The (ε, δ) the ledger charges ``silo`` for the federation's schema (once, when the silo is
    added) — the schema's DP cost for a silo whose rows the estimate used, (0, 0) otherwise. The
    same numbers are what that silo's pushed cards must record as ``schema_privacy``."""
    s = req.schema
    if s.source == "dp" and silo is not None and silo in req.schema_silos:
        return s.dp_epsilon, s.dp_delta
    return 0.0, 0.0


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


def check_caps(req: Requirements, epsilon: float, delta: float, where: str) -> None:
    """The federation's per-generator caps: ε ≤ max ε and δ ≤ max δ (422 naming ``where``)."""
    if epsilon > req.max_epsilon:
        raise PushRefused(
            f"{where}: ε = {epsilon:g} exceeds the federation's cap {req.max_epsilon:g} "
            "(epsilon > max_epsilon)"
        )
    if delta > req.max_delta:
        raise PushRefused(
            f"{where}: δ = {delta:g} exceeds the federation's cap {req.max_delta:g} (delta > max_delta)"
        )


def check_artifact(
    card: bytes, weights: bytes, schema: Schema, families: Mapping[str, dict[str, Any]]
) -> None:
    """The checks of one pushed generator that run its family's code (for the neural families:
    torch): the privacy claim's ε re-derived from its parameters (``PrivacyClaim.verify``; the
    DP-SGD accountants are Opacus'), then the artifact verified, loaded and a fixed batch
    sampled (``from_artifact(check=True)``). Legacy cards (no parameters) skip the first; the
    caller decides whether they are allowed.

    A syntactically valid but structurally hostile artifact must be a refusal, never a server
    error: whatever it raises becomes an :class:`ArtifactError` naming the exception. The hub
    runs this in a worker process (:mod:`fedsynth.exchange.hub.checker`)."""
    try:
        parsed = GeneratorCard.from_json(card)
        if parsed.privacy.mechanism != "legacy":
            try:
                parsed.privacy.verify()  # the hub re-derives ε from the claim's parameters
            except PrivacyParameterError as e:
                raise ArtifactError(f"privacy claim refused: {e}") from None
        from_artifact(parsed, weights, schema, required=families, check=True)
    except ArtifactError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise ArtifactError(f"malformed artifact ({type(e).__name__}: {e})") from None


def validate_generator_set(
    req: Requirements,
    items: list[tuple[bytes, bytes]],
    *,
    scope: str = "silo",
    schema_cost: tuple[float, float] = (0.0, 0.0),
    check: ArtifactCheck = check_artifact,
) -> ValidatedPush:
    """Check a pushed set of ``(card_json_bytes, safetensors_bytes)`` against the requirements.

    ``scope``: what the upload is — a silo's push takes ``"silo"`` cards only, a federation
    round's result ``"federation"`` cards only (a card may not claim to be something it is not
    in the pool). ``schema_cost``: the (ε, δ) the ledger charged the pushing silo for the
    federation's DP schema (:func:`schema_charge`); every card's ``schema_privacy`` must record
    exactly that (none when it is (0, 0), as for every federation round's result). ``check``
    runs each artifact's output check (:func:`check_artifact`, or the hub's worker process)."""
    if not items:
        raise PushRefused("a push must contain at least one generator")
    if len(items) > MAX_GENERATORS_PER_PUSH:
        raise PushRefused(f"a push may contain at most {MAX_GENERATORS_PER_PUSH} generators")
    seen: set[tuple[str, str | None]] = set()
    out: list[ValidatedGenerator] = []
    for i, (card_b, weights) in enumerate(items):
        where = f"generator {i}"
        try:
            card = GeneratorCard.from_json(card_b)
        except ArtifactError as e:
            raise PushRefused(f"{where}: {e}") from None
        except (RecursionError, TypeError, ValueError, AttributeError, KeyError) as e:
            raise PushRefused(f"{where}: malformed card ({type(e).__name__})") from None
        try:
            kind = resolve_kind(card.family)
        except UnknownFamilyError:
            raise PushRefused(
                f"{where}: unknown generator family {card.family!r}; this federation accepts "
                f"{', '.join(req.families)}"
            ) from None
        if card.scope != scope:
            raise PushRefused(f"{where}: card scope {card.scope!r}, but this upload takes {scope!r} cards")
        key = (kind, card.class_label)
        if key in seen:
            raise PushRefused(f"{where}: two {kind} generators for class {card.class_label!r} in one push")
        seen.add(key)
        # the caps are checked before any tensor is parsed or model built (cheap refusals first)
        check_caps(req, card.epsilon, card.delta, where)
        check_schema_cost(card, schema_cost, where)
        if card.privacy.mechanism == "legacy" and not req.allow_legacy_cards:
            raise PushRefused(
                f"{where}: legacy card (format {LEGACY_CARD_FORMAT}): its privacy claim carries "
                "no parameters, so the hub cannot recompute its ε. Retrain with the current "
                "fedsynth (its cards record mechanism, noise, sample rate, steps, accountant) and "
                "push again, or ask the admin for a federation created with allow_legacy_cards"
            )
        # the claim's ε re-derived, then the artifact loaded and its output checked
        try:
            check(bytes(card_b), weights, req.schema, req.families)
        except ArtifactError as e:
            raise PushRefused(f"{where}: {e}") from None
        out.append(ValidatedGenerator(card, bytes(card_b), weights, hashlib.sha256(card_b).hexdigest()))
    h = hashlib.sha256()
    for g in sorted(out, key=lambda g: (g.card.family, g.card.class_label or "")):
        h.update(g.card_sha256.encode() + g.card.weights_sha256.encode())
    eps, dl = set_cost([g.card for g in out])
    return ValidatedPush(
        generators=out,
        epsilon=eps,
        delta=dl,
        content_hash=h.hexdigest(),
        total_bytes=sum(len(g.weights) + len(g.card_bytes) for g in out),
    )


def check_schema_cost(card: GeneratorCard, charged: tuple[float, float], where: str) -> None:
    """422 unless the card's ``schema_privacy`` is what the ledger charged for the schema."""
    sp = card.schema_privacy
    got = (sp.epsilon, sp.delta) if sp is not None else (0.0, 0.0)
    if all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) for a, b in zip(got, charged, strict=True)):
        return
    if charged[0] > 0:
        hint = (
            "this silo's rows were used to estimate the federation's DP schema: stamp its cost on "
            "every card (GeneratorSet.with_schema_cost(); `fedsynth push` does it) and push again"
        )
    else:
        hint = "this upload spent nothing on the schema: push cards without schema_privacy"
    raise PushRefused(
        f"{where}: the card records a schema cost of ε = {got[0]:g}, δ = {got[1]:g}, but the hub's "
        f"ledger charged this silo ε = {charged[0]:g}, δ = {charged[1]:g} for the schema; {hint}"
    )


def check_budget(spent: float, reserved: float, need: float, budget: float, what: str) -> None:
    """409 unless ``spent + reserved + need ≤ budget``: ε held by an open round (``reserved``) is
    as unavailable as ε already spent, so one budget cannot be promised twice."""
    left = budget - spent - reserved
    if need > left + 1e-12:
        raise PushRefused(
            f"privacy budget exceeded: this silo has ε = {max(left, 0.0):g} left of {budget:g} "
            f"(spent ε = {spent:g}, reserved {reserved:g} by open rounds); {what} needs ε = {need:g} "
            f"({spent:g} + {reserved:g} + {need:g} > budget {budget:g})",
            409,
        )


def ledger_charge(spent: float, push_epsilon: float, budget: float, reserved: float = 0.0) -> float:
    """New cumulative ε after a push, or :class:`PushRefused` (409) if spent + reserved + ε would
    exceed the budget."""
    check_budget(spent, reserved, push_epsilon, budget, "a push")
    return spent + push_epsilon
