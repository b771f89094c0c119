"""Federation rounds through a real hub (uvicorn on 127.0.0.1), on SQLite and PostgreSQL.

The runner's Flower computation is not under test here: a round's result is a pgm/1 artifact
fitted on a small table and re-carded with ``scope="federation"`` (what a federation family's
server writes), posted as the runner would. What is under test is the hub's coordination: states,
the reservation rule, the ledger, the one-round-at-a-time rule, refusals that change nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fedsynth.data.schema import Column, Schema
from fedsynth.exchange.client import HubAdmin, HubClient, HubError, RoundInfo
from fedsynth.exchange.process import RunningHub
from fedsynth.generators.base import GeneratorSet, get_family, make_card
from fedsynth.generators.io import to_artifact
from fedsynth.generators.pgm.family import PGMConfig
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget
from tests.conftest import make_toy
from tests.conftest_hub import BACKENDS, make_set, start_hub, tiny_spec

PGM_CFG = PGMConfig(bins=4, rounds=2, iters=50, round_iters=20)
SCHEMA = Schema(
    (
        Column("age", "continuous", lower=18, upper=90, integer=True),
        Column("income", "continuous", lower=0.0, upper=200.0),
        Column("color", "categorical", categories=("red", "green", "blue")),
        Column("label", "categorical", categories=("no", "yes")),
    ),
    target="label",
)
PGM_SPEC = get_family("pgm").spec_for(SCHEMA, PGM_CFG).to_dict()
VAE_SPEC = tiny_spec(SCHEMA)
_names = itertools.count()


@functools.lru_cache(maxsize=8)
def silo_fit(epsilon: float = 1.0, delta: float = 1e-5, seed: int = 0) -> GeneratorSet:
    """A pgm/1 joint model as one silo would fit it (card scope "silo")."""
    return get_family("pgm").fit(
        make_toy(400, seed=seed), SCHEMA, PrivacyTarget(epsilon, delta), PGM_CFG, seed=seed
    )


def federation_scope(gs: GeneratorSet) -> GeneratorSet:
    """The same model carded as a federation round's artifact: ``make_card(..., scope="federation")``
    with the claim, structure and tensors unchanged (so the hub re-derives the same ε)."""
    fam = get_family(gs.family)
    out = []
    for g in gs.generators:
        c = g.card
        spec = fam.spec_from_dict(c.spec, SCHEMA)
        card = make_card(
            c.family,
            spec,
            SCHEMA,
            c.class_label,
            c.privacy,
            g.tensors(),
            structure=c.structure,
            scope="federation",
        )
        out.append(fam.load(card, g.tensors(), SCHEMA))
    return GeneratorSet(SCHEMA, gs.family, out)


def round_result(epsilon: float = 1.0, delta: float = 1e-5) -> GeneratorSet:
    return federation_scope(silo_fit(epsilon, delta))


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    yield from start_hub(request.param, tmp_path_factory.mktemp(f"rounds-{request.param}"))


@pytest.fixture(scope="module")
def admin(hub: RunningHub) -> Iterator[HubAdmin]:
    with HubAdmin(hub.url, hub.admin_token) as adm:
        yield adm


def new_federation(
    admin: HubAdmin, silos: int = 3, *, budget: float = 3.0, max_epsilon: float = 1.5
) -> tuple[str, dict[str, HubClient]]:
    """A fresh federation (pgm and a tiny vae accepted for pushes) and its silos' clients."""
    name = f"fed{next(_names)}"
    fams = {"pgm/1": PGM_SPEC, "dp-vae/1": VAE_SPEC.to_dict()}
    admin.create_federation(
        name, SCHEMA, fams, max_epsilon=max_epsilon, max_delta=1e-4, silo_epsilon_budget=budget
    )
    url = str(admin._http.base_url)
    return name, {f"s{i}": HubClient(url, admin.add_silo(name, f"s{i}")) for i in range(silos)}


