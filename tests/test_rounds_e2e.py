"""A federation round end to end: a real hub on 127.0.0.1, silos joining over HTTP, the fit on
Flower (in-process SuperNodes with SecAgg+), the artifact in the pool and the ledger charged."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from flwr.app import Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage

from fedsynth.data.schema import SchemaError
from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.exchange.process import RunningHub
from fedsynth.generators.base import get_family
from fedsynth.generators.pool import GeneratorPool
from fedsynth.rounds.coordinator import join, run_round
from tests.conftest_hub import start_hub
from tests.test_family_fed_pgm import SCHEMA, _silos

_names = itertools.count()
FAM = get_family("fed-pgm")
# a small, fast spec (3 AIM rounds) pinned by the round
SPEC = FAM.spec_for(SCHEMA, FAM.default_config()).to_dict() | {"rounds": 3}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    yield from start_hub("sqlite", tmp_path_factory.mktemp("rounds-e2e"))


@pytest.fixture(scope="module")
def admin(hub: RunningHub) -> Iterator[HubAdmin]:
    with HubAdmin(hub.url, hub.admin_token) as a:
        yield a


def federation(admin: HubAdmin, silos: int = 4, budget: float = 1.5) -> tuple[str, dict[str, HubClient]]:
    name = f"fr{next(_names)}"
    admin.create_federation(
        name, SCHEMA, {"fed-pgm/1": SPEC}, max_epsilon=1.5, max_delta=1e-4, silo_epsilon_budget=budget
    )
    url = str(admin._http.base_url)
    return name, {f"s{i}": HubClient(url, admin.add_silo(name, f"s{i}")) for i in range(silos)}


def _stage_drop(pid: int, stage: str):  # type: ignore[no-untyped-def]
    def drop(p: int, msg: Message) -> bool:
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
        return p == pid and cfg is not None and cfg.get("stage") == stage

    return drop


def test_round_through_hub_and_flower(admin: HubAdmin) -> None:
    fed, silos = federation(admin)
    frames = dict(zip(silos, _silos(len(silos)), strict=True))
    rnd = admin.open_round(fed, "fed-pgm", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=SPEC)
    for name, c in silos.items():
        join(c, rnd.id, frames[name], target="label")
    out = run_round(admin, fed, rnd.id, frames, seeded_noise=True)
    assert out.result.status == "done"
    (gen,) = out.generators.generators
    eps = gen.card.privacy.verify()  # ε re-derived from the card
    assert eps <= 1.0 + 1e-9 and out.report["contributors"] == [0, 1, 2, 3]
    for c in silos.values():  # every contributor charged the card's ε, nothing left reserved
        c.subscribe()
        assert c.epsilon_spent == pytest.approx(gen.card.epsilon) and c.epsilon_reserved == 0
    # one pool entry for the whole federation; every silo pulls and samples it
    c0 = silos["s0"]
    (entry,) = c0.list_pool()
    assert entry.silo is None and entry.scope == "federation" and entry.family == "fed-pgm/1"
    pool = GeneratorPool(SCHEMA, c0.pull())
    df = pool.sample(100, seed=1)
    assert len(df) == 100 and set(df["label"]) <= {"no", "yes"}
    # a second round at ε = 1 exceeds every silo's remaining 0.5: refused at join, before the
    # data is touched (the path does not exist: reading it would raise SchemaError instead)
    rnd2 = admin.open_round(fed, "fed-pgm", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=SPEC)
    with pytest.raises(HubError) as e:
        join(c0, rnd2.id, Path("/nonexistent/silo.csv"))
    assert e.value.status == 409
    admin.abort_round(fed, rnd2.id)


@pytest.mark.parametrize(
    "stage", [Stage.SETUP, Stage.COLLECT_MASKED_VECTORS], ids=["before-keys", "after-keys"]
)
def test_dropout_only_survivors_are_charged(admin: HubAdmin, stage: str) -> None:
    fed, silos = federation(admin)
    frames = dict(zip(silos, _silos(len(silos)), strict=True))
    rnd = admin.open_round(fed, "fed-pgm", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=SPEC)
    for name, c in silos.items():
        join(c, rnd.id, frames[name])
    out = run_round(admin, fed, rnd.id, frames, seeded_noise=True, drop=_stage_drop(1, stage))
    assert out.report["contributors"] == [0, 2, 3]
    assert out.generators.generators[0].card.privacy.verify() <= 1.0 + 1e-9
    spent = {}
    for name, c in silos.items():
        c.subscribe()
        spent[name] = (c.epsilon_spent, c.epsilon_reserved)
    assert spent["s1"] == (0.0, 0.0)  # dropped: released, not charged
    assert all(v[0] > 0.99 and v[1] == 0 for k, v in spent.items() if k != "s1")


def test_bad_silo_data_withdraws_and_too_few_silos_release_nothing(admin: HubAdmin) -> None:
    fed, silos = federation(admin, silos=3)
    frames = _silos(3)
    rnd = admin.open_round(fed, "fed-pgm", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=SPEC)
    with pytest.raises(SchemaError, match="target"):
        join(silos["s0"], rnd.id, frames[0].drop(columns=["label"]))
    with pytest.raises(SchemaError):
        join(silos["s1"], rnd.id, frames[1].rename(columns={"b": "bb"}))
    join(silos["s2"], rnd.id, frames[2])
    with pytest.raises(HubError) as e:  # one valid member: the round expires, nothing charged
        run_round(admin, fed, rnd.id, {"s2": frames[2]})
    assert e.value.status == 409
    assert admin.round(fed, rnd.id).status == "expired"
    for c in silos.values():
        c.subscribe()
        assert (c.epsilon_spent, c.epsilon_reserved) == (0.0, 0.0)
    assert silos["s2"].list_pool() == []


@pytest.mark.slow
def test_adult_round_on_a_local_superlink_with_20_supernodes(admin: HubAdmin, tmp_path: Path) -> None:
    """The deployment path: a real flower-superlink and 20 flower-supernode processes, each reading
    only its silo's CSV (node config ``data-path``); the artifact lands in the hub's pool."""
    import json
    import time

    from fedsynth.data.datasets import load_dataset
    from fedsynth.data.partition import equal_shares
    from fedsynth.federated.deploy import LocalDeployment
    from fedsynth.rounds.coordinator import deployment_runner

    bench = load_dataset("adult", seed=0)
    s = bench.schema
    parts = equal_shares(len(bench.train), 20, 0.05, seed=0)
    name = f"fr{next(_names)}"
    spec = FAM.spec_for(s, FAM.default_config("adult")).to_dict()
    admin.create_federation(
        name, s, {"fed-pgm/1": spec}, max_epsilon=1.5, max_delta=1e-4, silo_epsilon_budget=1.5
    )
    url = str(admin._http.base_url)
    paths = []
    rnd = admin.open_round(name, "fed-pgm", epsilon=1.0, delta=1e-6, min_silos=2, deadline_s=900, spec=spec)
    for i, p in enumerate(parts):
        path = tmp_path / f"silo{i:02d}.csv"
        bench.train.iloc[p].to_csv(path, index=False)
        paths.append(path)
        with HubClient(url, admin.add_silo(name, f"s{i:02d}")) as c:
            join(c, rnd.id, path, target=s.target)
    node_configs = [f'data-path="{p}"' for p in paths]
    with LocalDeployment(
        tmp_path / "fed", num_nodes=20, tls=False, node_auth=False, node_configs=node_configs
    ) as dep:
        t0 = time.perf_counter()
        out = run_round(admin, name, rnd.id, run_app=deployment_runner(dep, tmp_path / "app", timeout=900))
        wall = time.perf_counter() - t0
    assert out.result.status == "done" and out.report["contributors"] == list(range(20))
    assert out.generators.generators[0].card.privacy.verify() <= 1.0 + 1e-9
    (tmp_path / "timing.json").write_text(json.dumps({"wall_s": wall, **out.report}))
    print(
        f"adult round on SuperLink + 20 SuperNodes: {wall:.1f} s wall, report {out.report['seconds']:.1f} s"
    )


def test_join_cli_checks_budget_then_data(admin: HubAdmin, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedsynth.cli import app

    name = f"fr{next(_names)}"
    admin.create_federation(
        name, SCHEMA, {"fed-pgm/1": SPEC}, max_epsilon=1.0, max_delta=1e-4, silo_epsilon_budget=1.5
    )
    tok = admin.add_silo(name, "s0")
    csv = tmp_path / "silo.csv"
    _silos(1)[0].to_csv(csv, index=False)
    url = str(admin._http.base_url)

    def join_cli(rid: int, *extra: str) -> tuple[int, str]:
        res = CliRunner().invoke(app, ["join", "--hub", url, "--round", str(rid), "--token", tok, *extra])
        return res.exit_code, res.output

    rnd = admin.open_round(name, "fed-pgm", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=SPEC)
    code, text = join_cli(rnd.id, "--data", str(csv), "--target", "nope")
    assert code == 2 and "target" in text, text
    assert admin.round(name, rnd.id).members[0].status == "withdrawn"  # reservation released
    code, text = join_cli(rnd.id, "--data", str(csv), "--target", "label")
    assert code == 0 and "joined round" in text, text
    assert admin.round(name, rnd.id).members[0].status == "joined"
    admin.abort_round(name, rnd.id)
    # spend 1.0 of the 1.5 in a round, then the next round's ε = 1 exceeds the remaining 0.5: the
    # hub refuses before the (missing) data file is read
    others = {f"t{i}": HubClient(url, admin.add_silo(name, f"t{i}")) for i in range(2)}
    frames = dict(zip(["s0", *others], _silos(3), strict=True))
    frames["s0"] = pd.read_csv(csv)
    rnd = admin.open_round(name, "fed-pgm", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=SPEC)
    assert join_cli(rnd.id, "--data", str(csv))[0] == 0
    for k, c in others.items():
        join(c, rnd.id, frames[k])
    assert run_round(admin, name, rnd.id, frames, seeded_noise=True).result.status == "done"
    rnd = admin.open_round(name, "fed-pgm", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=SPEC)
    code, text = join_cli(rnd.id, "--data", str(tmp_path / "missing.csv"))
    assert code == 2 and "budget" in text.lower() and "does not exist" not in text, text
    admin.abort_round(name, rnd.id)


def test_fed_merf_round_through_hub_and_flower(admin: HubAdmin) -> None:
    """Distributed noise on Flower: every silo adds its Skellam share; SecAgg+ runs with the fit's
    threshold t; the released card's ε is re-derived by the hub and here."""
    merf = get_family("fed-merf")
    spec = merf.spec_for(SCHEMA, merf.default_config()).to_dict()
    name = f"fr{next(_names)}"
    admin.create_federation(
        name, SCHEMA, {"fed-merf/1": spec}, max_epsilon=1.5, max_delta=1e-4, silo_epsilon_budget=1.5
    )
    url = str(admin._http.base_url)
    silos = {f"s{i}": HubClient(url, admin.add_silo(name, f"s{i}")) for i in range(4)}
    frames = dict(zip(silos, _silos(4), strict=True))
    rnd = admin.open_round(name, "fed-merf", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=600, spec=spec)
    for k, c in silos.items():
        join(c, rnd.id, frames[k])
    out = run_round(admin, name, rnd.id, frames)
    (gen,) = out.generators.generators
    assert gen.card.family == "fed-merf/1" and gen.card.scope == "federation"
    assert gen.card.privacy.verify() <= 1.0 + 1e-9
    assert out.report["contributors"] == [0, 1, 2, 3]
    assert out.report["realised_variance"] >= out.report["noise_variance"] * (1 - 1e-12)
    pool = GeneratorPool(SCHEMA, silos["s0"].pull())
    yes = pool.sample(200, seed=2, class_weights={"yes": 1.0, "no": 0.0})
    assert set(yes["label"]) == {"yes"}
