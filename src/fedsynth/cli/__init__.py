"""``fedsynth`` command line. Each module below registers its commands on :mod:`fedsynth.cli.app`."""

from __future__ import annotations

import importlib

from fedsynth.cli.app import app

# Optional command groups: a module that is not there (yet) simply adds no commands.
for _mod in ("sgde", "drift", "hub", "flaim", "audit", "rounds", "join", "store", "tokens"):
    try:
        importlib.import_module(f"fedsynth.cli.{_mod}")
    except ModuleNotFoundError as _e:  # pragma: no cover - only while a group is absent
        if _e.name != f"fedsynth.cli.{_mod}":
            raise

__all__ = ["app"]