def ledger(c: HubClient) -> tuple[float, float]:
    c.subscribe()
    return c.epsilon_spent, c.epsilon_reserved


def open_pgm(admin: HubAdmin, fed: str, **kw: object) -> RoundInfo:
    args: dict = {"epsilon": 1.0, "delta": 1e-5, "min_silos": 2, "deadline_s": 600, "spec": PGM_SPEC, **kw}
    return admin.open_round(fed, "pgm", **args)


def refused(fn, *a: object, **kw: object) -> HubError:  # type: ignore[no-untyped-def]
    with pytest.raises(HubError) as e:
        fn(*a, **kw)
    return e.value


def status_of(fn, *a: object) -> int:  # type: ignore[no-untyped-def]
    try:
        fn(*a)
        return 200
    except HubError as e:
        return e.status


def blobs(hub: RunningHub) -> set[Path]:
    return {p for p in (Path(hub.store_dir) / "blobs").rglob("*") if p.is_file()}


# ---------------------------------------------------------------- the happy path
def test_open_join_start_result_charges_contributors(hub: RunningHub, admin: HubAdmin) -> None:
    fed, silos = new_federation(admin)
    r = open_pgm(admin, fed)
    assert (r.status, r.family, r.spec, r.min_silos) == ("open", "pgm/1", PGM_SPEC, 2)
    assert (r.epsilon, r.delta, r.members, r.membership) == (1.0, 1e-5, (), None)
    assert r.deadline > datetime.now(UTC) + timedelta(seconds=590)
    for name in ("s0", "s1", "s2"):
        j = silos[name].join_round(r.id)
        # everything the silo needs before reading its data
        assert (j.id, j.family, j.spec, j.epsilon, j.delta, j.status) == (
            r.id,
            "pgm/1",
            PGM_SPEC,
            1.0,
            1e-5,
            "open",
        )
        assert j.table_schema.hash() == SCHEMA.hash() and j.membership and j.membership.status == "joined"
    again = silos["s0"].join_round(r.id)  # idempotent: one membership, one reservation
    assert len(again.members) == 3 and ledger(silos["s0"]) == (0.0, 1.0)

    started = admin.start_round(fed, r.id)
    assert started.status == "running"
    assert [(m.silo, m.partition_id) for m in started.members] == [("s0", 0), ("s1", 1), ("s2", 2)]
    mine = silos["s1"].round(r.id)  # a silo sees every member's name but only its own partition id
    assert mine.partition_id == 1 and [m.partition_id for m in mine.members] == [None, 1, None]
    assert mine.report is None

    report = {"bytes_per_silo": {"0": 1234, "1": 1180}, "noise_sigma": 9.5, "seconds": 3.2}
    gs = round_result()
    done = admin.post_round_result(fed, r.id, gs, contributors=[0, 1], report=report)  # s2 dropped out
    assert done.status == "done" and len(done.generator_ids) == 1 and done.push_id is not None
    assert done.report == report
    assert {m.silo: m.status for m in done.members} == {
        "s0": "contributed",
        "s1": "contributed",
        "s2": "dropped",
    }
    eps = gs.epsilon
    assert ledger(silos["s0"]) == (pytest.approx(eps), 0.0) and ledger(silos["s1"]) == (
        pytest.approx(eps),
        0.0,
    )
    assert ledger(silos["s2"]) == (0.0, 0.0)  # the dropped member is released, not charged

    # the pool: one federation generator, no single silo; a silo pulls and samples it
    (entry,) = [e for e in silos["s2"].list_pool() if e.round_id == r.id]
    assert (entry.silo, entry.scope, entry.family, entry.class_label) == (None, "federation", "pgm/1", None)
    assert entry.id == done.generator_ids[0] and entry.push_id == done.push_id
    assert entry in silos["s0"].list_pool(exclude_silos=["s0", "s1", "s2"])
    (g,) = silos["s2"].pull([entry])
    assert g.card.scope == "federation" and g.card.weights_sha256 == gs.cards[0].weights_sha256
    df = GeneratorPool(SCHEMA, [g]).sample(200, seed=0)
    assert len(df) == 200 and set(df["label"]) <= {"no", "yes"}

    events = {(e["action"], e["silo"]) for e in admin.audit(fed) if e["outcome"] == "ok"}
    assert {
        ("round-open", None),
        ("round-join", "s0"),
        ("round-start", None),
        ("round-result", None),
    } <= events
    assert {("round-charge", "s0"), ("round-charge", "s1")} <= events and ("round-charge", "s2") not in events

    # done is final: a second result is refused; the next round may open now
    err = refused(admin.post_round_result, fed, r.id, gs, contributors=[0, 1])
    assert err.status == 409 and "done" in err.detail
    assert open_pgm(admin, fed).status == "open"

    page = httpx.get(
        f"{hub.url}/dashboard?federation={fed}", headers={"Authorization": f"Bearer {hub.admin_token}"}
    )
    assert page.status_code == 200 and "(federation round" in page.text and "Federation rounds" in page.text


