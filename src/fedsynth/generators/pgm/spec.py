"""The ``pgm/1`` spec (what a federation fixes) and the card structure it implies.

A spec is plain data: ``bins`` (equal-width bins per continuous column, edges from the schema's
*public* bounds), the workload (``workload`` kind, ``num_3way`` random 3-way marginals drawn with
``workload_seed``), AIM's fixed number of rounds ``rounds`` and budget split ``alpha``, and the
model-size cap ``max_model_mb`` (8 bytes per cell of the junction tree's maximal cliques, AIM's
own measure). Everything derived from it — the discretised domain, the workload, the candidate
marginals — is a pure function of (schema, spec), so a reader recomputes it instead of trusting it.

Workloads (``target`` is the default because AIM with random 3-ways alone rarely measures a
marginal that touches the class, and a classifier trained on its output is near chance):

* ``"target"``: every 2-way marginal (t, a) with the target t, plus ``num_3way`` random 3-ways;
* ``"random-3way"``: ``num_3way`` random 3-ways (FLAIM's default workload);
* ``"all-2way"``: every 2-way marginal;
* ``"target-3way"``: every 3-way marginal that contains the target.

Resource bounds (a hostile spec or card must not exhaust a reader's or a silo's memory): bins,
rounds, ``num_3way`` and ``max_model_mb`` have hard caps; candidates larger than the model cap are
dropped (AIM could never select them); the candidates' answers together must fit in
:data:`MAX_CANDIDATE_CELLS`; a card's cliques are checked cell by cell and by the size of the
junction tree they induce before any tensor is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedsynth.artifacts.card import ArtifactError
from fedsynth.data.schema import Schema
from fedsynth.flaim.domain import FlaimDomain, domain_from_schema
from fedsynth.flaim.workload import Clique, all_kway, candidate_weights, random_kway, target_kway
from fedsynth.generators.base import SpecError

KIND = "pgm/1"
MODEL = "aim-pgm"
WORKLOADS = ("target", "random-3way", "all-2way", "target-3way")
INITS = ("oneway", "target-2way")
MAX_BINS = 128
MAX_ROUNDS = 200
MAX_3WAY = 512
MAX_MODEL_MB = 128.0
#: cap on the cells of all candidate answers a silo holds while running AIM (int64: 256 MB)
MAX_CANDIDATE_CELLS = 2**25
BYTES_PER_CELL = 8


@dataclass(frozen=True)
class PGMSpec:
    bins: int = 8
    workload: str = "target"
    num_3way: int = 64
    workload_seed: int = 0
    rounds: int = 10
    alpha: float = 0.9
    max_model_mb: float = 16.0
    init: str = "oneway"  # "oneway" (AIM's) or "target-2way": measure every (t, a) first
    model: str = MODEL

    def __post_init__(self) -> None:
        if self.model != MODEL:
            raise SpecError(f"unsupported pgm model {self.model!r}; only {MODEL!r}")
        if not 2 <= self.bins <= MAX_BINS:
            raise SpecError(f"bins must be in [2, {MAX_BINS}], got {self.bins}")
        if self.init not in INITS:
            raise SpecError(f"init must be one of {INITS}, got {self.init!r}")
        if self.workload not in WORKLOADS:
            raise SpecError(f"workload must be one of {WORKLOADS}, got {self.workload!r}")
        if not 0 <= self.num_3way <= MAX_3WAY:
            raise SpecError(f"num_3way must be in [0, {MAX_3WAY}], got {self.num_3way}")
        if not 0 <= self.workload_seed < 2**31:
            raise SpecError("workload_seed must be in [0, 2^31)")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise SpecError(f"rounds must be in [1, {MAX_ROUNDS}], got {self.rounds}")
        if not (math.isfinite(self.alpha) and 0.05 <= self.alpha <= 0.99):
            raise SpecError(f"alpha must be in [0.05, 0.99], got {self.alpha}")
        if not (math.isfinite(self.max_model_mb) and 0 < self.max_model_mb <= MAX_MODEL_MB):
            raise SpecError(f"max_model_mb must be in (0, {MAX_MODEL_MB}], got {self.max_model_mb}")

    @property
    def max_cells(self) -> int:
        return int(self.max_model_mb * 2**20 // BYTES_PER_CELL)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "bins": self.bins,
            "workload": self.workload,
            "num_3way": self.num_3way,
            "workload_seed": self.workload_seed,
            "rounds": self.rounds,
            "alpha": self.alpha,
            "max_model_mb": self.max_model_mb,
            "init": self.init,
        }

    @staticmethod
    def from_dict(d: Any) -> PGMSpec:
        if not isinstance(d, dict):
            raise SpecError("a pgm spec must be a JSON object")
        unknown = set(d) - set(PGMSpec().to_dict())
        if unknown:
            raise SpecError(f"unknown pgm spec fields {sorted(unknown)}")

        def as_int(k: str) -> int:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int):
                raise SpecError(f"pgm spec field {k!r} must be an integer")
            return v

        def as_float(k: str) -> float:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise SpecError(f"pgm spec field {k!r} must be a number")
            return float(v)

        try:
            return PGMSpec(
                bins=as_int("bins"),
                workload=str(d["workload"]),
                num_3way=as_int("num_3way"),
                workload_seed=as_int("workload_seed"),
                rounds=as_int("rounds"),
                alpha=as_float("alpha"),
                max_model_mb=as_float("max_model_mb"),
                init=str(d.get("init", "oneway")),
                model=str(d.get("model", MODEL)),
            )
        except KeyError as e:
            raise SpecError(f"pgm spec is missing the field {e.args[0]!r}") from None


def domain_of(schema: Schema, spec: PGMSpec) -> FlaimDomain:
    """Schema order; categoricals keep their categories, continuous columns get ``spec.bins`` bins."""
    return domain_from_schema(schema, spec.bins)


def workload_of(schema: Schema, spec: PGMSpec, dom: FlaimDomain) -> list[Clique]:
    attrs, t = dom.attrs, schema.target
    threes = random_kway(attrs, 3, spec.num_3way, spec.workload_seed) if len(attrs) >= 3 else []
    if spec.workload == "target":
        wl = target_kway(attrs, t, 2) + (threes if spec.num_3way else [])
    elif spec.workload == "random-3way":
        wl = threes if spec.num_3way else []
    elif spec.workload == "all-2way":
        wl = all_kway(attrs, 2)
    else:
        wl = target_kway(attrs, t, 3) if len(attrs) >= 3 else []
    out = list(dict.fromkeys(wl))
    if not out:
        raise SpecError(f"workload {spec.workload!r} (num_3way={spec.num_3way}) is empty for this schema")
    return out


def initial_of(schema: Schema, spec: PGMSpec, dom: FlaimDomain) -> list[Clique] | None:
    """The marginals AIM measures before its first round (None: every one-way, AIM's default)."""
    if spec.init == "oneway":
        return None
    return target_kway(dom.attrs, schema.target, 2)


def cells(sizes: dict[str, int], q: Clique) -> int:
    return math.prod(sizes[a] for a in q)


def candidates_of(schema: Schema, spec: PGMSpec) -> tuple[FlaimDomain, list[Clique], list[Clique]]:
    """(domain, workload, candidates): the workload's downward closure minus the marginals that
    alone exceed the model cap. Raises :class:`SpecError` if the spec does not fit the schema."""
    dom = domain_of(schema, spec)
    sizes = dom.sizes
    if sum(sizes.values()) > spec.max_cells:
        raise SpecError(
            f"the one-way marginals need {sum(sizes.values())} cells, over the {spec.max_model_mb} MB cap"
        )
    wl = workload_of(schema, spec, dom)
    cands = [q for q in candidate_weights(wl, dom.attrs) if cells(sizes, q) <= spec.max_cells]
    total = sum(cells(sizes, q) for q in cands) + sum(sizes.values())
    if total > MAX_CANDIDATE_CELLS:
        raise SpecError(
            f"the workload's candidate marginals need {total} cells (> {MAX_CANDIDATE_CELLS}); "
            "use fewer bins or fewer 3-way marginals"
        )
    return dom, wl, cands


def domain_structure(dom: FlaimDomain, schema: Schema) -> list[dict[str, Any]]:
    """The domain as the card states it (for readers; a loader recomputes and compares it)."""
    out: list[dict[str, Any]] = []
    for c, coder in zip(schema.columns, dom.coders, strict=True):
        e: dict[str, Any] = {"name": c.name, "size": coder.size}
        if c.kind == "continuous":
            e.update(binning="equal-width", lower=float(c.lower), upper=float(c.upper))  # type: ignore[arg-type]
        out.append(e)
    return out


def structure_of(dom: FlaimDomain, schema: Schema, cliques: list[Clique]) -> dict[str, Any]:
    return {"domain": domain_structure(dom, schema), "cliques": [list(q) for q in cliques]}


def tensor_name(i: int) -> str:
    return f"potential.{i}"


def check_structure(structure: Any, schema: Schema, spec: PGMSpec) -> tuple[FlaimDomain, list[Clique]]:
    """Validate a card's structure against (schema, spec); returns (domain, cliques).

    Refuses: a domain that differs from the recomputed one; cliques that are empty, name unknown
    attributes, repeat an attribute, are not in domain order (axis order = domain order), repeat a
    clique, leave an attribute uncovered; more cliques than AIM can measure (d + rounds); any clique
    or the induced junction tree over the spec's model cap."""
    if not isinstance(structure, dict) or set(structure) != {"domain", "cliques"}:
        raise ArtifactError("a pgm card's structure must hold exactly 'domain' and 'cliques'")
    dom = domain_of(schema, spec)
    if structure["domain"] != domain_structure(dom, schema):
        raise ArtifactError("the card's domain disagrees with the one the schema and spec define")
    raw = structure["cliques"]
    d = len(dom.attrs)
    if not isinstance(raw, list) or not 1 <= len(raw) <= d + spec.rounds:
        raise ArtifactError(f"a pgm card needs 1..{d + spec.rounds} cliques")
    pos = {a: i for i, a in enumerate(dom.attrs)}
    sizes = dom.sizes
    cliques: list[Clique] = []
    for q in raw:
        if not isinstance(q, list) or not q or not all(isinstance(a, str) for a in q):
            raise ArtifactError("every clique must be a non-empty list of attribute names")
        unknown = [a for a in q if a not in pos]
        if unknown:
            raise ArtifactError(f"clique {q[:4]} names unknown attributes {unknown[:4]}")
        if len(set(q)) != len(q):
            raise ArtifactError(f"clique {q[:4]} repeats an attribute")
        if [pos[a] for a in q] != sorted(pos[a] for a in q):
            raise ArtifactError(f"clique {q[:4]} is not in domain order")
        if cells(sizes, tuple(q)) > spec.max_cells:
            raise ArtifactError(f"clique {q[:4]} has more cells than the {spec.max_model_mb} MB cap")
        cliques.append(tuple(q))
    if len(set(cliques)) != len(cliques):
        raise ArtifactError("the card repeats a clique")
    uncovered = set(dom.attrs) - {a for q in cliques for a in q}
    if uncovered:
        raise ArtifactError(f"attributes {sorted(uncovered)[:4]} are in no clique")
    if sum(cells(sizes, q) for q in cliques) > spec.max_cells:
        raise ArtifactError(f"the cliques hold more cells than the {spec.max_model_mb} MB cap")
    from fedsynth.flaim.model import model_size_mb  # exact int arithmetic, nothing allocated

    if model_size_mb(sizes, cliques) > spec.max_model_mb * (1 + 1e-9):
        raise ArtifactError(f"the cliques' junction tree exceeds the {spec.max_model_mb} MB cap")
    return dom, cliques


__all__ = [
    "KIND",
    "MAX_BINS",
    "MAX_MODEL_MB",
    "WORKLOADS",
    "PGMSpec",
    "candidates_of",
    "check_structure",
    "domain_of",
    "structure_of",
    "tensor_name",
    "workload_of",
]
