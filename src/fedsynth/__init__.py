"""fedsynth: federated, differentially private synthetic data.

``from fedsynth import Synthesizer`` is the one-table entry point (imported on first use, so
``import fedsynth`` stays light).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Synthesizer", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Synthesizer":
        from fedsynth.generators.synthesizer import Synthesizer

        return Synthesizer
    raise AttributeError(f"module 'fedsynth' has no attribute {name!r}")