def test_default_spec_is_the_familys_default_for_the_schema(admin: HubAdmin) -> None:
    fed, _ = new_federation(admin, silos=0)
    fam = get_family("pgm")
    r = admin.open_round(fed, "pgm/1", epsilon=1.0, delta=1e-5, min_silos=2, deadline_s=60)
    assert r.spec == fam.spec_for(SCHEMA, fam.default_config()).to_dict()
    admin.abort_round(fed, r.id)


# ---------------------------------------------------------------- budget: reservation rule
def test_join_refused_without_budget_reserves_nothing(admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=2, budget=1.5)
    poor = silos["s0"]
    poor.push(make_set(SCHEMA, VAE_SPEC, epsilon=1.0, delta=1e-6, seed=1))
    r = open_pgm(admin, fed)
    err = refused(poor.join_round, r.id)
    assert err.status == 409 and "ε = 0.5 left" in err.detail and "needs ε = 1" in err.detail, err.detail
    assert ledger(poor) == (1.0, 0.0)
    assert admin.round(fed, r.id).members == ()  # not a member
    assert silos["s1"].join_round(r.id).membership is not None


def test_push_counts_the_reservation(admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=2, budget=1.5)
    s = silos["s0"]
    r = open_pgm(admin, fed)
    s.join_round(r.id)
    err = refused(s.push, make_set(SCHEMA, VAE_SPEC, epsilon=1.0, delta=1e-6, seed=2))
    assert err.status == 409 and "reserved" in err.detail, err.detail
    assert ledger(s) == (0.0, 1.0)
    assert s.push(make_set(SCHEMA, VAE_SPEC, epsilon=0.5, delta=1e-6, seed=3)).epsilon == 0.5  # 0.5 + 1 ≤ 1.5
    assert ledger(s) == (0.5, 1.0)
    s.withdraw(r.id, reason="local data check failed")  # the reservation is released
    assert ledger(s) == (0.5, 0.0)


def test_join_racing_a_push_cannot_overspend(admin: HubAdmin) -> None:
    """A join (reserve ε = 1) and a push (ε = 1) of one silo at once, budget 1.5: exactly one wins,
    on either path, and spent + reserved never exceeds the budget."""
    from concurrent.futures import ThreadPoolExecutor

    for seed in range(3):
        fed, silos = new_federation(admin, silos=1, budget=1.5)
        s = silos["s0"]
        r = open_pgm(admin, fed)
        gs = make_set(SCHEMA, VAE_SPEC, epsilon=1.0, delta=1e-6, seed=10 + seed)

        with ThreadPoolExecutor(2) as ex:
            codes = sorted(ex.map(lambda f: status_of(*f), [(s.join_round, r.id), (s.push, gs)]))
        assert codes == [200, 409], codes
        spent, reserved = ledger(s)
        assert spent + reserved == pytest.approx(1.0)


