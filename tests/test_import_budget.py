"""Import budgets: each entry point loads only the heavy modules it needs (a fresh interpreter each).

A first set of budgets for issue 16 (lean imports), pinned at what the code does today so a
regression fails: the CLI's help never loads a numerical stack; the marginal path (FLAIM's
runner) never loads torch, Opacus or TenSEAL; the hub at rest never loads torch, JAX or Flower.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "jax", "flwr", "pandas", "opacus", "mbi", "sklearn", "tenseal", "umap", "matplotlib")

HUB = (
    "import tempfile\n"
    "from fedsynth.exchange.hub.app import create_app\n"
    "from fedsynth.exchange.hub.settings import HubSettings\n"
    "d = tempfile.mkdtemp()\n"
    "create_app(HubSettings(f'sqlite:///{d}/h.db', d + '/s', 'x' * 64))\n"
)
CLI = (
    "from typer.testing import CliRunner\n"
    "from fedsynth.cli import app\n"
    "assert CliRunner().invoke(app, {args!r}).exit_code == 0\n"
)

CASES = {
    "fedsynth --help": (CLI.format(args=["--help"]), set(HEAVY)),
    "fedsynth flaim run --help": (CLI.format(args=["flaim", "run", "--help"]), set(HEAVY)),
    "fedsynth bench drift --help": (CLI.format(args=["bench", "drift", "--help"]), set(HEAVY)),
    "the marginal path (flaim runner)": (
        "import fedsynth.flaim.runner\n",
        {"torch", "opacus", "tenseal", "umap", "matplotlib", "sklearn"},
    ),
    "the hub at rest": (HUB, set(HEAVY) - {"pandas"}),  # pandas: issue 16 will take it out
}


@pytest.mark.parametrize("name", list(CASES))
def test_entry_point_stays_within_its_import_budget(name: str) -> None:
    code, forbidden = CASES[name]
    probe = f"\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & forbidden, f"{name} imported {sorted(loaded & forbidden)}"
