"""A federation round's fit from its public run config, without Flower.

:func:`build_fit` is what the ServerApp, every ClientApp (:mod:`.fed_round`) and a silo joining
through the hub (:func:`fedsynth.rounds.coordinator.join`, which checks its table with the fit's
encoding before taking part) build from the same run config; it lives apart from the Flower apps so
that ``fedsynth join`` without ``--superlink`` loads no Flower.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedsynth.data.schema import Schema
from fedsynth.generators.base import FederationFit, get_family, is_federation_family
from fedsynth.privacy.target import PrivacyTarget

#: the file in the run's ``out`` folder where the ServerApp leaves its report for the coordinator
REPORT = "report.json"


def build_fit(cfg: Mapping[str, Any]) -> FederationFit:
    """The round's fit from its public run config (server and every client build the same one)."""
    family = get_family(str(cfg["family"]))
    if not is_federation_family(family):
        raise ValueError(f"{family.kind} is not a federation-level family")
    schema = Schema.from_dict(json.loads(str(cfg["schema-json"])))
    spec = None
    if cfg.get("spec-json"):
        spec = family.spec_from_dict(json.loads(str(cfg["spec-json"])), schema)
    conf = family.default_config(str(cfg["dataset"]) if cfg.get("dataset") else None)
    if cfg.get("seeded-noise") and hasattr(conf, "seeded_noise"):
        from dataclasses import replace

        conf = replace(conf, seeded_noise=True)
    target = PrivacyTarget(float(cfg["epsilon"]), float(cfg["delta"]))
    fit = family.federation_fit(  # type: ignore[attr-defined]
        schema, target, int(cfg["silos"]), conf, seed=int(cfg.get("seed", 0)), spec=spec,
        min_silos=int(cfg.get("min-silos", 2)),
    )  # fmt: skip
    return fit


__all__ = ["REPORT", "build_fit"]