# ---------------------------------------------------------------- states
def test_one_round_at_a_time(admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=2)
    r = open_pgm(admin, fed)
    err = refused(open_pgm, admin, fed)
    assert err.status == 409 and "a round is already open" in err.detail and f"round {r.id}" in err.detail
    silos["s0"].join_round(r.id)
    silos["s1"].join_round(r.id)
    admin.start_round(fed, r.id)
    assert refused(open_pgm, admin, fed).status == 409  # running blocks too
    a = admin.abort_round(fed, r.id, reason="operator test")
    assert a.status == "aborted" and "operator test" in a.detail
    assert open_pgm(admin, fed).status == "open"
    # other federations are independent
    other, _ = new_federation(admin, silos=0)
    assert open_pgm(admin, other).status == "open"


def test_start_with_too_few_expires_and_charges_nothing(admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=3)
    r = open_pgm(admin, fed, min_silos=3)
    silos["s0"].join_round(r.id)
    silos["s1"].join_round(r.id)
    err = refused(admin.start_round, fed, r.id)
    assert err.status == 409 and "only 2 of the 3" in err.detail
    info = admin.round(fed, r.id)
    assert info.status == "expired" and {m.status for m in info.members} == {"dropped"}
    assert ledger(silos["s0"]) == (0.0, 0.0) and ledger(silos["s1"]) == (0.0, 0.0)
    err = refused(silos["s2"].join_round, r.id)
    assert err.status == 409 and "expired" in err.detail
    assert refused(admin.start_round, fed, r.id).status == 409


def test_abort_releases_reservations(admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=2)
    r = open_pgm(admin, fed)
    silos["s0"].join_round(r.id)
    assert ledger(silos["s0"]) == (0.0, 1.0)
    assert admin.abort_round(fed, r.id).status == "aborted"  # while open
    assert ledger(silos["s0"]) == (0.0, 0.0)
    r = open_pgm(admin, fed)
    silos["s0"].join_round(r.id)
    silos["s1"].join_round(r.id)
    admin.start_round(fed, r.id)
    a = admin.abort_round(fed, r.id)  # while running
    assert a.status == "aborted" and {m.status for m in a.members} == {"dropped"}
    assert ledger(silos["s0"]) == (0.0, 0.0) and ledger(silos["s1"]) == (0.0, 0.0)
    assert refused(admin.abort_round, fed, r.id).status == 409
    err = refused(admin.post_round_result, fed, r.id, round_result(), contributors=[0, 1])
    assert err.status == 409 and "aborted" in err.detail
    assert ledger(silos["s0"]) == (0.0, 0.0) and not admin.round(fed, r.id).generator_ids


def test_withdraw_and_rejoin(admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=2)
    r = open_pgm(admin, fed)
    s0, s1 = silos["s0"], silos["s1"]
    s0.join_round(r.id)
    w = s0.withdraw(r.id, reason="wrong schema")
    assert w.membership and w.membership.status == "withdrawn" and ledger(s0) == (0.0, 0.0)
    assert s0.withdraw(r.id).membership.status == "withdrawn"  # type: ignore[union-attr]
    assert refused(s1.withdraw, r.id).status == 409  # never joined
    s1.join_round(r.id)
    s0.join_round(r.id)  # back, at the end of the join order
    started = admin.start_round(fed, r.id)
    assert [(m.silo, m.partition_id) for m in started.members] == [("s1", 0), ("s0", 1)]
    err = refused(s0.withdraw, r.id)
    assert err.status == 409 and "only while it is open" in err.detail
    admin.abort_round(fed, r.id)


