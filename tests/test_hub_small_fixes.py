"""Small hub fixes, each against a real hub where it touches the wire.

* a repeated push (same content hash: the first push answered, nothing charged) repairs a blob
  that rotted on disk and leaves intact blobs untouched;
* ``HubAdmin.revoke_silo`` / ``HubAdmin.rotate_token``: the typed, strictly parsed client of the
  two token-lifecycle endpoints (the CLI's ``hub revoke-silo`` / ``rotate-token`` use them);
* the answer parser's integer limit is :data:`fedsynth.jsonsafe.MAX_INT` and its name rule is
  :data:`fedsynth.exchange.protocol.NAME_RE` (one definition of each).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fedsynth import jsonsafe
from fedsynth.exchange import answers, protocol
from fedsynth.exchange.client import HubAdmin, HubAnswerError, HubClient, HubError
from fedsynth.exchange.process import RunningHub
from fedsynth.exchange.store import BlobStore
from tests.conftest_hub import make_set, start_hub, tiny_schema, tiny_spec, vae_fams


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    yield from start_hub("sqlite", tmp_path_factory.mktemp("small-fixes"))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------- a repeated push repairs a blob
def test_duplicate_push_repairs_a_corrupted_blob(hub: RunningHub) -> None:
    s = tiny_schema()
    spec = tiny_spec(s)
    gset = make_set(s, spec, epsilon=0.5, seed=11)
    store = BlobStore(hub.store_dir)
    with HubAdmin(hub.url, hub.admin_token) as adm:
        adm.create_federation("dup", s, vae_fams(spec), max_epsilon=1.0, silo_epsilon_budget=3.0)
        silo = HubClient(hub.url, adm.add_silo("dup", "s0"))
        first = silo.push(gset)
        assert not first.duplicate
        pool = silo.list_pool()
        assert len(pool) == 2
        flipped = store.path(pool[0].weights_sha256)  # a bit flip: same size, other bytes
        bad = bytearray(flipped.read_bytes())
        bad[len(bad) // 2] ^= 0x01
        flipped.write_bytes(bytes(bad))
        truncated = store.path(pool[1].card_sha256)  # a truncation
        truncated.write_bytes(truncated.read_bytes()[:10])
        intact = store.path(pool[1].weights_sha256)
        intact_ino, intact_bytes = intact.stat().st_ino, intact.read_bytes()

        with pytest.raises(HubError) as e:  # the rotted blobs cannot be served
            silo.pull()
        assert e.value.status == 503
        silo.subscribe()
        spent = silo.epsilon_spent

        again = silo.push(gset)
        assert again.duplicate and again.push_id == first.push_id
        silo.subscribe()
        assert silo.epsilon_spent == pytest.approx(spent) == pytest.approx(0.5)  # nothing charged
        assert _sha(flipped) == pool[0].weights_sha256
        assert _sha(truncated) == pool[1].card_sha256
        # an intact blob is verified, not rewritten (a rewrite is a new file renamed into place)
        assert intact.stat().st_ino == intact_ino and intact.read_bytes() == intact_bytes
        assert not list(store.tmp.iterdir())

        pulled = silo.pull()
        assert {g.card.weights_sha256 for g in pulled} == {c.weights_sha256 for c in gset.cards}
        assert [e.id for e in silo.list_pool()] == [e.id for e in pool]  # no new generator rows
        repeats = [e for e in adm.audit("dup") if e["action"] == "push" and "repeat" in e["detail"]]
        assert len(repeats) == 1 and repeats[0]["epsilon"] == 0.0


# ---------------------------------------------------------------- HubAdmin revoke / rotate
def _status(url: str, token: str) -> int:
    return httpx.get(
        f"{url}/v1/federations/tok/requirements", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_admin_rotate_and_revoke_against_a_real_hub(hub: RunningHub) -> None:
    s = tiny_schema()
    with HubAdmin(hub.url, hub.admin_token) as adm:
        adm.create_federation("tok", s, vae_fams(tiny_spec(s)))
        old = adm.add_silo("tok", "alice")
        other = adm.add_silo("tok", "bob")
        assert _status(hub.url, old) == 200

        new = adm.rotate_token("tok", "alice")
        assert new.startswith("fsk_") and new != old
        assert HubClient(hub.url, new).silo == "alice"
        assert _status(hub.url, old) == 401  # one hub process: forgotten at once

        within = adm.revoke_silo("tok", "alice")
        assert isinstance(within, float) and within > 0
        assert _status(hub.url, new) == 401
        assert _status(hub.url, other) == 200  # another silo is untouched

        again = adm.rotate_token("tok", "alice")  # a revoked silo gets a working token again
        assert _status(hub.url, again) == 200

        with pytest.raises(HubError) as e:
            adm.revoke_silo("tok", "nobody")
        assert e.value.status == 404 and "no such silo" in e.value.detail
        with pytest.raises(HubError) as e:
            adm.rotate_token("no-such-fed", "alice")
        assert e.value.status == 404
        actions = [e["action"] for e in adm.audit("tok")]
        assert actions.count("rotate-token") == 2 and actions.count("revoke-silo") == 1
    with HubAdmin(hub.url, other) as not_admin, pytest.raises(HubError) as e:
        not_admin.revoke_silo("tok", "bob")
    assert e.value.status == 403


def _mock_admin(answer: Callable[[httpx.Request], httpx.Response]) -> HubAdmin:
    http = httpx.Client(base_url="http://hub.test", transport=httpx.MockTransport(answer))
    return HubAdmin("http://hub.test", "admin", client=http)


def _raw(body: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda req: httpx.Response(200, content=body.encode())


@pytest.mark.parametrize(
    ("method", "body", "why"),
    [
        ("rotate_token", '{"effective_within_s": 5.0}', "rotate: field 'token' is missing"),
        ("rotate_token", '{"token": 7, "effective_within_s": 5.0}', "field 'token' must be a str"),
        ("rotate_token", '{"token": "", "effective_within_s": 5.0}', "field 'token' is empty"),
        ("rotate_token", '{"token": "fsk_x", "effective_within_s": NaN}', "the non-finite number NaN"),
        ("rotate_token", "[]", "rotate: expected a JSON object"),
        ("revoke_silo", '{"revoked": true}', "revoke: field 'effective_within_s' is missing"),
        ("revoke_silo", '{"revoked": false, "effective_within_s": 5}', "field 'revoked' is not true"),
        ("revoke_silo", '{"revoked": true, "effective_within_s": "5"}', "must be a number"),
        (
            "revoke_silo",
            '{"revoked": true, "effective_within_s": 1' + "0" * 400 + "}",
            "revoke.effective_within_s: an integer of 401 digits",
        ),
        ("revoke_silo", "<html>", "revoke: not JSON"),
    ],
)
def test_hostile_token_answers_are_clear_errors(method: str, body: str, why: str) -> None:
    with _mock_admin(_raw(body)) as adm, pytest.raises(HubAnswerError) as e:
        getattr(adm, method)("f", "s")
    assert why in str(e.value)


def test_token_methods_quote_the_names_into_the_path() -> None:
    seen: list[str] = []

    def answer(req: httpx.Request) -> httpx.Response:
        seen.append(req.url.raw_path.decode())
        return httpx.Response(200, json={"revoked": True, "effective_within_s": 5, "token": "fsk_t"})

    with _mock_admin(answer) as adm:
        assert adm.revoke_silo("f", "a/b") == 5.0
        assert adm.rotate_token("f", "s") == "fsk_t"
    assert seen == ["/v1/federations/f/silos/a%2Fb/revoke", "/v1/federations/f/silos/s/rotate"]


# ---------------------------------------------------------------- one limit, one name rule
@pytest.mark.parametrize(
    "n", [jsonsafe.MAX_INT, -jsonsafe.MAX_INT, 0, 10**18, -(10**18)], ids=lambda n: f"{n:+d}"[:8]
)
def test_integers_jsonsafe_accepts_are_accepted(n: int) -> None:
    assert jsonsafe.loads(str(n), "x") == n
    assert answers.parse_answer(str(n).encode(), "x") == n


@pytest.mark.parametrize(
    "text",
    [str(jsonsafe.MAX_INT + 1), str(-jsonsafe.MAX_INT - 1), "9" * 20, "-" + "1" * 30, "1" + "0" * 399],
    ids=lambda t: f"{len(t)}ch",
)
def test_integers_jsonsafe_refuses_are_refused(text: str) -> None:
    with pytest.raises(jsonsafe.JSONValueError):
        jsonsafe.loads(text, "x")
    with pytest.raises(HubAnswerError, match="integer"):
        answers.parse_answer(json.dumps({"n": [0, 1]}).replace("1", text, 1).encode(), "a")


def test_a_400_digit_integer_in_a_hub_answer_is_an_answer_error() -> None:
    with pytest.raises(HubAnswerError, match=r"a\.n: an integer of 400 digits"):
        answers.parse_answer(('{"n": 1' + "0" * 399 + "}").encode(), "a")


def test_the_answer_parser_uses_the_protocols_name_rule() -> None:
    assert answers.NAME_RE is protocol.NAME_RE
    for name, ok in [
        ("s0", True),
        ("a.b-c_d", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("../admin", False),
        (".", False),
        ("-a", False),
        ("a/b", False),
    ]:
        try:
            protocol.check_name("silo", name)
            hub_ok = True
        except Exception:
            hub_ok = False
        client_ok = True
        try:
            answers.field({"silo": name}, "silo", "name", "whoami")
        except HubAnswerError:
            client_ok = False
        assert hub_ok == client_ok == ok, name
