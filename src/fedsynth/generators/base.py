"""The generator interface: what every family implements and everything else relies on.

A **family** (:class:`GeneratorFamily`, registered under a versioned ``kind`` such as
``"dp-vae/1"``) knows how to build a spec for a schema, parse one from JSON, fit generators on a
private table within a :class:`~fedsynth.privacy.target.PrivacyTarget`, name the tensors an
artifact of a given card must hold, and load a :class:`Generator` from verified tensors.

A **generator** has its :class:`~fedsynth.artifacts.card.GeneratorCard`, draws ``n`` rows (of one
class, ``condition``; a joint model whose card has no class label can draw any class) as a
DataFrame in the schema's columns, and exposes its tensors for safetensors.

Nothing outside a family's folder touches a network, a decoder or a potential table: the hub,
pools, screening, audits, evaluation and the CLI go through this module (and
:mod:`fedsynth.generators.io` for artifacts). Optional capabilities are separate protocols a
generator may implement (:class:`LogLikelihood`, used by the canary audit).

Adding a family = one folder ``generators/<name>/`` with a ``family.py`` exposing ``FAMILY`` and
one line in :data:`BUILTIN` (see docs/architecture.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from fedsynth.artifacts.card import ArtifactError, GeneratorCard, SchemaPrivacy, sha256_bytes
from fedsynth.artifacts.safetensors import Expected, tensors_to_bytes
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema, SchemaError, validate_frame
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyTarget, parallel, sequential

if TYPE_CHECKING:  # pragma: no cover - frames are only annotated here; the hub at rest loads no pandas
    import pandas as pd


class SpecError(ValueError):
    """A family spec is malformed or does not fit the schema."""


class UnknownFamilyError(ArtifactError):
    """A family kind (or alias) that no registered family implements."""


class TooFewRowsError(ValueError):
    """A class (or table) has too few rows at this silo to train a DP generator."""


class RandomStreams:
    """The random streams one sampling run shares across generators (numpy, and torch on demand),
    so a pool drawn with one seed is reproducible whatever families it mixes."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.numpy = np.random.default_rng(self.seed)
        self._torch: Any = None

    def torch(self) -> Any:
        if self._torch is None:
            import torch

            self._torch = torch.Generator().manual_seed(self.seed)
        return self._torch


def streams(seed: int | RandomStreams) -> RandomStreams:
    return seed if isinstance(seed, RandomStreams) else RandomStreams(seed)


@runtime_checkable
class Generator(Protocol):
    card: GeneratorCard
    source: str  # where it came from (a path, a hub id, "local")

    def sample(
        self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0
    ) -> pd.DataFrame: ...

    def tensors(self) -> dict[str, np.ndarray]: ...


@runtime_checkable
class LogLikelihood(Protocol):
    """Optional capability: log p(x) per row under the released generator alone."""

    def log_likelihood(self, df: pd.DataFrame, *, seed: int = 0) -> np.ndarray: ...


class FamilySpec(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class FitReport:
    """What one fitted generator's training looked like (stays at the silo; never shipped)."""

    class_label: str | None
    n_rows: int
    seconds: float
    claim: PrivacyClaim
    final_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)


class GeneratorFamily(Protocol):
    kind: str  # versioned, e.g. "dp-vae/1"
    name: str  # the short CLI name, e.g. "vae"
    # optional: "table" (default when absent), "image" or "any" — see check_modality

    def default_config(self, dataset: str | None = None) -> Any:
        """The family's config (presets per public benchmark where tuned)."""
        ...

    def spec_for(self, schema: Schema, config: Any) -> FamilySpec: ...

    def spec_from_dict(self, d: Any, schema: Schema) -> FamilySpec:
        """Parse and check a spec against the schema; raises :class:`SpecError`."""
        ...

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Expected:
        """Names, shapes and dtypes the artifact of ``card`` must hold (card spec + structure);
        raises :class:`ArtifactError` when the card's structure is invalid for the schema."""
        ...

    def fit(
        self,
        df: pd.DataFrame,
        schema: Schema,
        target: PrivacyTarget,
        config: Any = None,
        *,
        seed: int = 0,
        spec: FamilySpec | None = None,
        on_fit: Callable[[FitReport], None] | None = None,
        strict: bool = False,
    ) -> GeneratorSet: ...

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> Generator: ...