def test_deadline_closes_joins(admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=3)
    # enough silos before the deadline: joins close, the round waits for its start
    r = open_pgm(admin, fed, deadline_s=2.0)
    silos["s0"].join_round(r.id)
    silos["s1"].join_round(r.id)
    time.sleep(2.5)
    err = refused(silos["s2"].join_round, r.id)
    assert err.status == 409 and "deadline passed" in err.detail
    assert ledger(silos["s2"]) == (0.0, 0.0)
    assert admin.start_round(fed, r.id).status == "running"
    admin.abort_round(fed, r.id)
    # too few by the deadline: the next look at the round expires it and releases its reservations
    r = open_pgm(admin, fed, deadline_s=1.0)
    silos["s0"].join_round(r.id)
    time.sleep(1.5)
    err = refused(silos["s1"].join_round, r.id)
    assert err.status == 409 and "deadline passed" in err.detail
    assert admin.round(fed, r.id).status == "expired" and ledger(silos["s0"]) == (0.0, 0.0)
    assert open_pgm(admin, fed).status == "open"  # an expired round blocks nothing


# ---------------------------------------------------------------- refused results change nothing
def _state(hub: RunningHub, admin: HubAdmin, fed: str, rid: int, silos: dict[str, HubClient]) -> tuple:
    info = admin.round(fed, rid)
    return (
        info.status,
        tuple((m.silo, m.status, m.epsilon_reserved) for m in info.members),
        len(admin.pool(fed)),
        tuple(ledger(c) for c in silos.values()),
        len(blobs(hub)),
    )


def test_bad_results_store_and_charge_nothing(hub: RunningHub, admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=3)
    r = open_pgm(admin, fed)
    for c in silos.values():
        c.join_round(r.id)
    admin.start_round(fed, r.id)
    before = _state(hub, admin, fed, r.id, silos)
    assert before[0] == "running" and before[3] == ((0.0, 1.0),) * 3
    vae = make_set(SCHEMA, VAE_SPEC, epsilon=1.0, delta=1e-6, seed=4)
    vae_fed = GeneratorSet(
        SCHEMA,
        vae.family,
        [type(g)(g.card.replace(scope="federation"), g.decoder, SCHEMA, "t") for g in vae.generators],
    )
    cases: list[tuple[object, list[int], int, str]] = [
        (round_result(epsilon=1.4), [0, 1], 422, "exceeds the round's ε"),  # within the cap 1.5
        (round_result(delta=5e-5), [0, 1], 422, "exceeds the round's δ"),
        (vae_fed, [0, 1], 422, "not accepted"),  # the round's family is pgm/1
        (silo_fit(), [0, 1], 422, "scope 'silo'"),
        (round_result(), [0, 7], 422, "not members"),
        (round_result(), [0], 422, "at least 2"),
        (round_result(), [0, 0], 422, "twice"),
    ]
    for gs, who, status, reason in cases:
        err = refused(admin.post_round_result, fed, r.id, gs, contributors=who)
        assert err.status == status and reason in err.detail, (reason, err.detail)
    # a card whose claim under-states ε: the hub re-derives it
    gs = round_result()
    g = gs.generators[0]
    lie = g.card.replace(privacy=dataclasses.replace(g.card.privacy, epsilon=0.5))
    err = refused(
        admin.post_round_result, fed, r.id, [(lie.to_json().encode(), to_artifact(g)[1])], contributors=[0, 1]
    )
    assert err.status == 422 and "claim" in err.detail, err.detail
    # malformed form fields
    files = [("cards", ("c", b"{}", "application/json")), ("weights", ("w", b"", "application/octet-stream"))]
    h = {"Authorization": f"Bearer {hub.admin_token}"}
    u = f"{hub.url}/v1/federations/{fed}/rounds/{r.id}/result"
    for data in (
        {"contributors": "not json"},
        {"contributors": "[0, 1]", "report": "[1]"},
        {"contributors": '["a", 1]'},
    ):
        res = httpx.post(u, headers=h, files=files, data=data)
        assert res.status_code == 422, res.text
    assert httpx.post(u, headers=h, files=files).status_code == 422  # contributors missing
    assert _state(hub, admin, fed, r.id, silos) == before
    refused_events = [
        e for e in admin.audit(fed) if e["action"] == "round-result" and e["outcome"] == "refused"
    ]
    assert len(refused_events) >= len(cases)
    # the round is untouched: the honest result still goes through
    assert admin.post_round_result(fed, r.id, round_result(), contributors=[2, 0]).status == "done"


