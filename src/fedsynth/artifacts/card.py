"""The generator card: the JSON half of an artifact (the other half is safetensors tensors).

A card names the generator's family (a versioned kind such as ``"dp-vae/1"``) and carries its
spec, the hash of the public schema it was trained for, the class it generates (``None`` for a
joint model that carries the target itself), the family's per-artifact ``structure`` (e.g. the
cliques of a marginal model; empty for fixed-architecture nets), the privacy claim with every
parameter needed to recompute ε, and the sha256 of the tensors file. This module knows no
family: it parses and checks the card's shape only; what a spec or structure means is the
family's business (:mod:`fedsynth.generators.base`).

A card may also carry ``schema_privacy``: the (ε, δ) its silo spent estimating the schema under DP
(:mod:`fedsynth.data.dp_schema`) from the same rows the generator was trained on. The two compose
sequentially: the silo's total for this generator is ``privacy.epsilon + schema_privacy.epsilon``
(:attr:`GeneratorCard.total_epsilon`). The field is written only when present, so a card without
it has exactly the bytes (and hashes) it had before the field existed; the format is unchanged.

Cards of format ``fedsynth-decoder/1`` (before families existed: always a β-VAE decoder, a bare
(ε, δ, accountant) claim) still load: :meth:`GeneratorCard.from_json` migrates them one way to
the current format (family ``dp-vae/1``, a ``legacy`` claim).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fedsynth import jsonsafe
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyParameterError

CARD_FORMAT = "fedsynth-generator/2"
LEGACY_CARD_FORMAT = "fedsynth-decoder/1"
LEGACY_FAMILY = "dp-vae/1"
MAX_CARD_BYTES = 64 * 1024
SCOPES = ("silo", "federation")


class ArtifactError(ValueError):
    """A generator artifact is malformed, tampered with, or does not match what was expected."""


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _is_hex64(s: str) -> bool:
    return len(s) == 64 and all(ch in "0123456789abcdef" for ch in s)


def _clean_str(v: Any, what: str, n: int = 256) -> str:
    # surrogates and NUL were already refused by jsonsafe.check_json on the whole card
    if not isinstance(v, str):
        raise ArtifactError(f"card field {what!r} must be a string")
    if len(v) > n:
        raise ArtifactError(f"card field {what!r} is longer than {n} characters")
    return v


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ArtifactError(f"card field {what!r} must be a finite number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class SchemaPrivacy:
    """The (ε, δ) a silo spent estimating the (DP) schema a generator was trained for."""

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        eps = _number(self.epsilon, "schema_privacy.epsilon")
        dl = _number(self.delta, "schema_privacy.delta")
        if eps <= 0:
            raise ArtifactError(
                f"card schema_privacy.epsilon must be > 0, got {eps:g} (omit the field instead)"
            )
        if not (0 <= dl < 1):
            raise ArtifactError(f"card schema_privacy.delta must be in [0, 1), got {dl:g}")

    def to_dict(self) -> dict[str, float]:
        return {"epsilon": float(self.epsilon), "delta": float(self.delta)}

    @staticmethod
    def from_dict(d: Any) -> SchemaPrivacy:
        if not isinstance(d, dict):
            raise ArtifactError("card field 'schema_privacy' must be an object {epsilon, delta}")
        extra = sorted(set(d) - {"epsilon", "delta"})
        if extra:
            raise ArtifactError(f"card field 'schema_privacy' has unknown keys {extra}")
        if "epsilon" not in d or "delta" not in d:
            raise ArtifactError("card field 'schema_privacy' needs both 'epsilon' and 'delta'")
        return SchemaPrivacy(
            _number(d["epsilon"], "schema_privacy.epsilon"), _number(d["delta"], "schema_privacy.delta")
        )


@dataclass(frozen=True)
class GeneratorCard:
    family: str
    spec: dict[str, Any]
    schema_hash: str
    class_label: str | None
    privacy: PrivacyClaim
    weights_sha256: str
    structure: dict[str, Any] = field(default_factory=dict)
    scope: str = "silo"
    created: str = field(default_factory=_now)
    format: str = CARD_FORMAT
    library: str = "fedsynth"
    #: the DP schema estimation's cost at the pushing silo (None: the schema cost nothing)
    schema_privacy: SchemaPrivacy | None = None

    # the claim's headline numbers, for readers that need only these
    @property
    def epsilon(self) -> float:
        return self.privacy.epsilon

    @property
    def delta(self) -> float:
        return self.privacy.delta

    @property
    def accountant(self) -> str:
        return self.privacy.accountant

    # the silo's total for this generator: training plus the DP schema (sequential composition)
    @property
    def total_epsilon(self) -> float:
        sp = self.schema_privacy
        return self.privacy.epsilon + (sp.epsilon if sp is not None else 0.0)

    @property
    def total_delta(self) -> float:
        sp = self.schema_privacy
        return self.privacy.delta + (sp.delta if sp is not None else 0.0)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": self.format,
            "library": self.library,
            "family": self.family,
            "scope": self.scope,
            "spec": self.spec,
            "structure": self.structure,
            "schema_hash": self.schema_hash,
            "class_label": self.class_label,
            "privacy": self.privacy.to_dict(),
            "weights_sha256": self.weights_sha256,
            "created": self.created,
        }
        if self.schema_privacy is not None:  # only when present: older card bytes are unchanged
            d["schema_privacy"] = self.schema_privacy.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **kw: Any) -> GeneratorCard:
        from dataclasses import replace

        return replace(self, **kw)

    @staticmethod
    def from_json(text: str | bytes) -> GeneratorCard:
        if len(text) > MAX_CARD_BYTES:
            raise ArtifactError(f"card is larger than {MAX_CARD_BYTES} bytes")
        try:
            d = jsonsafe.loads(text, "card")
        except jsonsafe.JSONValueError as e:
            raise ArtifactError(str(e)) from None
        if not isinstance(d, dict):
            raise ArtifactError("card must be a JSON object")
        return GeneratorCard.from_dict(d)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GeneratorCard:
        try:  # the one boundary check: finite numbers, bounded integers, clean strings
            jsonsafe.check_json(d, "card")
        except jsonsafe.JSONValueError as e:
            raise ArtifactError(str(e)) from None
        fmt = d.get("format")
        if fmt == LEGACY_CARD_FORMAT:
            d = _migrate_legacy(d)
        elif fmt != CARD_FORMAT:
            raise ArtifactError(f"card format {fmt!r} is neither {CARD_FORMAT!r} nor {LEGACY_CARD_FORMAT!r}")
        try:
            family = _clean_str(d["family"], "family", 64)
            spec, structure = d["spec"], d.get("structure", {})
            if not isinstance(spec, dict) or not isinstance(structure, dict):
                raise ArtifactError("card 'spec' and 'structure' must be JSON objects")
            label = d.get("class_label")
            label = None if label is None else _clean_str(label, "class_label")
            scope = _clean_str(d.get("scope", "silo"), "scope", 16)
            if scope not in SCOPES:
                raise ArtifactError(f"card scope must be one of {SCOPES}, got {scope!r}")
            privacy = PrivacyClaim.from_dict(d["privacy"])
            sp_d = d.get("schema_privacy")
            schema_privacy = None if sp_d is None else SchemaPrivacy.from_dict(sp_d)
            card = GeneratorCard(
                family=family,
                spec=spec,
                schema_hash=_clean_str(d["schema_hash"], "schema_hash", 64),
                class_label=label,
                privacy=privacy,
                weights_sha256=_clean_str(d["weights_sha256"], "weights_sha256", 64),
                structure=structure,
                scope=scope,
                created=_clean_str(d.get("created", ""), "created", 64),
                library=_clean_str(d.get("library", "fedsynth"), "library", 64),
                schema_privacy=schema_privacy,
            )
        except KeyError as e:
            raise ArtifactError(f"card is missing the field {e.args[0]!r}") from None
        except PrivacyParameterError as e:
            raise ArtifactError(f"card privacy claim is invalid: {e}") from None
        except (TypeError, ValueError, OverflowError) as e:
            if isinstance(e, ArtifactError):
                raise
            raise ArtifactError(f"card has a bad field: {e}") from None
        if not _is_hex64(card.weights_sha256):
            raise ArtifactError("card weights_sha256 must be 64 lowercase hex digits")
        return card


def _migrate_legacy(d: dict[str, Any]) -> dict[str, Any]:
    """``fedsynth-decoder/1`` → current format: a β-VAE decoder card with a parameter-less claim."""
    try:
        eps, dl, acc = d["epsilon"], d["delta"], d["accountant"]
    except KeyError as e:
        raise ArtifactError(f"legacy card is missing the field {e.args[0]!r}") from None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (eps, dl)):
        raise ArtifactError("legacy card epsilon/delta must be numbers")
    if not (math.isfinite(eps) and eps > 0):
        raise ArtifactError(f"card epsilon must be a positive finite number, got {eps}")
    if not (0 < dl < 1):
        raise ArtifactError(f"card delta must be in (0, 1), got {dl}")
    return {
        "format": CARD_FORMAT,
        "family": LEGACY_FAMILY,
        "scope": "silo",
        "spec": d.get("spec"),
        "structure": {},
        "schema_hash": d.get("schema_hash"),
        "class_label": d.get("class_label"),
        "privacy": {"mechanism": "legacy", "epsilon": eps, "delta": dl, "accountant": acc},
        "weights_sha256": d.get("weights_sha256"),
        "created": d.get("created", ""),
        "library": d.get("library", "fedsynth"),
    }


__all__ = [
    "CARD_FORMAT",
    "LEGACY_CARD_FORMAT",
    "MAX_CARD_BYTES",
    "ArtifactError",
    "GeneratorCard",
    "SchemaPrivacy",
    "sha256_bytes",
]
