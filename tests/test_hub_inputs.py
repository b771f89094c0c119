"""Hostile JSON values against a real hub (issue 12, defects 2 and 8, item 13): huge integers,
non-finite numbers, lone surrogates and NUL characters in a pushed card, in create-federation and
in open-round, and names that only look valid. Every one is a 422 naming the field, never a 5xx.

The bodies are written as raw JSON text (``\\ud800`` and ``\\u0000`` escapes, 400-digit
integers, ``Infinity``) because no well-behaved client would ever produce them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fedsynth.artifacts.card import LEGACY_CARD_FORMAT, sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.exchange.protocol import PushRefused, Requirements, check_requirements, validate_generator_set
from fedsynth.generators.base import make_card
from fedsynth.generators.vae.family import decoder_tensors
from fedsynth.generators.vae.nets import build_decoder
from fedsynth.privacy.claim import PrivacyClaim
from fedsynth.privacy.target import PrivacyParameterError
from tests.conftest_hub import BACKENDS, honest_claim, make_set, start_hub, tiny_schema, tiny_spec, vae_fams

BIG = "9" * 400  # a JSON integer no float or database column holds
SURROGATE = "\\ud800"  # a JSON escape that decodes to a lone surrogate (not encodable as UTF-8)
NUL = "\\u0000"


@pytest.fixture(scope="module", params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp(f"hubinputs-{request.param}")
    for hub in start_hub(request.param, tmp):
        adm = HubAdmin(hub.url, hub.admin_token)
        s = tiny_schema()
        spec = tiny_spec(s)
        adm.create_federation(
            "inp", s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0
        )
        tok = adm.add_silo("inp", "s1")
        dec = build_decoder(spec)
        weights = tensors_to_bytes(decoder_tensors(dec), "dp-vae/1")
        card = make_card("dp-vae/1", spec, s, "yes", honest_claim(1.0, 1e-6), decoder_tensors(dec))
        assert card.weights_sha256 == sha256_bytes(weights)
        yield {
            "hub": hub,
            "admin": adm,
            "token": tok,
            "card": card,
            "weights": weights,
            "schema": s,
            "spec": spec,
        }


def _post(env: dict, path: str, body: str, token: str | None = None) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {token or env['hub'].admin_token}",
        "Content-Type": "application/json",
    }
    return httpx.post(env["hub"].url + path, content=body.encode(), headers=headers, timeout=30)


def _push_card_text(env: dict, text: str, fed: str = "inp") -> httpx.Response:
    files = [
        ("cards", ("c.json", text.encode(), "application/json")),
        ("weights", ("class-0.safetensors", env["weights"], "application/octet-stream")),
    ]
    return httpx.post(
        f"{env['hub'].url}/v1/federations/{fed}/pushes",
        files=files,
        headers={"Authorization": f"Bearer {env['token']}"},
        timeout=30,
    )


def _card_json(env: dict) -> dict[str, Any]:
    return env["card"].to_dict()  # type: ignore[no-any-return]


def _assert_422(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, (r.status_code, r.text[:500])
    assert field in r.text, (field, r.text[:500])


def _sub(d: dict[str, Any], path: tuple[str, ...], marker: str) -> str:
    """``d`` as JSON with the value at ``path`` replaced by the raw JSON text ``marker``."""
    d = json.loads(json.dumps(d))
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = "@@MARK@@"
    return json.dumps(d).replace('"@@MARK@@"', marker)


# ---------------------------------------------------------------- push
PUSH_CASES = [
    (("privacy", "epsilon"), BIG, "epsilon"),
    (("privacy", "delta"), BIG, "delta"),
    (("privacy", "noise_multiplier"), BIG, "noise_multiplier"),
    (("privacy", "steps"), BIG, "steps"),
    (("privacy", "epsilon"), "Infinity", "epsilon"),
    (("privacy", "sample_rate"), "NaN", "sample_rate"),
    (("privacy", "epsilon"), "1e400", "epsilon"),
    (("spec", "latent_dim"), BIG, "spec"),
    (("spec", "latent_dim"), "-" + BIG, "spec"),
    (("class_label",), f'"{SURROGATE}"', "class_label"),
    (("class_label",), f'"ye{NUL}s"', "class_label"),
    (("privacy", "accountant"), f'"rdp{SURROGATE}"', "accountant"),
    (("privacy", "accountant"), f'"rdp{NUL}"', "accountant"),
    (("privacy", "mechanism"), f'"{SURROGATE}"', "mechanism"),
    (("family",), f'"{SURROGATE}"', "family"),
    (("created",), f'"{NUL}"', "created"),
    (("spec", "activation"), f'"{SURROGATE}"', "spec"),
    (("spec", "activation"), f'"x{NUL}"', "spec"),
    (("structure",), f'{{"{SURROGATE}": 1}}', "structure"),
]


@pytest.mark.parametrize(
    "path,raw,field", PUSH_CASES, ids=[f"{'.'.join(p)}={r[:12]}" for p, r, _ in PUSH_CASES]
)
def test_push_hostile_card_values(env: dict, path: tuple[str, ...], raw: str, field: str) -> None:
    _assert_422(_push_card_text(env, _sub(_card_json(env), path, raw)), field)


# ---------------------------------------------------------------- create-federation
def _fed_body(env: dict, name: str = "f2") -> dict[str, Any]:
    return {
        "name": name,
        "schema": env["schema"].to_dict(),
        "families": [{"kind": "dp-vae/1", "spec": env["spec"].to_dict()}],
        "max_epsilon": 1.0,
        "max_delta": 1e-5,
        "silo_epsilon_budget": 2.0,
    }


Y = '{"name": "y", "kind": "categorical", "categories": ["no", "yes"]}'  # the target column

FED_CASES = [
    (("name",), f'"f{SURROGATE}"', "name"),
    (("name",), f'"f{NUL}"', "name"),
    (("name",), '"fed0\\n"', "name"),
    (("max_epsilon",), BIG, "max_epsilon"),
    (("silo_epsilon_budget",), BIG, "silo_epsilon_budget"),
    (("max_delta",), "NaN", "max_delta"),
    (("schema", "dp_epsilon"), "Infinity", "dp_epsilon"),
    (("schema", "dp_epsilon"), "1e400", "dp_epsilon"),
    (("schema", "dp_epsilon"), BIG, "dp_epsilon"),
    (("schema", "target"), f'"y{SURROGATE}"', "target"),
    (
        ("schema", "columns"),
        f'[{{"name": "a{NUL}", "kind": "continuous", "lower": 0, "upper": 1}}, {Y}]',
        "name",
    ),
    (
        ("schema", "columns"),
        f'[{{"name": "a", "kind": "continuous", "lower": 0, "upper": {BIG}}}, {Y}]',
        "upper",
    ),
    (
        ("schema", "columns"),
        f'[{{"name": "a", "kind": "continuous", "lower": -1e999, "upper": 1}}, {Y}]',
        "lower",
    ),
    (
        ("schema", "columns"),
        f'[{{"name": "c", "kind": "categorical", "categories": ["{SURROGATE}"]}}, {Y}]',
        "categories",
    ),
]


@pytest.mark.parametrize(
    "path,raw,field", FED_CASES, ids=[f"{'.'.join(p)}={r[:12]}" for p, r, _ in FED_CASES]
)
def test_create_federation_hostile_values(env: dict, path: tuple[str, ...], raw: str, field: str) -> None:
    _assert_422(_post(env, "/v1/federations", _sub(_fed_body(env), path, raw)), field)


@pytest.mark.parametrize(
    "raw", [BIG, f'"{SURROGATE}"', f'"a{NUL}"', "Infinity"], ids=["big", "surrogate", "nul", "inf"]
)
def test_create_federation_hostile_family_spec(env: dict, raw: str) -> None:
    body = _fed_body(env)
    body["families"][0]["spec"]["latent_dim"] = "@@MARK@@"
    r = _post(env, "/v1/federations", json.dumps(body).replace('"@@MARK@@"', raw))
    _assert_422(r, "families[0]")


def test_schema_dp_epsilon_is_stored_as_standard_json(env: dict) -> None:
    """A finite dp_epsilon round-trips; the federation list is strict JSON (no ``Infinity``)."""
    body = _fed_body(env, "dpfed")
    body["schema"]["dp_epsilon"] = 0.5
    # a dp_epsilon only on a DP schema, and a DP schema names the silos whose rows it used
    _assert_422(_post(env, "/v1/federations", json.dumps(body)), "dp_epsilon")
    body["schema"]["source"] = "dp"
    _assert_422(_post(env, "/v1/federations", json.dumps(body)), "schema_silos")
    body.update(schema_silos=["s1"], silo_epsilon_budget=1.5)
    assert _post(env, "/v1/federations", json.dumps(body)).status_code == 201
    r = httpx.get(
        env["hub"].url + "/v1/federations", headers={"Authorization": f"Bearer {env['hub'].admin_token}"}
    )
    json.loads(r.text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


# ---------------------------------------------------------------- names (defect 8)
@pytest.mark.parametrize("raw", ["silo0\\n", "silo0\\r\\n", f"s{SURROGATE}", f"s{NUL}", " silo"])
def test_add_silo_name_must_fully_match(env: dict, raw: str) -> None:
    _assert_422(_post(env, "/v1/federations/inp/silos", '{"name": "' + raw + '"}'), "name")


# ---------------------------------------------------------------- open-round
def _round_body() -> dict[str, Any]:
    return {"family": "dp-vae/1", "epsilon": 1.0, "delta": 1e-6, "min_silos": 2, "deadline_s": 60}


ROUND_CASES = [
    (("epsilon",), BIG, "epsilon"),
    (("delta",), BIG, "delta"),
    (("min_silos",), BIG, "min_silos"),
    (("deadline_s",), BIG, "deadline_s"),
    (("family",), f'"{SURROGATE}"', "family"),
    (("family",), f'"pgm{NUL}"', "family"),
    (("spec",), f'{{"latent_dim": {BIG}}}', "spec"),
    (("spec",), f'{{"activation": "{SURROGATE}"}}', "spec"),
    (("spec",), f'{{"activation": "a{NUL}"}}', "spec"),
    (("spec",), f'{{"{NUL}": 1}}', "spec"),
    (("spec",), '{"latent_dim": Infinity}', "spec"),
]


@pytest.mark.parametrize(
    "path,raw,field", ROUND_CASES, ids=[f"{'.'.join(p)}={r[:12]}" for p, r, _ in ROUND_CASES]
)
def test_open_round_hostile_values(env: dict, path: tuple[str, ...], raw: str, field: str) -> None:
    _assert_422(_post(env, "/v1/federations/inp/rounds", _sub(_round_body(), path, raw)), field)


def test_hub_still_serves(env: dict) -> None:
    assert httpx.get(env["hub"].url + "/v1/health").status_code == 200


# ---------------------------------------------------------------- legacy cards (verify, don't trust)
def _legacy_card(env: dict) -> dict[str, Any]:
    c = env["card"]
    return {
        "format": LEGACY_CARD_FORMAT,
        "library": "fedsynth",
        "spec": c.spec,
        "schema_hash": c.schema_hash,
        "class_label": c.class_label,
        "epsilon": 1.0,
        "delta": 1e-6,
        "accountant": "rdp",
        "weights_sha256": c.weights_sha256,
        "created": c.created,
    }


def test_legacy_card_refused_at_push_with_how_to_repush(env: dict) -> None:
    r = _push_card_text(env, json.dumps(_legacy_card(env)))
    _assert_422(r, "legacy card")
    assert "Retrain with the current fedsynth" in r.text and "allow_legacy_cards" in r.text


def _requirements(env: dict, *, allow_legacy: bool) -> Requirements:
    schema, fams = check_requirements(
        env["schema"].to_dict(), [{"kind": "dp-vae/1", "spec": env["spec"].to_dict()}], 1.5, 1e-5, 3.0
    )
    return Requirements("x", schema, fams, 1.5, 1e-5, 3.0, allow_legacy_cards=allow_legacy)


def test_legacy_card_accepted_only_where_the_federation_allows_it(env: dict) -> None:
    item = [(json.dumps(_legacy_card(env)).encode(), env["weights"])]
    with pytest.raises(PushRefused, match="legacy card"):
        validate_generator_set(_requirements(env, allow_legacy=False), item)
    vp = validate_generator_set(_requirements(env, allow_legacy=True), item)
    assert vp.generators[0].card.privacy.mechanism == "legacy" and vp.epsilon == 1.0
    # the flag travels with the requirements (spec_json on the hub) and defaults to refusing
    d = _requirements(env, allow_legacy=True).to_dict()
    assert Requirements.from_dict(d).allow_legacy_cards is True
    d.pop("allow_legacy_cards")
    assert Requirements.from_dict(d).allow_legacy_cards is False


# ---------------------------------------------------------------- the budget 409 says the numbers
def test_budget_refusal_names_spent_reserved_push_and_budget(env: dict) -> None:
    s, spec = env["schema"], env["spec"]
    tok = env["admin"].add_silo("inp", "budget-silo")
    c = HubClient(env["hub"].url, tok)
    c.push(make_set(s, spec, epsilon=1.5, seed=1))
    c.push(make_set(s, spec, epsilon=1.25, seed=2))
    with pytest.raises(HubError) as e:
        c.push(make_set(s, spec, epsilon=0.5, seed=3))
    assert e.value.status == 409
    msg = str(e.value)
    for part in ("needs ε = 0.5", "spent ε = 2.75", "reserved 0", "ε = 0.25 left of 3", "> budget 3"):
        assert part in msg, (part, msg)


# ---------------------------------------------------------------- the claim records its accountant
def test_claim_records_accountant_version_and_old_claims_still_load() -> None:
    import opacus

    from fedsynth.privacy.dpsgd import DPSGDAccount, dpsgd_claim

    acct = DPSGDAccount(
        epsilon=1.0,
        delta=1e-6,
        accountant="rdp",
        noise_multiplier=1.1,
        sample_rate=0.01,
        steps=100,
        max_grad_norm=1.0,
    )
    claim = dpsgd_claim(acct)
    assert claim.accountant_version == f"opacus {opacus.__version__}"
    assert PrivacyClaim.from_dict(claim.to_dict()) == claim
    old = claim.to_dict()
    old.pop("accountant_version")  # a card from before the field: loads, and is written back unchanged
    back = PrivacyClaim.from_dict(old)
    assert back.accountant_version is None and back.to_dict() == old
    with pytest.raises(PrivacyParameterError):
        PrivacyClaim.from_dict({**old, "accountant_version": 3})


# ---------------------------------------------------------------- the one JSON check
@pytest.mark.parametrize(
    "text,where",
    [
        ('{"a": [1, {"b": NaN}]}', "x.a[1].b"),
        ('{"a": 1e400}', "x.a"),
        ('{"a": -Infinity}', "x.a"),
        ('{"a": ' + BIG + "}", "x.a"),
        ('{"a": "' + SURROGATE + '"}', "x.a"),
        ('{"' + NUL + '": 1}', "x (a key)"),
        ("[" * 100 + "]" * 100, "deeper"),
        ("1" * 5000, "5000 digits"),
    ],
)
def test_jsonsafe_refuses_and_names_the_path(text: str, where: str) -> None:
    from fedsynth import jsonsafe

    with pytest.raises(jsonsafe.JSONValueError, match=re.escape(where)):
        jsonsafe.loads(text, "x")


def test_jsonsafe_keeps_ordinary_values() -> None:
    from fedsynth import jsonsafe

    v = {"seed": 2**63 - 1, "neg": -(2**63 - 1), "x": 1.5e300, "s": "héllo ✓", "l": [True, None]}
    assert jsonsafe.loads(json.dumps(v), "x") == v


def test_a_federation_created_with_allow_legacy_cards_accepts_them_over_http(env: dict) -> None:
    """The per-federation switch end to end: create-federation stores it, the push path reads it."""
    adm = env["admin"]
    req = adm.create_federation(
        "legacyok", env["schema"], vae_fams(env["spec"]), max_epsilon=1.5, max_delta=1e-5,
        silo_epsilon_budget=3.0, allow_legacy_cards=True,
    )  # fmt: skip
    assert req.allow_legacy_cards is True
    tok = adm.add_silo("legacyok", "s1")
    files = [
        ("cards", ("c.json", json.dumps(_legacy_card(env)).encode(), "application/json")),
        ("weights", ("class-0.safetensors", env["weights"], "application/octet-stream")),
    ]
    r = httpx.post(
        f"{env['hub'].url}/v1/federations/legacyok/pushes", files=files,
        headers={"Authorization": f"Bearer {tok}"}, timeout=30,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    # the default federation still refuses the same card
    assert _push_card_text(env, json.dumps(_legacy_card(env))).status_code == 422


def test_middleware_refusals_carry_the_security_headers(env: dict) -> None:
    """401 from the auth gate and 413 from the body cap are answered outside the app: they must
    still carry the headers every other response has (issue 12, item 13)."""
    import socket
    from urllib.parse import urlparse

    r = httpx.post(f"{env['hub'].url}/v1/federations/inp/pushes", content=b"x", timeout=10)
    assert r.status_code == 401 and r.headers.get("x-content-type-options") == "nosniff"
    u = urlparse(env["hub"].url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/federations/inp/pushes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + env["token"].encode() + b"\r\nContent-Length: 999999999999\r\n\r\n"
        )  # fmt: skip
        head = s.recv(4096).decode("latin-1").lower()
    assert " 413 " in head.split("\r\n")[0] and "x-content-type-options: nosniff" in head