def test_result_transaction_is_all_or_nothing(hub: RunningHub, admin: HubAdmin) -> None:
    """A database failure in the middle of the result's transaction (a trigger refusing the
    contributors' status update, after the push rows and the first charges were written) leaves
    no push, no generator, no charge, the reservations held and the round running."""
    fed, silos = new_federation(admin, silos=2)
    r = open_pgm(admin, fed)
    for c in silos.values():
        c.join_round(r.id)
    admin.start_round(fed, r.id)
    before = _state(hub, admin, fed, r.id, silos)
    eng = sa.create_engine(hub.db_url)
    try:
        with eng.begin() as conn:
            if eng.dialect.name == "sqlite":
                conn.exec_driver_sql(
                    "CREATE TRIGGER inject_fault BEFORE UPDATE OF status ON round_members "
                    "WHEN NEW.status = 'contributed' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
                )
            else:
                conn.exec_driver_sql(
                    "CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
                )
                conn.exec_driver_sql(
                    "CREATE TRIGGER inject_fault BEFORE UPDATE ON round_members FOR EACH ROW "
                    "WHEN (NEW.status = 'contributed') EXECUTE FUNCTION inject_fault()"
                )
        err = refused(admin.post_round_result, fed, r.id, round_result(), contributors=[0, 1])
        assert err.status == 503 and "not recorded" in err.detail, err.detail
        after = _state(hub, admin, fed, r.id, silos)
        assert after[:4] == before[:4]  # only unreferenced blobs may remain (as after a crash)
        with eng.connect() as conn:
            n = conn.execute(sa.text("SELECT COUNT(*) FROM pushes WHERE round_id = :r"), {"r": r.id}).scalar()
            assert n == 0
        assert not [
            e
            for e in admin.audit(fed)
            if e["action"] in ("round-result", "round-charge") and e["outcome"] == "ok"
        ]
    finally:
        with eng.begin() as conn:
            conn.exec_driver_sql(
                "DROP TRIGGER IF EXISTS inject_fault"
                + ("" if eng.dialect.name == "sqlite" else " ON round_members")
            )
            if eng.dialect.name != "sqlite":
                conn.exec_driver_sql("DROP FUNCTION IF EXISTS inject_fault()")
        eng.dispose()
    assert admin.post_round_result(fed, r.id, round_result(), contributors=[0, 1]).status == "done"
    assert ledger(silos["s0"])[1] == 0.0 and ledger(silos["s0"])[0] > 0


