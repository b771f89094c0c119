"""A federation whose schema was estimated under DP: the silos whose rows it used are charged its
ε when added, their cards must record it, everyone else's must not (real hub on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.exchange.protocol import Requirements, schema_charge
from tests.conftest_hub import make_set, start_hub, tiny_schema, tiny_spec, vae_fams

SCHEMA_EPS, SCHEMA_DELTA = 0.5, 1e-7


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("hub-dp-schema")
    for hub in start_hub("sqlite", tmp):
        adm = HubAdmin(hub.url, hub.admin_token)
        s = tiny_schema().with_source("dp", SCHEMA_EPS, SCHEMA_DELTA)
        spec = tiny_spec(s)
        req = adm.create_federation(
            "dpf",
            s,
            vae_fams(spec),
            max_epsilon=1.5,
            max_delta=1e-5,
            silo_epsilon_budget=3.0,
            schema_silos=["a"],
        )
        yield {
            "hub": hub,
            "admin": adm,
            "req": req,
            "schema": s,
            "spec": spec,
            "a": adm.add_silo("dpf", "a"),
            "b": adm.add_silo("dpf", "b"),
        }


def test_create_federation_echoes_dp_schema_and_schema_silos(env: dict) -> None:
    req: Requirements = env["req"]
    assert req.schema_silos == ("a",)
    assert (req.schema.source, req.schema.dp_epsilon, req.schema.dp_delta) == ("dp", 0.5, 1e-7)
    assert Requirements.from_dict(req.to_dict()) == req
    assert schema_charge(req, "a") == (SCHEMA_EPS, SCHEMA_DELTA) and schema_charge(req, "b") == (0.0, 0.0)


def test_add_silo_charges_the_schema_silo(env: dict) -> None:
    with HubClient(env["hub"].url, env["a"]) as a, HubClient(env["hub"].url, env["b"]) as b:
        ra = a.subscribe()
        b.subscribe()
        assert ra.schema_silos == ("a",) and ra.schema.dp_epsilon == SCHEMA_EPS  # subscribe carries it
        assert ra.schema.dp_delta == SCHEMA_DELTA
        assert a.epsilon_spent == pytest.approx(SCHEMA_EPS)
        assert b.epsilon_spent == 0.0
    events = [e for e in env["admin"].audit("dpf") if e["action"] == "add-silo"]
    charged = {e["silo"]: e for e in events}
    assert charged["a"]["epsilon"] == pytest.approx(SCHEMA_EPS) and "DP schema" in charged["a"]["detail"]
    assert not charged["b"]["epsilon"]


def test_push_must_carry_exactly_the_charged_schema_cost(env: dict) -> None:
    s, spec = env["schema"], env["spec"]
    with HubClient(env["hub"].url, env["a"]) as a:
        with pytest.raises(HubError) as e:  # the schema silo's cards lack the schema's cost
            a.push(make_set(s, spec, epsilon=1.0, seed=1))
        assert e.value.status == 422
        assert "ε = 0" in e.value.detail and "ε = 0.5" in e.value.detail, e.value.detail
        assert "with_schema_cost" in e.value.detail
        a.subscribe()
        assert a.epsilon_spent == pytest.approx(SCHEMA_EPS)  # nothing charged by the refusal
        res = a.push(make_set(s, spec, epsilon=1.0, seed=1).with_schema_cost())
        assert not res.duplicate and res.epsilon == pytest.approx(1.0)  # the push's own cost
        a.subscribe()
        assert a.epsilon_spent == pytest.approx(SCHEMA_EPS + 1.0)
        # the pool's card records the schema's cost: its total is the silo's total
        entry = next(p for p in a.list_pool() if p.silo == "a")
        (g,) = a.pull([entry])
        assert g.card.schema_privacy is not None and g.card.total_epsilon == pytest.approx(1.5)
    with HubClient(env["hub"].url, env["b"]) as b:  # b spent nothing on the schema
        with pytest.raises(HubError) as e:
            b.push(make_set(s, spec, epsilon=1.0, seed=2).with_schema_cost())
        assert e.value.status == 422 and "ε = 0.5" in e.value.detail and "ε = 0," in e.value.detail
        b.push(make_set(s, spec, epsilon=1.0, seed=2))
        b.subscribe()
        assert b.epsilon_spent == pytest.approx(1.0)


def _create(env: dict, name: str, **kw: object) -> Requirements:
    args: dict = {"max_epsilon": 1.5, "max_delta": 1e-5, "silo_epsilon_budget": 3.0, **kw}
    return env["admin"].create_federation(
        name, args.pop("schema", env["schema"]), vae_fams(env["spec"]), **args
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "give schema_silos"),
        ({"schema_silos": ["a"], "silo_epsilon_budget": 1.9}, "could never push"),
        ({"schema_silos": ["a", "a"]}, "twice"),
        ({"schema_silos": ["bad name"]}, "silo name"),
        ({"schema_silos": ["a"], "schema": tiny_schema()}, "drop schema_silos"),
    ],
    ids=["dp-without-silos", "budget-too-small", "duplicate", "bad-name", "declared-with-silos"],
)
def test_create_federation_refusals(env: dict, kw: dict, message: str) -> None:
    with pytest.raises(HubError) as e:
        _create(env, "bad", **kw)
    assert e.value.status == 422 and message in e.value.detail, e.value.detail


def test_budget_exactly_schema_plus_cap_is_accepted(env: dict) -> None:
    req = _create(env, "tight", schema_silos=["x"], silo_epsilon_budget=2.0)
    assert req.schema_silos == ("x",)
    tok = env["admin"].add_silo("tight", "x")
    with HubClient(env["hub"].url, tok) as x:
        x.subscribe()
        assert x.epsilon_spent == pytest.approx(SCHEMA_EPS)
        x.push(make_set(env["schema"], env["spec"], epsilon=1.5, seed=5).with_schema_cost())
        x.subscribe()
        assert x.epsilon_spent == pytest.approx(2.0)


def test_cli_create_federation_and_push_stamp_the_schema_cost(tmp_path: Path) -> None:
    """``hub create-federation --schema-silo`` and ``fedsynth push``: the schema silo's pushed cards
    carry the schema's ε (stamped by the CLI), another silo's do not; the ledger adds up."""
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.exchange.process import run_hub

    runner = CliRunner()
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(tiny_schema().with_source("dp", SCHEMA_EPS, SCHEMA_DELTA).to_json())
    rng = np.random.default_rng(0)
    y = rng.choice(["no", "yes"], 300)
    df = pd.DataFrame(
        {"age": rng.uniform(0, 100, 300).round(1), "color": rng.choice(["red", "green", "blue"], 300), "y": y}
    )
    data = tmp_path / "silo.csv"
    df.to_csv(data, index=False)
    with run_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "store") as hub:
        env = {"FEDSYNTH_HUB_ADMIN_TOKEN": hub.admin_token}
        create = ["hub", "create-federation", "--hub", hub.url, "--name", "c", "--schema", str(schema_file)]
        create += ["--families", "vae", "--latent-dim", "4", "--hidden", "16", "--silo-budget", "2.5"]
        res = runner.invoke(app, create, env=env)  # a DP schema needs --schema-silo
        assert res.exit_code == 2 and "schema_silos" in res.output, res.output
        res = runner.invoke(app, [*create, "--schema-silo", "s1"], env=env)
        assert res.exit_code == 0 and "charged to s1" in " ".join(res.output.split()), res.output
        tokens = {}
        for name in ("s1", "s2"):
            res = runner.invoke(
                app, ["hub", "add-silo", "--hub", hub.url, "--federation", "c", "--name", name], env=env
            )
            assert res.exit_code == 0, res.output
            tokens[name] = res.output.strip().splitlines()[-1].strip()
        for name in ("s1", "s2"):
            push = ["push", "--hub", hub.url, "--token", tokens[name], "--data", str(data), "--target", "y"]
            res = runner.invoke(app, [*push, "--epsilon", "1.0", "--epochs", "1", "--max-steps", "10"])
            assert res.exit_code == 0 and "accepted" in res.output, res.output
        adm = HubAdmin(hub.url, hub.admin_token)
        with HubClient(hub.url, tokens["s1"]) as s1, HubClient(hub.url, tokens["s2"]) as s2:
            s1.subscribe()
            s2.subscribe()
            pool = adm.pool("c")
            push_eps = {  # a push costs the max over its per-class cards (≤ 1.0)
                n: max(e.epsilon for e in pool if e.silo == n) for n in ("s1", "s2")
            }
            assert s1.epsilon_spent == pytest.approx(SCHEMA_EPS + push_eps["s1"])
            assert s2.epsilon_spent == pytest.approx(push_eps["s2"])
            left = 2.5 - s1.epsilon_spent
            for e in pool:
                (g,) = s1.pull([e])
                want = SCHEMA_EPS if e.silo == "s1" else 0.0
                got = g.card.schema_privacy.epsilon if g.card.schema_privacy is not None else 0.0
                assert got == want, (e.silo, g.card.schema_privacy)
        # the `left` budget of `fedsynth push` already excludes the schema's ε (2.5 − 0.5 − ε_push)
        res = runner.invoke(app, [*push[:4], tokens["s1"], *push[5:], "--epsilon", "1.2"])
        assert res.exit_code == 2 and f"ε {left:g} left" in " ".join(res.output.split()), res.output
