"""The whole SGDE protocol over HTTP against real hub processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedsynth.artifacts.card import ArtifactError
from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.exchange.process import RunningHub
from fedsynth.generators.pool import GeneratorPool
from tests.conftest_hub import BACKENDS, make_set, start_hub, tiny_schema, tiny_spec, vae_fams


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    yield from start_hub(request.param, tmp_path_factory.mktemp(f"hub-{request.param}"), max_body_mb=2)


@pytest.fixture(scope="module")
def fed(hub: RunningHub) -> dict:
    """Two federations; fed 'a' has silos alice and bob, fed 'b' has carol."""
    adm = HubAdmin(hub.url, hub.admin_token)
    s = tiny_schema()
    spec = tiny_spec(s)
    adm.create_federation("a", s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=2.5)
    adm.create_federation("b", s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=2.5)
    return {
        "admin": adm,
        "schema": s,
        "spec": spec,
        "alice": adm.add_silo("a", "alice"),
        "bob": adm.add_silo("a", "bob"),
        "carol": adm.add_silo("b", "carol"),
    }


def test_subscribe_push_pull_roundtrip(hub: RunningHub, fed: dict) -> None:
    s, spec = fed["schema"], fed["spec"]
    alice = HubClient(hub.url, fed["alice"])
    assert (alice.federation, alice.silo) == ("a", "alice")
    req = alice.subscribe()
    assert req.schema.hash() == s.hash() and req.spec("vae") == spec.to_dict()
    assert (req.max_epsilon, req.max_delta, req.silo_epsilon_budget) == (1.5, 1e-5, 2.5)

    gset = make_set(s, spec, epsilon=1.0, seed=1)
    first = alice.push(gset)
    assert not first.duplicate and first.generators == 2 and first.epsilon == 1.0
    again = alice.push(gset)  # idempotent: same push back, nothing charged twice
    assert again.duplicate and again.push_id == first.push_id
    assert alice.subscribe() and alice.epsilon_spent == pytest.approx(1.0)

    bob = HubClient(hub.url, fed["bob"])
    bob.push(make_set(s, spec, epsilon=0.5, seed=2))
    pool = bob.list_pool()
    mine = [e for e in pool if e.push_id == first.push_id]
    assert {e.class_label for e in mine} == {"no", "yes"} and all(e.silo == "alice" for e in mine)
    assert {e.silo for e in bob.list_pool(exclude_silos=["alice"])} == {"bob"}
    for e in mine:
        assert e.size > 0 and len(e.weights_sha256) == 64 and e.accountant == "rdp" and e.epsilon == 1.0

    gens = bob.pull(mine)
    sent = {g.card.weights_sha256: g.decoder for g in gset.generators}
    for g in gens:  # decoders arrive bit-identical
        ref = sent[g.card.weights_sha256].state_dict()
        for k, v in g.decoder.state_dict().items():
            assert (v == ref[k]).all()
    table = GeneratorPool(s, bob.pull()).sample(50, seed=0)
    assert len(table) == 50 and set(table["y"]) <= {"no", "yes"}

    events = fed["admin"].audit("a")
    actions = {(e["silo"], e["action"], e["outcome"]) for e in events}
    assert {("alice", "push", "ok"), ("bob", "pull", "ok"), ("alice", "subscribe", "ok")} <= actions
    push_ev = [e for e in events if e["action"] == "push" and e["sha256"] == first.content_hash]
    assert push_ev and push_ev[-1]["epsilon"] == 1.0


def test_client_verifies_hashes(hub: RunningHub, fed: dict) -> None:
    bob = HubClient(hub.url, fed["bob"])
    entries = bob.list_pool()
    assert entries
    bad = dataclasses.replace(entries[0], weights_sha256=hashlib.sha256(b"x").hexdigest())
    with pytest.raises(ArtifactError, match="sha256"):
        bob.pull([bad])


def test_privacy_ledger_composes_across_pushes(hub: RunningHub, fed: dict) -> None:
    adm: HubAdmin = fed["admin"]
    s, spec = fed["schema"], fed["spec"]
    dave = HubClient(hub.url, adm.add_silo("a", "dave"))
    dave.push(make_set(s, spec, epsilon=1.0, seed=10))
    dave.push(make_set(s, spec, epsilon=1.2, seed=11))  # Σ = 2.2 ≤ 2.5
    with pytest.raises(HubError) as e:  # 2.2 + 0.5 > 2.5: refused, nothing stored
        dave.push(make_set(s, spec, epsilon=0.5, seed=12))
    assert e.value.status == 409 and "budget" in e.value.detail
    dave.subscribe()
    assert dave.epsilon_spent == pytest.approx(2.2)
    assert len([p for p in dave.list_pool() if p.silo == "dave"]) == 4
    dave.push(make_set(s, spec, epsilon=0.3, seed=13))  # 2.5 exactly fits
    refused = [e for e in adm.audit("a") if e["silo"] == "dave" and e["outcome"] == "refused"]
    assert refused and "budget" in refused[0]["detail"]


def test_concurrent_pushes_cannot_overspend(hub: RunningHub, fed: dict) -> None:
    """Eight pushes of ε = 1.0 at once against a budget of 2.5: exactly two get through."""
    from concurrent.futures import ThreadPoolExecutor

    adm: HubAdmin = fed["admin"]
    s, spec = fed["schema"], fed["spec"]
    token = adm.add_silo("a", "racer")
    sets = [make_set(s, spec, epsilon=1.0, seed=200 + i) for i in range(8)]

    def push(g: object) -> int:
        with HubClient(hub.url, token) as c:
            try:
                c.push(g)
                return 201
            except HubError as e:
                return e.status

    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(push, sets))
    assert sorted(codes) == [201, 201] + [409] * 6, codes
    c = HubClient(hub.url, token)
    c.subscribe()
    assert c.epsilon_spent == pytest.approx(2.0)
    assert len([e for e in c.list_pool() if e.silo == "racer"]) == 4


def test_caps_and_bad_sets_refused(hub: RunningHub, fed: dict) -> None:
    s, spec = fed["schema"], fed["spec"]
    alice = HubClient(hub.url, fed["alice"])
    cases = {
        "exceeds the federation's cap": make_set(s, spec, epsilon=2.0, seed=20),
        "δ": make_set(s, spec, epsilon=1.0, delta=1e-3, seed=21),
        "generators for class": make_set(s, spec, seed=22, classes=("no", "no")),
        "not a class": make_set(s, spec, seed=23, classes=("maybe",)),
        "spec differs": make_set(s, tiny_spec(s, hidden=(8,)), seed=24),
    }
    other = dataclasses.replace(
        s,
        columns=(*s.columns[:1], dataclasses.replace(s.columns[1], categories=("a", "b", "c")), s.columns[2]),
    )
    cases["schema hash"] = make_set(other, spec, seed=25)
    for reason, gset in cases.items():
        with pytest.raises(HubError) as e:
            alice.push(gset)
        assert e.value.status == 422 and reason in e.value.detail, (reason, e.value.detail)
    # a card whose hash does not match the uploaded weights
    g = make_set(s, spec, seed=26)
    card = dataclasses.replace(g.cards[0], weights_sha256="0" * 64)
    files = [
        ("cards", ("c.json", card.to_json().encode(), "application/json")),
        ("weights", ("w.st", b"\x00" * 64, "application/octet-stream")),
    ]
    with pytest.raises(HubError) as e:
        alice.push_raw(files)
    assert e.value.status == 422 and "sha256" in e.value.detail
    with pytest.raises(HubError) as e:  # unpaired files
        alice.push_raw(files[:1])
    assert e.value.status == 422


def test_tokens_scoped_401_403(hub: RunningHub, fed: dict) -> None:
    u = hub.url
    r = httpx.get(f"{u}/v1/federations/a/pool")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (
        httpx.get(f"{u}/v1/federations/a/pool", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    assert httpx.get(f"{u}/v1/federations/a/pool", headers={"Authorization": "Basic x"}).status_code == 401
    carol = {"Authorization": f"Bearer {fed['carol']}"}
    assert httpx.get(f"{u}/v1/federations/a/pool", headers=carol).status_code == 403
    assert httpx.get(f"{u}/v1/federations/a/requirements", headers=carol).status_code == 403
    assert httpx.get(f"{u}/v1/federations/a/generators/1/weights", headers=carol).status_code == 403
    alice = {"Authorization": f"Bearer {fed['alice']}"}
    assert httpx.post(f"{u}/v1/federations", headers=alice, json={}).status_code == 403
    assert httpx.post(f"{u}/v1/federations/a/silos", headers=alice, json={"name": "x"}).status_code == 403
    assert httpx.get(f"{u}/dashboard", headers=alice).status_code == 403
    # carol can push to her own federation only; a push into 'a' is refused before any byte is stored
    cl = HubClient(u, fed["carol"])
    cl.federation = "a"
    with pytest.raises(HubError) as e:
        cl.push(make_set(fed["schema"], fed["spec"], seed=30))
    assert e.value.status == 403
    # nobody can delete or overwrite: no such methods exist
    assert httpx.delete(f"{u}/v1/federations/a/generators/1/weights", headers=alice).status_code == 405
    # refusals with hostile text in the path are still audited (NUL is not storable as-is in PG)
    assert httpx.get(f"{u}/v1/federations/a%00x/pool").status_code == 401
    assert httpx.get(f"{u}/v1/federations/b%00%01/pool", headers=alice).status_code == 403
    refused = [e for e in fed["admin"].audit("a", limit=50) if e["outcome"] == "refused"]
    assert any("\\x00" in e["detail"] for e in refused), [e["detail"] for e in refused]
    assert httpx.put(f"{u}/v1/federations/a/generators/1/weights", headers=alice).status_code == 405


def test_same_content_from_another_silo_does_not_touch_the_owner(hub: RunningHub, fed: dict) -> None:
    s, spec = fed["schema"], fed["spec"]
    gset = make_set(s, spec, epsilon=0.1, seed=40)
    a = HubClient(hub.url, fed["alice"]).push(gset)
    b = HubClient(hub.url, fed["bob"]).push(gset)
    assert b.push_id != a.push_id and not b.duplicate
    owners = {
        e.silo for e in HubClient(hub.url, fed["bob"]).list_pool() if e.push_id in (a.push_id, b.push_id)
    }
    assert owners == {"alice", "bob"}


def test_oversize_413(hub: RunningHub, fed: dict) -> None:
    h = {"Authorization": f"Bearer {fed['alice']}"}
    big = b"\x00" * (3 * 1024 * 1024)
    r = httpx.post(
        f"{hub.url}/v1/federations/a/pushes",
        headers=h,
        files=[("cards", ("c", b"{}", "application/json")), ("weights", ("w", big, "x/y"))],
    )
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must trip while streaming
        yield b'--x\r\nContent-Disposition: form-data; name="weights"; filename="w"\r\n\r\n'
        for _ in range(64):
            yield b"\x00" * 65536

    r = httpx.post(
        f"{hub.url}/v1/federations/a/pushes",
        headers={**h, "Content-Type": "multipart/form-data; boundary=x"},
        content=chunks(),
    )
    assert r.status_code == 413
    assert httpx.get(f"{hub.url}/v1/health").status_code == 200  # and the hub is still fine


def test_admin_validation(hub: RunningHub, fed: dict) -> None:
    adm: HubAdmin = fed["admin"]
    s, spec = fed["schema"], fed["spec"]
    with pytest.raises(HubError) as e:
        adm.create_federation("a", s, vae_fams(spec))
    assert e.value.status == 409
    with pytest.raises(HubError) as e:
        adm.create_federation("c", s, vae_fams(tiny_spec(dataclasses.replace(s, target="color"))))
    assert e.value.status == 422 and "layout" in e.value.detail
    with pytest.raises(HubError) as e:
        adm.create_federation("d", s, vae_fams(spec), max_epsilon=2.0, silo_epsilon_budget=1.0)
    assert e.value.status == 422
    with pytest.raises(HubError) as e:
        adm.add_silo("a", "alice")
    assert e.value.status == 409
    with pytest.raises(HubError) as e:
        adm.add_silo("nope", "x")
    assert e.value.status == 404
    assert [f.federation for f in adm.federations()][:2] == ["a", "b"]
    assert httpx.get(f"{hub.url}/openapi.json").json()["info"]["title"] == "fedsynth generator hub"


def test_audit_log_is_append_only(hub: RunningHub, fed: dict, tmp_path: Path) -> None:
    from sqlalchemy import text

    from fedsynth.exchange.db import make_engine

    eng = make_engine(hub.db_url)
    try:
        with eng.connect() as c:
            n = c.execute(text("SELECT count(*) FROM audit_events")).scalar()
            assert n and n > 0
        for stmt in ("UPDATE audit_events SET detail = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(Exception, match="append-only"), eng.begin() as c:
                c.execute(text(stmt))
        with eng.connect() as c:
            assert c.execute(text("SELECT count(*) FROM audit_events")).scalar() >= n
    finally:
        eng.dispose()