# ---------------------------------------------------------------- the boundary
def test_bad_requests_are_4xx_naming_the_field(hub: RunningHub, admin: HubAdmin) -> None:
    fed, silos = new_federation(admin, silos=1)
    other, others = new_federation(admin, silos=1)
    base = {"family": "pgm", "epsilon": 1.0, "delta": 1e-5, "min_silos": 2, "deadline_s": 60}
    h = {"Authorization": f"Bearer {hub.admin_token}"}
    u = f"{hub.url}/v1/federations/{fed}/rounds"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases = [
        ({"family": "no-such-gan"}, "family"),
        ({"epsilon": 2.0}, "epsilon"),
        ({"epsilon": -1}, "epsilon"),
        ({"delta": 1e-3}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"min_silos": 1}, "min_silos"),
        ({"deadline_s": 0}, "deadline_s"),
        ({"deadline_s": 1e12}, "deadline_s"),
        ({"deadline": future}, "deadline"),  # both given
        ({"deadline_s": None, "deadline": "2020-01-01T00:00:00Z"}, "deadline"),
        ({"deadline_s": None, "deadline": "2099-01-01T00:00:00"}, "deadline"),  # no time zone
        ({"deadline_s": None}, "deadline"),
        ({"spec": {"model": "aim-pgm", "bins": "many"}}, "spec"),
        ({"colour": "red"}, "colour"),
    ]
    for change, field in cases:
        body = {k: v for k, v in {**base, **change}.items() if v is not None}
        res = httpx.post(u, headers=h, json=body)
        assert res.status_code == 422 and field in res.text, (change, res.status_code, res.text)
    assert admin.rounds(fed) == []
    ok = admin.open_round(
        fed, "pgm", epsilon=1.0, delta=1e-5, deadline=datetime.now(UTC) + timedelta(minutes=5)
    )
    assert ok.status == "open"
    s = silos["s0"]
    sh = others["s0"]._headers
    assert httpx.post(u, headers=s._headers, json=base).status_code == 403  # a silo cannot open
    assert httpx.post(f"{u}/{ok.id}/start", headers=s._headers).status_code == 403
    assert httpx.post(f"{u}/{ok.id}/join", headers=h).status_code == 403  # the admin cannot join
    assert httpx.post(f"{u}/{ok.id}/join", headers=sh).status_code == 403  # another federation's silo
    assert httpx.get(f"{u}/{ok.id}", headers=sh).status_code == 403
    assert httpx.get(f"{u}/{ok.id}").status_code == 401
    assert httpx.get(f"{u}/999999", headers=h).status_code == 404
    theirs = open_pgm(admin, other)
    assert httpx.get(f"{u}/{theirs.id}", headers=h).status_code == 404  # a round of another federation
    assert httpx.post(f"{u}/{theirs.id}/join", headers=s._headers).status_code == 404
    assert httpx.get(f"{u}/0", headers=h).status_code == 422
    assert [x.id for x in s.rounds()] == [ok.id]


# ---------------------------------------------------------------- the CLI
def test_cli_open_status_start_abort(hub: RunningHub, admin: HubAdmin) -> None:
    from fedsynth.cli import app

    runner = CliRunner()
    fed, silos = new_federation(admin, silos=2)
    env = {"FEDSYNTH_HUB_ADMIN_TOKEN": hub.admin_token, "COLUMNS": "80"}
    common = ["--hub", hub.url, "--federation", fed]
    args = ["hub", "open-round", *common, "--generator", "pgm", "--epsilon", "1", "--delta", "1e-5"]
    res = runner.invoke(app, [*args, "--min-silos", "3", "--deadline", "600"], env=env)
    assert res.exit_code == 0, res.output
    (r,) = admin.rounds(fed)
    assert (r.family, r.epsilon, r.min_silos) == ("pgm/1", 1.0, 3)
    assert f"round {r.id}" in res.output and r.deadline.isoformat(timespec="seconds") in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80, res.output
    res = runner.invoke(app, [*args, "--deadline", "60"], env=env)
    assert res.exit_code == 2 and "a round is already open" in res.output
    silos["s0"].join_round(r.id)
    res = runner.invoke(app, ["hub", "round-status", *common], env=env)  # the newest round
    assert res.exit_code == 0 and "open" in res.output and "s0" in res.output and "joined" in res.output
    tok = silos["s1"]._headers["Authorization"].split()[1]
    res = runner.invoke(
        app, ["hub", "round-status", "--hub", hub.url, "--token", tok, "--round", str(r.id)], env={}
    )
    assert res.exit_code == 0 and "s0" in res.output, res.output
    res = runner.invoke(app, ["hub", "start-round", *common, "--round", str(r.id)], env=env)
    assert res.exit_code == 2 and "only 1 of the 3" in res.output
    res = runner.invoke(app, ["hub", "abort-round", *common, "--round", str(r.id)], env=env)
    assert res.exit_code == 2 and "expired" in res.output
    over_cap = [*args]
    over_cap[over_cap.index("--epsilon") + 1] = "9"
    res = runner.invoke(app, over_cap, env=env)
    assert res.exit_code == 2 and "cap" in res.output
    r2 = open_pgm(admin, fed)
    res = runner.invoke(
        app, ["hub", "abort-round", *common, "--round", str(r2.id), "--reason", "maintenance"], env=env
    )
    assert res.exit_code == 0 and "aborted" in res.output and admin.round(fed, r2.id).status == "aborted"
    res = runner.invoke(app, ["hub", "round-status", *common, "--round", "99999"], env=env)
    assert res.exit_code == 2 and "404" in res.output


