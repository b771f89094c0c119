"""The ``fed-merf/1`` family: DP-MERF across silos (noisy mean embeddings under secure aggregation)."""

from fedsynth.generators.fed_merf.family import FAMILY, FedMerfConfig, FedMerfFamily, FedMerfGenerator
from fedsynth.generators.fed_merf.nets import MerfSpec

__all__ = ["FAMILY", "FedMerfConfig", "FedMerfFamily", "FedMerfGenerator", "MerfSpec"]