@dataclass
class FederationFit:
    """One federation-level fit as plain steps, free of transport.

    * ``encode`` — silo side: validate the silo's frame against the public schema and turn it into
      the array its client steps read (a pure function of the public schema and spec);
    * ``method`` — the :class:`~fedsynth.flaim.driver.SteppedMethod` that
      :func:`~fedsynth.flaim.driver.drive` runs: client steps return integer vectors that only ever
      reach the server through a secure sum;
    * ``finish`` — server side: the final state and the silos whose vectors are in the released
      sums → the federation's :class:`GeneratorSet` (one card, ``scope="federation"``);
    * ``sum_bound`` — the public bound on any client value of a step (for the secure sum's range),
      given the largest silo size the federation admits;
    * ``min_survivors`` — the secure sum's threshold (e.g. fed-merf's t: fewer surviving noise shares
      would carry less than the calibrated noise, so such a sum must never be unmasked).

    Participation is cross-silo: every silo takes part in every round (p = 1).
    """

    method: Any  # SteppedMethod[Any] (typed loosely: generators may not name flaim's state types)
    encode: Callable[[pd.DataFrame], np.ndarray]
    finish: Callable[[Any, list[int]], GeneratorSet]
    sum_bound: Callable[[Any, int], int]
    detail: Callable[[Any], dict[str, Any]] = field(default=lambda _state: {})
    # the fewest surviving silos a release may rest on: the runner runs SecAgg+ with this
    # reconstruction threshold, so fewer survivors cannot be unmasked at all (None: SecAgg+'s default)
    min_survivors: int | None = None


@runtime_checkable
class FederationFamily(GeneratorFamily, Protocol):
    """A family fitted across silos: statistics summed under secure aggregation, noise added once.

    ``fit`` on one table is the same family run centrally (the floor a federation run is compared
    with); ``federation_fit`` is the federated run. The target's δ must be explicit: the
    federation's total row count is not public, so the per-silo δ rule cannot be applied."""

    scope: str  # "federation"

    def federation_fit(
        self,
        schema: Schema,
        target: PrivacyTarget,
        silos: int,
        config: Any = None,
        *,
        seed: int = 0,
        spec: FamilySpec | None = None,
        min_silos: int = 2,
    ) -> FederationFit: ...


def federation_delta(target: PrivacyTarget, silos: int, min_silos: int) -> float:
    """The one check every federation fit starts with: an explicit δ (the federation's total row
    count is not public, so the per-silo δ rule cannot be applied) and at least two silos."""
    if target.delta is None:
        raise ValueError("a federation run needs an explicit δ (the federation's size is not public)")
    if silos < max(2, min_silos):
        raise ValueError(f"a federation run needs at least {max(2, min_silos)} silos, got {silos}")
    return float(target.delta)


#: what a family's generators produce: rows of a table, images (an image schema), or either
MODALITIES = ("table", "image", "any")


def family_modality(family: GeneratorFamily) -> str:
    """``family.modality`` (``"table"`` when a family does not say: every family before images)."""
    return str(getattr(family, "modality", "table"))


def check_modality(family: GeneratorFamily, schema: Schema) -> None:
    """The one rule pairing families and schemas: an image family needs an image schema and a
    tabular family a table (an image artifact pushed to a tabular federation is refused here)."""
    m = family_modality(family)
    is_image = schema.image is not None
    if m == "image" and not is_image:
        raise SpecError(f"{family.kind} generates images and needs an image schema; this schema is a table")
    if m == "table" and is_image:
        raise SpecError(
            f"{family.kind} generates table rows and does not fit an image schema {schema.image}; "
            "use an image family (conv-vae, fed-merf)"
        )


def is_federation_family(family: GeneratorFamily) -> bool:
    return getattr(family, "scope", "silo") == "federation"


def set_cost(cards: Sequence[GeneratorCard]) -> tuple[float, float]:
    """(ε, δ) of a set of generators trained at one silo on one table.

    The one place for the max-over-classes rule: per-class generators of distinct classes saw
    disjoint rows (parallel composition: the max); anything else (a joint model, two generators
    of one class) saw overlapping rows and adds up (sequential composition)."""
    labels = [c.class_label for c in cards]
    disjoint = None not in labels and len(set(labels)) == len(labels)
    claims = [(c.epsilon, c.delta) for c in cards]
    return parallel(claims) if disjoint else sequential(claims)


