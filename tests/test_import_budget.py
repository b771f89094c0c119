"""Import budgets: each entry point loads only the heavy modules it needs (a fresh interpreter each).

Issue 16 (lean imports): the CLI's help never loads a numerical stack; the marginal path (FLAIM's
runner, ``fedsynth flaim run --method aim``) loads neither torch nor JAX, mbi or Flower (the
numpy estimator is the default; JAX only for ``engine="mbi"``); ``fedsynth push`` / ``pull`` of a
marginal-model (pgm) pool load no torch, JAX or Flower; the hub at rest loads none of them, not
even pandas (weights are checked in numpy; frames are built only when a push is validated).
Peak RSS and wall time per command are measured in bench/bench_silo_footprint.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.exchange.process import run_hub
from tests.conftest_hub import tiny_schema, tiny_table

HEAVY = ("torch", "jax", "flwr", "pandas", "opacus", "mbi", "sklearn", "tenseal", "umap", "matplotlib")
NOT_FOR_MARGINALS = {"torch", "opacus", "jax", "mbi", "flwr", "tenseal", "umap", "matplotlib"}

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
    "res = CliRunner().invoke(app, {args!r})\n"
    "assert res.exit_code == 0, res.output\n"
)


def loaded_heavy(code: str) -> set[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = f"\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


CASES = {
    "fedsynth --help": (CLI.format(args=["--help"]), set(HEAVY)),
    "fedsynth flaim run --help": (CLI.format(args=["flaim", "run", "--help"]), set(HEAVY)),
    "fedsynth bench drift --help": (CLI.format(args=["bench", "drift", "--help"]), set(HEAVY)),
    "the marginal path (flaim runner)": ("import fedsynth.flaim.runner\n", NOT_FOR_MARGINALS | {"sklearn"}),
    "the hub at rest": (HUB, set(HEAVY)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_entry_point_stays_within_its_import_budget(name: str) -> None:
    code, forbidden = CASES[name]
    loaded = loaded_heavy(code)
    assert not loaded & forbidden, f"{name} imported {sorted(loaded & forbidden)}"


def test_flaim_run_aim_loads_no_torch_jax_or_flower(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    tiny_table(400, 0).to_csv(data, index=False)
    args = ["flaim", "run", "--method", "aim", "--epsilon", "1", "--rounds", "2", "--data", str(data)]
    loaded = loaded_heavy(CLI.format(args=[*args, "--target", "y", "--out", str(tmp_path / "s.csv")]))
    assert not loaded & NOT_FOR_MARGINALS, sorted(loaded & NOT_FOR_MARGINALS)
    assert len(pd.read_csv(tmp_path / "s.csv")) == 360  # the training split's size: it really ran


def test_push_and_pull_of_a_pgm_pool_load_no_torch_jax_or_flower(tmp_path: Path) -> None:
    runner = CliRunner()
    schema = tmp_path / "schema.json"
    schema.write_text(tiny_schema().to_json())
    with run_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "store") as hub:
        env = {"FEDSYNTH_HUB_ADMIN_TOKEN": hub.admin_token}
        fed = ["--name", "f", "--schema", str(schema), "--max-epsilon", "1", "--max-delta", "1e-4"]
        res = runner.invoke(
            app, ["hub", "create-federation", "--hub", hub.url, *fed, "--families", "pgm"], env=env
        )
        assert res.exit_code == 0, res.output
        tokens = []
        for s in ("s1", "s2"):
            res = runner.invoke(
                app, ["hub", "add-silo", "--hub", hub.url, "--federation", "f", "--name", s], env=env
            )
            assert res.exit_code == 0, res.output
            tokens.append(res.output.strip().splitlines()[-1].strip())
        data = tmp_path / "silo.csv"
        tiny_table(300, 1).to_csv(data, index=False)
        push = ["push", "--hub", hub.url, "--token", tokens[0], "--data", str(data), "--target", "y"]
        loaded = loaded_heavy(CLI.format(args=[*push, "--generator", "pgm"]))
        assert not loaded & NOT_FOR_MARGINALS, f"push imported {sorted(loaded & NOT_FOR_MARGINALS)}"
        out = tmp_path / "pool.csv"
        pull = ["pull", "--hub", hub.url, "--token", tokens[1], "--rows", "500", "--out", str(out)]
        loaded = loaded_heavy(CLI.format(args=pull))
        forbidden = NOT_FOR_MARGINALS | {"sklearn"}
        assert not loaded & forbidden, f"pull imported {sorted(loaded & forbidden)}"
        assert len(pd.read_csv(out)) == 500


def test_train_and_sample_of_a_pgm_set_load_no_torch_jax_or_flower(tmp_path: Path) -> None:
    data = tmp_path / "silo.csv"
    tiny_table(300, 2).to_csv(data, index=False)
    schema = tmp_path / "schema.json"
    schema.write_text(tiny_schema().to_json())
    gens = tmp_path / "gens"
    train = ["train-generators", "--data", str(data), "--target", "y", "--schema", str(schema)]
    loaded = loaded_heavy(CLI.format(args=[*train, "--out", str(gens), "--generator", "pgm"]))
    assert not loaded & NOT_FOR_MARGINALS, f"train-generators imported {sorted(loaded & NOT_FOR_MARGINALS)}"
    out = tmp_path / "s.csv"
    loaded = loaded_heavy(
        CLI.format(args=["sample", "--generators", str(gens), "--rows", "200", "--out", str(out)])
    )
    assert not loaded & (NOT_FOR_MARGINALS | {"sklearn"}), f"sample imported {sorted(loaded)}"
    assert len(pd.read_csv(out)) == 200
