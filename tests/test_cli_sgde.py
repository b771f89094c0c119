"""The SGDE commands end to end, and their refusals of bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from tests.conftest import make_toy

runner = CliRunner()


def flat(r) -> str:
    """Rich wraps long lines; compare on whitespace-normalised output."""
    return " ".join(r.output.split())


FAST = ["--epsilon", "1.0", "--generator", "vae"]


def train(data: Path, out: Path, *extra: str, schema: Path | None = None):  # type: ignore[no-untyped-def]
    """Invoke ``fedsynth train-generators`` on ``data`` (target ``label``); ``extra`` defaults to FAST."""
    args = ["train-generators", "--data", str(data), "--target", "label", "--out", str(out)]
    if schema is not None:
        args += ["--schema", str(schema)]
    return runner.invoke(app, [*args, *(extra or FAST)])


@pytest.fixture
def data_csv(tmp_path: Path) -> Path:
    p = tmp_path / "silo.csv"
    make_toy(400, seed=1).to_csv(p, index=False)
    return p


@pytest.fixture
def schema_json(tmp_path: Path, toy_schema) -> Path:
    p = tmp_path / "schema.json"
    p.write_text(toy_schema.to_json())
    return p


@pytest.fixture
def gens(tmp_path: Path, data_csv: Path, schema_json: Path) -> Path:
    out = tmp_path / "gens"
    r = train(data_csv, out, schema=schema_json)
    assert r.exit_code == 0, r.output
    return out


def test_train_and_sample(gens: Path, tmp_path: Path):
    manifest = json.loads((gens / "manifest.json").read_text())
    assert len(manifest["generators"]) == 2
    cards = [json.loads((gens / g["card"]).read_text()) for g in manifest["generators"]]
    assert all(0 < c["privacy"]["epsilon"] <= 1.0 and c["privacy"]["accountant"] == "rdp" for c in cards)
    assert not list(gens.glob("*encoder*"))  # only decoders leave the silo
    out = tmp_path / "syn.csv"
    r = runner.invoke(app, ["sample", "--generators", str(gens), "--rows", "300", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert len(df) == 300 and set(df.label) == {"no", "yes"}
    # refuses to overwrite
    r = runner.invoke(app, ["sample", "--generators", str(gens), "--rows", "10", "--out", str(out)])
    assert r.exit_code != 0 and "refusing to overwrite" in flat(r)
    assert len(pd.read_csv(out)) == 300


def test_other_family_and_a_mixed_pool(gens: Path, tmp_path: Path, data_csv: Path, schema_json: Path):
    pgm = tmp_path / "pgm"
    r = train(data_csv, pgm, "--epsilon", "1.0", "--generator", "pgm", schema=schema_json)
    assert r.exit_code == 0, r.output
    assert "zcdp" in flat(r) and "pgm/1" in flat(r)
    (card,) = [
        json.loads((pgm / g["card"]).read_text())
        for g in json.loads((pgm / "manifest.json").read_text())["generators"]
    ]
    assert (
        card["family"] == "pgm/1" and card["class_label"] is None and card["privacy"]["mechanism"] == "zcdp"
    )
    out = tmp_path / "mixed.csv"
    r = runner.invoke(
        app,
        ["sample", "--generators", str(gens), "--generators", str(pgm), "--rows", "400", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "from 3 generators" in flat(r) and len(pd.read_csv(out)) == 400
    r = train(data_csv, tmp_path / "x", "--generator", "nope", schema=schema_json)
    assert r.exit_code != 0 and "unknown generator family 'nope'" in flat(r) and not (tmp_path / "x").exists()


def test_inferred_schema_warns(data_csv: Path, tmp_path: Path):
    r = train(data_csv, tmp_path / "g")
    assert r.exit_code == 0, r.output
    assert "INFERRED FROM THE PRIVATE DATA" in flat(r)


def test_dp_schema_option(data_csv: Path, tmp_path: Path):
    r = train(data_csv, tmp_path / "g", "--dp-schema", "0.5", *FAST)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert m["schema"]["source"] == "dp" and m["schema"]["dp_epsilon"] == 0.5
    assert m["schema"]["dp_delta"] == 1e-6
    assert "+ DP schema" in flat(r)
    # every card carries the schema's (ε, δ): the silo's total for that generator
    from fedsynth.generators.io import read_generator_set

    _, gens = read_generator_set(tmp_path / "g")
    assert gens and all(
        g.card.schema_privacy is not None
        and (g.card.schema_privacy.epsilon, g.card.schema_privacy.delta) == (0.5, 1e-6)
        and g.card.total_epsilon == pytest.approx(g.card.epsilon + 0.5)
        for g in gens
    )
    total = max(g.card.epsilon for g in gens) + 0.5  # per-class cards: max over classes, + schema
    assert f"{total:.4f}" in flat(r)
    # a float column of integral values (age) is not marked integer: integrality is private
    assert m["schema"]["columns"][0]["name"] == "age" and m["schema"]["columns"][0]["integer"] is False


def test_declared_schema_cards_carry_no_schema_cost(gens: Path):
    from fedsynth.generators.io import read_generator_set

    _, loaded = read_generator_set(gens)
    assert all(g.card.schema_privacy is None for g in loaded)
    assert all("schema_privacy" not in p.read_text() for p in gens.glob("gen-*.json"))


@pytest.mark.parametrize(
    ("mutate", "args", "message"),
    [
        (lambda d: d.drop(columns=["label"]), [], "target column 'label' not in"),
        (lambda d: d.assign(label="no"), [], "single class"),
        (lambda d: d.assign(income=d["income"].where(d.index != 2, np.nan)), [], "missing values"),
        (lambda d: d.assign(color=d["color"].where(d.index != 2, "mauve")), [], "not in the schema"),
        (
            lambda d: d.assign(income=d["income"].astype(object).where(d.index != 2, "lots")),
            [],
            "non-numeric",
        ),
        (lambda d: d, ["--epsilon", "0"], "epsilon must be"),
        (lambda d: d, ["--epsilon", "-1"], "epsilon must be"),
        (lambda d: d, ["--delta", "1.0"], "delta must be"),
    ],
)
def test_bad_input(tmp_path: Path, schema_json: Path, mutate, args, message):
    p = tmp_path / "bad.csv"
    mutate(make_toy(200, seed=2)).to_csv(p, index=False)
    out = tmp_path / "g"
    r = train(p, out, *args, schema=schema_json)
    assert r.exit_code != 0
    assert message in flat(r)
    assert not out.exists()  # nothing half-written


def test_existing_output_untouched(tmp_path: Path, data_csv: Path, schema_json: Path):
    out = tmp_path / "g"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    r = train(data_csv, out, schema=schema_json)
    assert r.exit_code != 0 and "not empty" in flat(r)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_corrupted_and_pickled_generators_refused(gens: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in gens.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    w = bad / "gen-0.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    r = runner.invoke(
        app, ["sample", "--generators", str(bad), "--rows", "10", "--out", str(tmp_path / "x.csv")]
    )
    assert r.exit_code != 0 and "sha256" in flat(r)
    w.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    r = runner.invoke(
        app, ["sample", "--generators", str(bad), "--rows", "10", "--out", str(tmp_path / "x.csv")]
    )
    assert r.exit_code != 0
    assert not (tmp_path / "x.csv").exists()


def test_schema_mismatch_between_sets(gens: Path, tmp_path: Path, data_csv: Path):
    other = tmp_path / "other"
    r = train(data_csv, other)
    assert r.exit_code == 0
    r = runner.invoke(
        app,
        [
            "sample",
            "--generators",
            str(gens),
            "--generators",
            str(other),
            "--rows",
            "10",
            "--out",
            str(tmp_path / "x.csv"),
        ],
    )
    assert r.exit_code != 0 and "different schema" in flat(r)


def test_demo_small_federation(tmp_path: Path):
    """A whole federation: 4 silos, DP generators, FedAvg, all scenarios; JSON written."""
    out = tmp_path / "demo.json"
    r = runner.invoke(app, ["demo", "--silos", "3", "--rows", "400", "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["epsilon_spent_max"] <= 1.0
    sc = res["scenarios"]
    assert set(sc) >= {"local", "federated", "synthetic", "local_plus_synthetic", "pooled_real"}
    for name in ("local", "federated", "synthetic", "pooled_real"):
        assert isinstance(sc[name]["local_eval"]["accuracy"], float)  # the JSON layout
        assert set(res["scenarios_sd"][name]["test_eval"]) == {"accuracy", "f1", "auc"}
        auc = sc[name]["test_eval"]["auc"]
        assert 60 < auc <= 100, (name, auc)  # computed, and better than chance on breast cancer
    assert "privacy:" in flat(r) and "max ε spent" in flat(r)


def test_missing_data_directory_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FEDSYNTH_DATA", str(tmp_path / "nowhere"))
    r = runner.invoke(app, ["bench", "sgde", "--dataset", "adult", "--seeds", "1"])
    assert r.exit_code == 2 and "FEDSYNTH_DATA" in flat(r) and "Traceback" not in r.output