def schema_privacy_of(schema: Schema) -> SchemaPrivacy | None:
    """The (ε, δ) a DP-estimated schema cost (``None`` for a declared or inferred schema)."""
    if schema.source != "dp":
        return None
    return SchemaPrivacy(schema.dp_epsilon, schema.dp_delta)


@dataclass
class GeneratorSet:
    """The generators one silo fitted, with their local (never shipped) reports."""

    schema: Schema
    family: str
    generators: list[Generator]
    reports: list[FitReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # messages for classes without a generator

    @property
    def cards(self) -> list[GeneratorCard]:
        return [g.card for g in self.generators]

    @property
    def epsilon(self) -> float:
        return set_cost(self.cards)[0]

    @property
    def delta(self) -> float:
        return set_cost(self.cards)[1]

    # the silo's total: the generators' cost plus the DP schema's, as the cards record it
    # (sequential composition; every card of a set carries the same schema cost)
    @property
    def schema_cost(self) -> tuple[float, float]:
        sps = [c.schema_privacy for c in self.cards if c.schema_privacy is not None]
        return (max((s.epsilon for s in sps), default=0.0), max((s.delta for s in sps), default=0.0))

    @property
    def total_epsilon(self) -> float:
        return self.epsilon + self.schema_cost[0]

    @property
    def total_delta(self) -> float:
        return self.delta + self.schema_cost[1]

    def with_schema_cost(self) -> GeneratorSet:
        """Stamp every card with the DP cost of ``self.schema`` (a no-op unless its source is
        ``"dp"``) and return ``self``. Only the card changes: its ``weights_sha256`` is of the
        tensors, which stay as they are. Call it at the silo that spent that ε (a silo training
        on a DP schema another silo estimated spent nothing on it)."""
        sp = schema_privacy_of(self.schema)
        if sp is not None:
            for g in self.generators:
                g.card = g.card.replace(schema_privacy=sp)
        return self

    def save(self, out_dir: str, **extra: object) -> None:
        from fedsynth.generators.io import write_generator_set

        write_generator_set(out_dir, self.schema, self.generators, extra=extra)

    def as_loaded(self, source: str = "local") -> list[Generator]:
        for g in self.generators:
            g.source = source
        return list(self.generators)


def make_card(
    family: str,
    spec: FamilySpec,
    schema: Schema,
    class_label: str | None,
    claim: PrivacyClaim,
    tensors: dict[str, np.ndarray],
    *,
    structure: dict[str, Any] | None = None,
    scope: str = "silo",
) -> GeneratorCard:
    """The card of a freshly fitted generator (its sha256 is of the exact bytes that will ship)."""
    return GeneratorCard(
        family=family,
        spec=spec.to_dict(),
        schema_hash=schema.hash(),
        class_label=class_label,
        privacy=claim,
        weights_sha256=sha256_bytes(tensors_to_bytes(tensors, family)),
        structure=structure or {},
        scope=scope,
    )


def class_codes(schema: Schema, n: int, condition: str | None, rng: np.random.Generator) -> np.ndarray:
    """Class indices (int64) for ``n`` rows of a joint model: all ``condition``, or — without one —
    uniform over the schema's classes, so the model ships no class frequencies of the private data."""
    classes = schema.classes
    if condition is not None and condition not in classes:
        raise ValueError(f"{condition!r} is not a class of the schema {list(classes)}")
    if n < 0:
        raise ValueError("number of rows must be >= 0")
    if condition is None:
        return rng.integers(0, len(classes), size=n).astype(np.int64)
    return np.full(n, classes.index(condition), dtype=np.int64)


def decode_rows(
    x: np.ndarray, encoder: TableEncoder, labels: Any, rng: np.random.Generator, what: str = "generator"
) -> pd.DataFrame:
    """Encoded model output → a frame of the schema's columns with the target set to ``labels``.

    Non-finite raw output is refused here, for every neural family: finite weights can decode to
    NaN, and the hub's fixed-batch check relies on this refusal."""
    if not np.isfinite(x).all():
        raise ArtifactError(f"{what} output is not finite (NaN or infinite values)")
    part = encoder.inverse_transform(x, rng=rng)
    part[encoder.schema.target] = labels
    return part


def classes_of(g: Generator, schema: Schema) -> tuple[str, ...]:
    """The classes a generator can draw: its card's class, or every class for a joint model."""
    return schema.classes if g.card.class_label is None else (g.card.class_label,)


def check_output(g: Generator, schema: Schema, n: int = 256) -> None:
    """Draw a fixed batch per class and refuse non-finite or out-of-domain output.

    Finite weights can still decode to NaN (e.g. ±1e30 weights): every family's ``sample``
    refuses non-finite raw output, and the frame must validate against the schema."""
    for c in classes_of(g, schema):
        try:
            df = g.sample(n, condition=c, seed=0)
        except ArtifactError:
            raise
        except (ValueError, RuntimeError, FloatingPointError, OverflowError) as e:
            raise ArtifactError(f"generator failed to sample class {c!r}: {e}") from None
        if len(df) != n:
            raise ArtifactError(f"generator returned {len(df)} rows for {n} requested")
        try:
            validate_frame(df, schema)
        except SchemaError as e:
            raise ArtifactError(f"generator output is invalid: {e}") from None
        if not (df[schema.target].astype(str) == c).all():
            raise ArtifactError(f"generator asked for class {c!r} returned other classes")


#: Built-in families: kind -> module exposing ``FAMILY`` (imported on first use, so a command
#: pays only for the families it touches).
BUILTIN: dict[str, str] = {
    "dp-vae/1": "fedsynth.generators.vae.family",
    "dp-gan/1": "fedsynth.generators.gan.family",
    "pgm/1": "fedsynth.generators.pgm.family",
    "dp-diffusion/1": "fedsynth.generators.diffusion.family",
    "fed-pgm/1": "fedsynth.generators.fed_pgm.family",
    "fed-merf/1": "fedsynth.generators.fed_merf.family",
    "dp-conv-vae/1": "fedsynth.generators.conv_vae.family",
}
ALIASES: dict[str, str] = {
    "vae": "dp-vae/1",
    "gan": "dp-gan/1",
    "pgm": "pgm/1",
    "diffusion": "dp-diffusion/1",
    "fed-pgm": "fed-pgm/1",
    "fed-merf": "fed-merf/1",
    "conv-vae": "dp-conv-vae/1",
}
_REGISTERED: dict[str, GeneratorFamily] = {}


def register(family: GeneratorFamily) -> None:
    """Register a third-party family (its ``kind`` must be new)."""
    if family.kind in BUILTIN or family.kind in _REGISTERED:
        raise ValueError(f"family kind {family.kind!r} is already registered")
    _REGISTERED[family.kind] = family


def family_kinds() -> list[str]:
    """Every family kind once (built-ins are cached in the registry after their first load)."""
    return [*BUILTIN, *(k for k in _REGISTERED if k not in BUILTIN)]


def resolve_kind(name: str) -> str:
    """A kind from a kind, a short name, or a kind without its version (``dp-vae``: its one version)."""
    kind = ALIASES.get(name, name)
    if "/" not in kind:
        versions = [k for k in family_kinds() if k.split("/", 1)[0] == kind]
        if len(versions) == 1:
            kind = versions[0]
    if kind not in BUILTIN and kind not in _REGISTERED:
        raise UnknownFamilyError(
            f"unknown generator family {name!r}; known: {', '.join(family_kinds())} "
            f"(short names: {', '.join(ALIASES)})"
        )
    return kind


def get_family(name: str) -> GeneratorFamily:
    """A family by kind (``"dp-vae/1"``) or short name (``"vae"``)."""
    kind = resolve_kind(name)
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    fam: GeneratorFamily = importlib.import_module(BUILTIN[kind]).FAMILY
    _REGISTERED[kind] = fam
    return fam


__all__ = [
    "ALIASES",
    "BUILTIN",
    "FamilySpec",
    "FederationFamily",
    "FederationFit",
    "FitReport",
    "Generator",
    "GeneratorFamily",
    "GeneratorSet",
    "LogLikelihood",
    "RandomStreams",
    "SpecError",
    "TooFewRowsError",
    "UnknownFamilyError",
    "check_modality",
    "check_output",
    "class_codes",
    "classes_of",
    "decode_rows",
    "family_kinds",
    "family_modality",
    "federation_delta",
    "get_family",
    "is_federation_family",
    "make_card",
    "register",
    "resolve_kind",
    "schema_privacy_of",
    "set_cost",
    "streams",
]