# ---------------------------------------------------------------- migration 0002 → 0003
@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_from_0002_keeps_data(backend: str, tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from fedsynth.exchange import db
    from fedsynth.exchange.process import run_hub
    from tests.conftest_hub import db_url_for

    for url in db_url_for(backend, tmp_path):
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        command.upgrade(cfg, "0002")
        spec = VAE_SPEC.to_dict()
        eng = sa.create_engine(url)
        with eng.begin() as c:
            meta = sa.MetaData()
            meta.reflect(c)
            assert "epsilon_reserved" not in meta.tables["silos"].c
            now = datetime.now(UTC)
            c.execute(meta.tables["federations"].insert().values(
                id=1, name="old", schema_json=SCHEMA.to_dict(), schema_hash=SCHEMA.hash(),
                spec_json={"families": [{"kind": "dp-vae/1", "spec": spec}]}, max_epsilon=1.5, max_delta=1e-5,
                silo_epsilon_budget=3.0, created=now))  # fmt: skip
            c.execute(meta.tables["silos"].insert().values(
                id=1, federation_id=1, name="s1", token_hash="a" * 64, epsilon_spent=1.0, delta_spent=1e-6,
                created=now))  # fmt: skip
            c.execute(meta.tables["pushes"].insert().values(
                id=1, federation_id=1, silo_id=1, content_hash="b" * 64, epsilon=1.0, delta=1e-6,
                n_generators=1, total_bytes=10, created=now))  # fmt: skip
            c.execute(meta.tables["generators"].insert().values(
                id=1, push_id=1, federation_id=1, silo_id=1, family="dp-vae/1", class_label="yes",
                epsilon=1.0, delta=1e-6, accountant="rdp", card_created="", weights_sha256="c" * 64,
                card_sha256="d" * 64, size=10, created=now))  # fmt: skip
        db.migrate(url)
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT epsilon_spent, epsilon_reserved FROM silos")).one() == (1.0, 0.0)
            assert c.execute(sa.text("SELECT silo_id, round_id FROM pushes")).one() == (1, None)
            assert c.execute(sa.text("SELECT silo_id, round_id, family FROM generators")).one() == (
                1,
                None,
                "dp-vae/1",
            )
        # one owner per push: neither silo nor round is refused by the CHECK constraint
        with eng.connect() as c, pytest.raises(sa.exc.IntegrityError):
            c.execute(sa.text(
                "INSERT INTO pushes (federation_id, content_hash, epsilon, delta, n_generators, "
                "total_bytes, created) VALUES (1, 'e', 1, 1e-6, 1, 1, CURRENT_TIMESTAMP)"))  # fmt: skip
        with run_hub(url, tmp_path / "store") as h, HubAdmin(h.url, h.admin_token) as adm:
            (entry,) = adm.pool("old")
            assert (entry.silo, entry.scope, entry.round_id, entry.epsilon) == ("s1", "silo", None, 1.0)
            r = adm.open_round("old", "pgm", epsilon=1.0, delta=1e-5, deadline_s=60, spec=PGM_SPEC)
            assert r.status == "open"
        with pytest.raises(RuntimeError, match="rounds exist"):
            command.downgrade(cfg, "0002")
        eng.dispose()
