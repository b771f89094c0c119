"""The ``fed-pgm/1`` family: a FLAIM run over the member silos produces ONE marginal model.

The artifact is the pgm family's (clique log-potentials over the public domain, exact
class-conditional sampling; :mod:`fedsynth.generators.pgm`), with ``scope = "federation"`` on the
card and the FLAIM method in the spec. Everything public — domain, workload, the target-aware
initial marginals, the candidates — is the pgm spec's pure function of (schema, spec), so every
silo and the server compute the same ones.

Default method ``flaim-da`` (:class:`~fedsynth.flaim.methods.collect.DeferredAIM`): every silo
takes part in every round (cross-silo, p = 1), so in round 1 each silo sends the exact counts of the
public candidate pool (the spec's target 2-ways plus the closure's marginals by weight per cell, up
to ``pool_cells`` cells) through the secure sum; the server then runs fixed-T AIM once on the
aggregate. Any FLAIM method can be selected with ``method`` (they use FLAIM's one-way start).

**Privacy argument.** The server's only access to the data is the secure sum of the silos' count
vectors, i.e. the count vectors of the union D of the contributing silos' rows (a data-independent
set: every silo that joined, minus those whose messages were lost). AIM on those answers is
ρ-zCDP in D (the pgm family's argument: L2 sensitivity 1 per marginal, fixed-T calibration), and
adding or removing one record of any silo changes D by that record, so every record of every
contributing silo is protected at ρ = cdp_rho(ε, δ) — the same ε per record as a per-silo pgm
generator, but the noise is added once to counts over all N rows instead of once per silo.
Trust: as for flaim-da, the server sees the exact aggregate over ≥ 2 silos and adds the noise
honestly (the secure sum hides every single silo's vector); choose ``method="flaim-sa"`` for
distributed noise shares. The claim is read off the run's ledger (flaim-da: cross-checked
against the fixed-T calibration, as for pgm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.artifacts.card import MAX_CARD_BYTES
from fedsynth.data.schema import Schema, validate_frame
from fedsynth.flaim.methods import METHODS, Context, make_method
from fedsynth.generators.base import FederationFit, GeneratorSet, SpecError, federation_delta, make_card
from fedsynth.generators.pgm.family import (
    EPS_SHAVE,
    PGMConfig,
    PGMFamily,
    claim_from_ledger,
)
from fedsynth.generators.pgm.spec import (
    PGMSpec,
    candidates_of,
    initial_of,
    structure_of,
    tensor_name,
)
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyTarget
from fedsynth.privacy.zcdp import cdp_eps

KIND = "fed-pgm/1"
#: cap on the pool a silo uploads (int64 counts: 8 bytes per cell before secure-sum framing)
MAX_POOL_CELLS = 2**20
#: the Flower/secure-sum bound adds this many σ of a Skellam share (methods with client noise)
NOISE_TAIL_SIGMAS = 40.0


@dataclass(frozen=True)
class FedPGMSpec(PGMSpec):
    method: str = "flaim-da"
    pool_cells: int = 20_000

    def __post_init__(self) -> None:
        super().__post_init__()
        # flaim-he's encrypted totals are not wired into the federation rounds (yet)
        allowed = tuple(m for m in METHODS if m != "flaim-he")
        if self.method not in allowed:
            raise SpecError(f"method must be one of {allowed}, got {self.method!r}")
        if isinstance(self.pool_cells, bool) or not 1 <= self.pool_cells <= MAX_POOL_CELLS:
            raise SpecError(f"pool_cells must be in [1, {MAX_POOL_CELLS}], got {self.pool_cells}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "method": self.method, "pool_cells": self.pool_cells}

    @staticmethod
    def from_dict(d: Any) -> FedPGMSpec:
        if not isinstance(d, dict):
            raise SpecError("a fed-pgm spec must be a JSON object")
        rest = {k: v for k, v in d.items() if k not in ("method", "pool_cells")}
        base = PGMSpec.from_dict(rest)
        method = d.get("method", "flaim-da")
        cells = d.get("pool_cells", 20_000)
        if not isinstance(method, str):
            raise SpecError("fed-pgm spec field 'method' must be a string")
        if isinstance(cells, bool) or not isinstance(cells, int):
            raise SpecError("fed-pgm spec field 'pool_cells' must be an integer")
        return FedPGMSpec(**base.__dict__, method=method, pool_cells=cells)


@dataclass(frozen=True)
class FedPGMConfig(PGMConfig):
    # the pooled table is 20× a silo's: AIM's usual T = 10 rounds pay off again (per-silo presets
    # cut T to 2-5 because a silo's few rows could not afford more measurements)
    rounds: int = 10
    method: str = "flaim-da"
    pool_cells: int = 20_000

    def spec(self) -> FedPGMSpec:
        return FedPGMSpec(**PGMConfig.spec(self).__dict__, method=self.method, pool_cells=self.pool_cells)


#: per-dataset presets: central fits of the same mechanism on the public benchmark copies at ε = 1
#: (the train split pooled, seeded noise, 2-4 seeds; LR on 5,000 class-balanced rows, test AUC;
#: docs/benchmarks.md). breast cancer, 2-ways only: 4 bins 97.97, 6 bins 97.68, 8 bins 98.65,
#: 10 bins 97.25 (4 seeds, sd ≈ 1) — noise: the SGDE benchmark (3 seeds) then gave 8 bins
#: 90.41 / 97.13 against 4 bins' 91.81 / 97.60 (acc / AUC), so 4 bins stay. adult: 8 bins 89.00,
#: 16 bins 89.38, 16 bins + 128 3-ways 89.79 (benchmark: 88.84 → 89.29), 16 bins + T = 20 89.56 (but
#: 200 s). titanic and mushroom: no setting beat the default beyond noise.
PRESETS: dict[str, dict[str, Any]] = {
    "breast_cancer": {"bins": 4, "num_3way": 0},
    "breast_cancer_sklearn": {"bins": 4, "num_3way": 0},
    "adult": {"bins": 16, "num_3way": 128},
}


def generic_claim(log: list[tuple[str, float]], rho: float, delta: float) -> PrivacyClaim:
    """A zcdp claim for a FLAIM method whose ledger mixes noise levels (voting methods, flaim-sa):
    the Gaussian / Skellam measurements and the exponential selections are each summarised as ONE
    equivalent mechanism of the same ρ (σ_eq = 1/√(2ρ_meas), ε_eq = √(8ρ_sel)), so a reader still
    recomputes ρ = ρ_meas + ρ_sel and ε from the claim alone."""
    sel = sum(a for w, a in log if "select" in w or "vote" in w)
    meas = sum(a for _, a in log) - sel
    if meas <= 0 or sel + meas > rho * (1 + 1e-9):
        raise RuntimeError(f"the ledger spends {sel + meas} of ρ = {rho}: not a valid run")
    claim = PrivacyClaim(
        mechanism="zcdp",
        epsilon=1.0,
        delta=delta,
        accountant="zcdp-ledger",
        rho=1.0,
        sigma=1.0 / math.sqrt(2 * meas),
        measurements=1,
        selections=1 if sel > 0 else 0,
        selection_epsilon=math.sqrt(8 * sel),
    )
    rho_c = max(claim.recompute_rho(), sel + meas)
    return replace(claim, rho=rho_c, epsilon=cdp_eps(rho_c, delta))


class FedPGMFamily(PGMFamily):
    kind = KIND
    name = "fed-pgm"
    scope = "federation"

    def default_config(self, dataset: str | None = None) -> FedPGMConfig:
        return FedPGMConfig(**PRESETS.get(dataset or "", {}))

    def spec_for(self, schema: Schema, config: Any = None) -> FedPGMSpec:
        spec = (config or FedPGMConfig()).spec()
        if not isinstance(spec, FedPGMSpec):
            spec = FedPGMSpec(**spec.__dict__)
        candidates_of(schema, spec)
        return spec

    def spec_from_dict(self, d: Any, schema: Schema) -> FedPGMSpec:
        spec = FedPGMSpec.from_dict(d)
        candidates_of(schema, spec)
        return spec

    def federation_fit(
        self,
        schema: Schema,
        target: PrivacyTarget,
        silos: int,
        config: Any = None,
        *,
        seed: int = 0,
        spec: Any = None,
        min_silos: int = 2,
    ) -> FederationFit:
        delta = federation_delta(target, silos, min_silos)
        cfg: FedPGMConfig = config or FedPGMConfig()
        sp = self.spec_from_dict((spec or self.spec_for(schema, cfg)).to_dict(), schema)
        dom, workload, cands = candidates_of(schema, sp)
        da = sp.method == "flaim-da"
        initial = initial_of(schema, sp, dom) if da else None
        eps = target.epsilon * (1 - EPS_SHAVE)
        ctx = Context(
            dom.sizes, workload, eps, delta, sp.rounds, 1.0,
            alpha=sp.alpha, max_model_mb=sp.max_model_mb, final_iters=cfg.iters,
            round_iters=cfg.round_iters, seed=seed,
            client_seed=seed if cfg.seeded_noise else None,
            server_seed=seed if cfg.seeded_noise else None,
            pool_cells=sp.pool_cells, initial=initial, candidates=cands if da else None,
        )  # fmt: skip
        method = make_method(sp.method, ctx)

        def encode(df: pd.DataFrame) -> np.ndarray:
            data = validate_frame(df, schema)
            # one silo may hold a single class (label skew): its rows still count in the sums
            return dom.encode(data)

        def finish(state: Any, contributors: list[int]) -> GeneratorSet:
            if len(contributors) < 2:
                raise ValueError("fewer than two silos contributed: nothing can be released")
            model = method.finish(state)
            log, rho = state.budget.log, state.budget.rho
            if da:
                n_init = len(dom.attrs) if initial is None else len(initial)
                claim = claim_from_ledger(log, rho, sp.rounds, n_init, sp.alpha, delta)
            else:
                claim = generic_claim(log, rho, delta)
            if claim.epsilon > target.epsilon:
                raise RuntimeError(f"claim ε = {claim.epsilon} exceeds the target {target.epsilon}")
            pos = {a: i for i, a in enumerate(dom.attrs)}
            cliques = sorted(model.potentials, key=lambda q: [pos[a] for a in q])
            tensors = {
                tensor_name(i): np.ascontiguousarray(model.potentials[q], dtype=np.float64)
                for i, q in enumerate(cliques)
            }
            card = make_card(
                KIND, sp, schema, None, claim, tensors,
                structure=structure_of(dom, schema, cliques), scope="federation",
            )  # fmt: skip
            if len(card.to_json()) > MAX_CARD_BYTES:
                raise SpecError(f"the card would exceed {MAX_CARD_BYTES} bytes: use fewer rounds or columns")
            gen = self.load(card, tensors, schema)
            gen.source = "federation"
            return GeneratorSet(schema, KIND, [gen])

        def sum_bound(plan: Any, max_client_rows: int) -> int:
            # counts ≤ the silo's rows; methods with client noise shares add a Skellam tail
            return int(max_client_rows + math.ceil(NOISE_TAIL_SIGMAS * float(plan.sigma)) + 1)

        def detail(state: Any) -> dict[str, Any]:
            return {
                "method": sp.method,
                "rho_used": float(state.budget.used),
                "selected": [list(q) for q in state.selected],
            }

        return FederationFit(method, encode, finish, sum_bound, detail)


FAMILY = FedPGMFamily()

__all__ = ["FAMILY", "KIND", "FedPGMConfig", "FedPGMFamily", "FedPGMSpec", "generic_claim"]
