"""Import budgets: each command loads only the heavy modules it needs (a fresh interpreter each).

Issue 16 (lean imports). Every CLI command is run for real and its budget is the set of heavy
modules it must not load:

* ``import fedsynth``, every help screen, ``data verify``, the hub's admin commands (``add-silo``,
  ``open-round``, ``round-status``, ``abort-round``, ``rotate-token``, ``revoke-silo``, ``gc``) and
  the hub at rest: none of them (not even pandas);
* the marginal path — ``flaim run --method aim``, ``train-generators`` / ``sample`` / ``push`` /
  ``pull`` / ``audit`` of a pgm set, ``join`` of a fed-pgm round, ``create-federation`` for marginal
  families: no torch, Opacus, JAX, mbi, Flower, TenSEAL, UMAP or matplotlib (``pull`` and ``sample``
  no sklearn either; the numpy estimator is the default, JAX only for ``engine="mbi"``);
* ``flaim run --method flaim-sa`` (SecAgg+ is Flower's): Flower, but no torch, Opacus, JAX or mbi;
  ``flaim run --method flaim-he --secure-sum he``: TenSEAL, but no Flower, torch, Opacus, JAX or mbi;
* a torch family (``train-generators`` / ``sample`` / ``push`` of a dp-vae set): torch and Opacus
  (DP-SGD, and the accountant that re-derives the claim), but no JAX, mbi, Flower or sklearn.

``demo`` and ``bench`` run whole experiments (every family, FedAvg on Flower) and have no budget.
Peak RSS and wall time per command are measured in bench/bench_silo_footprint.py and
bench/bench_imports.py.
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
from fedsynth.exchange.client import HubAdmin
from fedsynth.exchange.process import run_hub
from fedsynth.generators.base import get_family
from tests.conftest_hub import tiny_schema, tiny_table

HEAVY = ("torch", "jax", "flwr", "pandas", "opacus", "mbi", "sklearn", "tenseal", "umap", "matplotlib")
NOT_FOR_MARGINALS = {"torch", "opacus", "jax", "mbi", "flwr", "tenseal", "umap", "matplotlib"}
NOT_FOR_SECAGG = NOT_FOR_MARGINALS - {"flwr"}
NOT_FOR_TORCH = {"jax", "mbi", "flwr", "tenseal", "umap", "matplotlib", "sklearn"}
NOTHING = set(HEAVY)

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
    "import fedsynth": ("import fedsynth\n", NOTHING),
    "fedsynth --help": (CLI.format(args=["--help"]), NOTHING),
    "fedsynth flaim run --help": (CLI.format(args=["flaim", "run", "--help"]), NOTHING),
    "fedsynth bench drift --help": (CLI.format(args=["bench", "drift", "--help"]), NOTHING),
    "the marginal path (flaim runner)": ("import fedsynth.flaim.runner\n", NOT_FOR_MARGINALS | {"sklearn"}),
    "the hub at rest": (HUB, NOTHING),
    "fedsynth data verify": (CLI.format(args=["data", "verify"]), NOTHING),
}


@pytest.mark.parametrize("name", list(CASES))
def test_entry_point_stays_within_its_import_budget(name: str) -> None:
    code, forbidden = CASES[name]
    loaded = loaded_heavy(code)
    assert not loaded & forbidden, f"{name} imported {sorted(loaded & forbidden)}"


def silo_files(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """The declared schema and a 300-row silo table, as files."""
    schema, data = tmp_path / "schema.json", tmp_path / "silo.csv"
    schema.write_text(tiny_schema().to_json())
    tiny_table(300, seed).to_csv(data, index=False)
    return schema, data


def over_budget(steps: list[tuple[str, list[str], set[str]]], env: dict[str, str] | None = None) -> list[str]:
    """Run each CLI step in a fresh interpreter, in order; the steps that loaded a forbidden module."""
    code = CLI.replace("CliRunner().invoke(app, {args!r})", "CliRunner().invoke(app, {args!r}, env={env!r})")
    bad = []
    for name, args, forbidden in steps:
        loaded = loaded_heavy(code.format(args=args, env=env or {}))
        if loaded & forbidden:
            bad.append(f"{name} imported {sorted(loaded & forbidden)}")
    return bad


def test_silo_commands_stay_within_their_budgets(tmp_path: Path) -> None:
    schema, data = silo_files(tmp_path, 2)
    hold = tmp_path / "holdout.csv"
    tiny_table(300, 3).to_csv(hold, index=False)
    train = ["train-generators", "--data", str(data), "--target", "y", "--schema", str(schema)]
    flaim = ["flaim", "run", "--epsilon", "1", "--rounds", "2", "--data", str(data), "--target", "y"]
    t = str(tmp_path)
    steps = [
        ("train-generators pgm", [*train, "--out", f"{t}/pgm", "--generator", "pgm"], NOT_FOR_MARGINALS),
        ("sample (pgm)", ["sample", "--generators", f"{t}/pgm", "--rows", "200", "--out", f"{t}/p.csv"],
         NOT_FOR_MARGINALS | {"sklearn"}),
        ("audit (pgm)", ["audit", "--generators", f"{t}/pgm", "--data", str(data), "--holdout", str(hold),
                         "--target", "y", "--json", f"{t}/audit.json"], NOT_FOR_MARGINALS),
        ("flaim run aim", [*flaim, "--method", "aim", "--out", f"{t}/aim.csv"], NOT_FOR_MARGINALS),
        ("flaim run flaim-sa", [*flaim, "--method", "flaim-sa", "--clients", "4", "--participation", "1",
                                "--split", "iid", "--out", f"{t}/sa.csv"], NOT_FOR_SECAGG),
        ("flaim run flaim-he --secure-sum he", [*flaim, "--method", "flaim-he", "--secure-sum", "he",
                                                "--clients", "4", "--participation", "1", "--split", "iid",
                                                "--out", f"{t}/he.csv"], NOT_FOR_MARGINALS - {"tenseal"}),
        ("train-generators vae", [*train, "--out", f"{t}/vae", "--generator", "vae"], NOT_FOR_TORCH),
        ("sample (vae)", ["sample", "--generators", f"{t}/vae", "--rows", "200", "--out", f"{t}/v.csv"],
         NOT_FOR_TORCH),
    ]  # fmt: skip
    assert over_budget(steps) == []
    assert len(pd.read_csv(tmp_path / "aim.csv")) == 270  # the training split's size: it really ran
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(pd.read_csv(tmp_path / "v.csv")) == 200
    assert json.loads((tmp_path / "audit.json").read_text())  # the audit ran to its report


def test_hub_commands_stay_within_their_budgets(tmp_path: Path) -> None:
    schema, data = silo_files(tmp_path, 1)
    with run_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "store") as hub:
        env = {"FEDSYNTH_HUB_ADMIN_TOKEN": hub.admin_token}
        h, f = ["--hub", hub.url], ["--federation", "f"]
        fed = ["--name", "f", "--schema", str(schema), "--max-epsilon", "1", "--max-delta", "1e-4"]
        create = ["hub", "create-federation", *h, *fed, "--families", "pgm", "--families", "fed-pgm"]
        assert over_budget([("create-federation (marginal families)", create, NOT_FOR_MARGINALS)], env) == []
        runner = CliRunner()
        tokens = []
        for s in ("s1", "s2", "s3"):
            res = runner.invoke(app, ["hub", "add-silo", *h, *f, "--name", s], env=env)
            assert res.exit_code == 0, res.output
            tokens.append(res.output.strip().splitlines()[-1].strip())
        silo = ["--data", str(data), "--target", "y"]
        round_ = ["--generator", "fed-pgm", "--epsilon", "0.5", "--delta", "1e-5", "--min-silos", "2"]
        steps = [
            ("add-silo", ["hub", "add-silo", *h, *f, "--name", "s4"], NOTHING),
            ("push pgm", ["push", *h, "--token", tokens[0], *silo, "--generator", "pgm"], NOT_FOR_MARGINALS),
            ("pull", ["pull", *h, "--token", tokens[1], "--rows", "500", "--out", str(tmp_path / "pool.csv")],
             NOT_FOR_MARGINALS | {"sklearn"}),
            ("open-round", ["hub", "open-round", *h, *f, *round_], NOTHING),
            ("round-status", ["hub", "round-status", *h, *f, "--round", "1"], NOTHING),
            ("join (fed-pgm, no SuperNode)", ["join", *h, "--round", "1", "--token", tokens[2], *silo],
             NOT_FOR_MARGINALS),
            ("abort-round", ["hub", "abort-round", *h, *f, "--round", "1"], NOTHING),
            ("rotate-token", ["hub", "rotate-token", *h, *f, "--name", "s4"], NOTHING),
            ("revoke-silo", ["hub", "revoke-silo", *h, *f, "--name", "s4"], NOTHING),
            ("gc", ["hub", "gc", "--db", hub.db_url, "--store", hub.store_dir], NOTHING),
        ]  # fmt: skip
        assert over_budget(steps, env) == []
        assert len(pd.read_csv(tmp_path / "pool.csv")) == 500
        with HubAdmin(hub.url, hub.admin_token) as adm:
            members = adm.round("f", 1).members
        assert [m.status for m in members] == ["dropped"]  # it joined; the abort released it


def test_push_of_a_torch_family_loads_no_jax_or_flower(tmp_path: Path) -> None:
    _, data = silo_files(tmp_path, 4)
    with run_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "store") as hub:
        with HubAdmin(hub.url, hub.admin_token) as adm:
            fam = get_family("vae")
            spec = fam.spec_for(tiny_schema(), fam.default_config()).to_dict()
            adm.create_federation("v", tiny_schema(), {fam.kind: spec}, max_epsilon=1.0, max_delta=1e-4)
            token = adm.add_silo("v", "s1")
        push = ["push", "--hub", hub.url, "--token", token, "--data", str(data), "--target", "y"]
        assert over_budget([("push vae", [*push, "--generator", "vae"], NOT_FOR_TORCH)]) == []
        with HubAdmin(hub.url, hub.admin_token) as adm:
            assert len(adm.pool("v")) == 2  # one decoder per class: the push really landed
