"""The ``fed-pgm/1`` family: one AIM marginal model for the whole federation (FLAIM over the silos)."""

from fedsynth.generators.fed_pgm.family import FAMILY, FedPGMConfig, FedPGMFamily, FedPGMSpec

__all__ = ["FAMILY", "FedPGMConfig", "FedPGMFamily", "FedPGMSpec"]
