"""The package layout is the architecture: no import runs from a lower layer back up.

Layers, bottom up (docs/architecture.md): a package may import only packages of strictly lower
layers — including imports inside functions, which is where a back-edge would hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fedsynth"
LAYERS: dict[str, int] = {
    "jsonsafe": -1,  # the one strict JSON check of untrusted input: no fedsynth imports at all
    "privacy": 0,  # accountants, claims, targets: no fedsynth imports at all
    "data": 0,  # schema, encoders, datasets, partitions
    "secagg": 1,  # the secure-sum contract and its implementations
    "artifacts": 2,  # card + safetensors, family-agnostic
    "flaim": 3,  # AIM's select / measure / generate as plain functions
    "generators": 4,  # the family interface and the families
    "federated": 5,  # Flower apps (thin adapters)
    "audit": 5,  # privacy audits, poisoning screen
    "exchange": 5,  # the hub and its client (thin adapters)
    "rounds": 6,  # federation rounds: the hub's round API + a Flower run (coordinator)
    "evaluation": 7,  # experiments, metrics, baselines
    "cli": 8,  # parse, call, print
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedsynth."):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.module == "fedsynth":  # from fedsynth import x
            out += [(node.lineno, f"fedsynth.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("fedsynth.")]
    return out


def _package(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def test_every_package_has_a_layer():
    pkgs = {_package(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert pkgs <= set(LAYERS), f"packages without a layer: {sorted(pkgs - set(LAYERS))}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_runs_back_up(path: Path):
    pkg = _package(path)
    if pkg == "__init__":
        return
    bad = [
        f"{path.relative_to(SRC)}:{line} imports {mod}"
        for line, mod in _imports(path)
        if (tgt := mod.split(".")[1]) != pkg and LAYERS.get(tgt, 99) >= LAYERS[pkg]
    ]
    assert not bad, "\n".join(bad)


def test_the_check_can_fail(tmp_path: Path):
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from fedsynth.cli.app import app\n")
    assert _imports(p) == [(2, "fedsynth.cli.app")]
