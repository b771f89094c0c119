"""`fedsynth audit` on the command line: outputs, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.data.schema import Column, Schema
from fedsynth.generators.base import get_family
from fedsynth.generators.vae.train import VAEConfig
from fedsynth.privacy.target import PrivacyTarget

runner = CliRunner()


def _flat(text: str) -> str:
    """Rich wraps long error lines at the terminal width; compare word sequences."""
    return " ".join(text.split())


SCHEMA = Schema(
    (
        *(Column(f"c{j}", "categorical", categories=tuple("abcde")) for j in range(6)),
        Column("age", "continuous", lower=17, upper=90, integer=True),
        Column("y", "categorical", categories=("neg", "pos")),
    ),
    "y",
)


def toy(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lat = rng.integers(0, 3, n)
    cats = np.array(list("abcde"))
    d: dict[str, object] = {
        f"c{j}": np.where(rng.random(n) < 0.5, cats[lat], rng.choice(cats, n)) for j in range(6)
    }
    d["age"] = np.clip(np.round(rng.normal(40, 12, n)), 17, 90)
    df = pd.DataFrame(d)
    df["y"] = np.where((lat == 0) ^ (rng.random(n) < 0.2), "pos", "neg")
    return df


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("audit")
    train, holdout = toy(300, 11), toy(300, 12)
    cfg = VAEConfig(hidden=(16,), latent_dim=4, epochs=5, batch_size=32, max_steps=80, min_steps=40)
    get_family("vae").fit(train, SCHEMA, PrivacyTarget(1.0, 1e-5), cfg).save(str(d / "gens"))
    train.to_csv(d / "train.csv", index=False)
    holdout.to_csv(d / "holdout.csv", index=False)
    return {"dir": d, "gens": d / "gens", "train": d / "train.csv", "holdout": d / "holdout.csv"}


def test_audit_command_writes_table_json_and_png(files: dict[str, Path]) -> None:
    out_json, out_png = files["dir"] / "r.json", files["dir"] / "roc.png"
    args = ["audit", "--generators", str(files["gens"]), "--data", str(files["train"]), "--holdout",
            str(files["holdout"]), "--target", "y", "--shadows", "1", "--canaries", "100", "--targets", "20",
            "--epochs", "3", "--json", str(out_json), "--plot", str(out_png)]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "privacy audit" in r.output and "domias-knn" in r.output and "PASS" in r.output
    rep = json.loads(out_json.read_text())
    assert rep["format"] == "fedsynth-audit/1" and rep["passed"] is True
    assert rep["claimed_epsilon"] <= 1.0 and rep["canary"]["m"] == 100
    assert {a["name"] for a in rep["membership"]["attacks"]} == {
        "domias-knn",
        "domias-kde",
        "shadow-outliers",
    }
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    # Refuses to overwrite its outputs.
    r2 = runner.invoke(app, [*args[:-4], "--canaries", "0", "--shadows", "0", "--json", str(out_json)])
    assert r2.exit_code == 2 and "already exists" in _flat(r2.output)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plot", "x.jpg"], "must be a .png"),
        (["--target", "nope"], "differs from the generator set's target"),
        (["--canaries", "10"], "canaries"),
        (["--non-private"], "only applies with --dataset"),
    ],
)
def test_audit_command_rejects_bad_input(files: dict[str, Path], extra: list[str], message: str) -> None:
    base = ["audit", "--generators", str(files["gens"]), "--data", str(files["train"]), "--holdout",
            str(files["holdout"]), "--shadows", "0", "--canaries", "0"]  # fmt: skip
    r = runner.invoke(app, [*base, *extra])
    assert r.exit_code == 2, r.output
    assert message in _flat(r.output)


def test_audit_command_needs_inputs() -> None:
    r = runner.invoke(app, ["audit"])
    assert r.exit_code == 2 and "--generators" in _flat(r.output)
    r = runner.invoke(app, ["audit", "--dataset", "adult", "--generators", "x"])
    assert r.exit_code == 2 and "either --dataset" in _flat(r.output)
