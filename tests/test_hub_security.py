"""Hostile uploads and requests against a real hub process (SQLite): pickles, malformed tensors,
path traversal in every name field, rate limiting."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save as st_save

from fedsynth.artifacts.card import sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.exchange.process import RunningHub
from fedsynth.generators.base import make_card
from fedsynth.generators.vae.family import decoder_tensors
from fedsynth.generators.vae.nets import build_decoder
from tests.conftest_hub import honest_claim, make_set, start_hub, tiny_schema, tiny_spec, vae_fams


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("hubsec")
    for hub in start_hub("sqlite", tmp):
        adm = HubAdmin(hub.url, hub.admin_token)
        s = tiny_schema()
        spec = tiny_spec(s)
        adm.create_federation(
            "sec", s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0
        )
        tok = adm.add_silo("sec", "mallory")
        yield {
            "hub": hub,
            "admin": adm,
            "schema": s,
            "spec": spec,
            "token": tok,
            "tmp": tmp,
            "client": HubClient(hub.url, tok),
        }


class Evil:
    """Unpickling this creates a directory: the observable side effect that must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.marker,))


def _w(dec: torch.nn.Module) -> bytes:
    return tensors_to_bytes(decoder_tensors(dec), "dp-vae/1")


def _push_weights(env: dict, payload: bytes, *, name: str = "class-0.safetensors") -> HubError:
    """Push ``payload`` as weights with an otherwise valid card whose hash matches it."""
    s, spec = env["schema"], env["spec"]
    card = make_card("dp-vae/1", spec, s, "yes", honest_claim(1.0, 1e-6), {}).replace(
        weights_sha256=sha256_bytes(payload)
    )
    files = [
        ("cards", ("c.json", card.to_json().encode(), "application/json")),
        ("weights", (name, payload, "application/octet-stream")),
    ]
    with pytest.raises(HubError) as e:
        env["client"].push_raw(files)
    return e.value


def test_pickle_payloads_refused_and_never_executed(env: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = pickle.dumps(Evil(marker), protocol=4)
    # sanity: the payload really is live (unpickling it in a throw-away spot has the side effect)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Evil(probe)))
    assert probe.is_dir()
    buf = io.BytesIO()
    torch.save({"net.0.weight": Evil(marker)}, buf)  # torch.save zip container with the same gadget
    proto0 = pickle.dumps(Evil(marker), protocol=0)
    for payload in (raw, buf.getvalue(), proto0):
        err = _push_weights(env, payload)
        assert err.status == 422, err.detail
        assert "safetensors" in err.detail or "pickle" in err.detail
    time.sleep(0.2)
    assert not marker.exists(), "the hub unpickled an upload"
    assert not any(env["client"].list_pool())


def test_hostile_cards_refused(env: dict) -> None:
    w = _w(build_decoder(env["spec"]))
    for card in (
        b"[" * 30000,
        b"\xff\xfe",
        b'{"format": "fedsynth-decoder/1", "spec": "x"}',
        b"{}",
        b"0" * 70000,
    ):
        files = [
            ("cards", ("c.json", card, "application/json")),
            ("weights", ("w", w, "application/octet-stream")),
        ]
        with pytest.raises(HubError) as e:
            env["client"].push_raw(files)
        assert e.value.status == 422, (card[:20], e.value.detail)


def test_malformed_tensors_refused(env: dict) -> None:
    spec = env["spec"]
    dec = build_decoder(spec)
    good = {k: v.detach().clone() for k, v in dec.state_dict().items()}
    first = next(iter(good))
    nan = dict(good)
    nan[first] = good[first].clone()
    nan[first][0, 0] = float("nan")
    wrong_shape = dict(good)
    wrong_shape[first] = torch.zeros(good[first].shape[0] + 1, good[first].shape[1])
    wrong_dtype = {k: v.double() for k, v in good.items()}
    renamed = {("x." + k if k == first else k): v for k, v in good.items()}
    extra = {**good, "backdoor": torch.zeros(3)}
    for tensors, reason in (
        (nan, "NaN"),
        (wrong_shape, "shape"),
        (wrong_dtype, "dtype"),
        (renamed, "names"),
        (extra, "names"),
    ):
        err = _push_weights(env, st_save(tensors))
        assert err.status == 422 and reason in err.detail, err.detail
    for hdr in (
        b'{"net.0.weight": 5}',
        b'{"net.0.weight": {"dtype": "F32"}}',
        b"[1, 2]",
        b'{"net.0.weight": {"data_offsets": ["x", "y"]}}',
        b'{"a": {"data_offsets": [0, 1e999]}}',
    ):
        err = _push_weights(env, struct.pack("<Q", len(hdr)) + hdr)
        assert err.status == 422, (hdr, err.detail)
    blob = _w(dec)
    for payload, reason in (
        (blob[:-10], "truncated"),
        (blob + b"\x00" * 8, "padded"),
        (struct.pack("<Q", 1 << 40) + b"{}", "header"),
        (b"", "truncated"),
    ):
        err = _push_weights(env, payload)
        assert err.status == 422 and reason in err.detail, (reason, err.detail)


def test_path_traversal_in_every_name_field(env: dict) -> None:
    hub: RunningHub = env["hub"]
    adm: HubAdmin = env["admin"]
    s, spec = env["schema"], env["spec"]
    store = Path(hub.store_dir).resolve()
    outside = env["tmp"].parent
    evil_names = [
        "../../evil",
        "..",
        "../",
        "a/../../b",
        "/etc/passwd",
        "..\\..\\evil",
        "evil\x00.txt",
        "%2e%2e%2f",
    ]
    before = set(outside.rglob("*"))
    for n in evil_names:  # federation and silo names
        with pytest.raises(HubError) as e:
            adm.create_federation(n, s, vae_fams(spec))
        assert e.value.status == 422
        with pytest.raises(HubError) as e:
            adm.add_silo("sec", n)
        assert e.value.status == 422
    # path parameters
    h = {"Authorization": f"Bearer {env['token']}"}
    for p in (
        "/v1/federations/..%2F..%2Fetc/pool",
        "/v1/federations/%2e%2e/pool",
        "/v1/federations/sec/generators/..%2F1/weights",
    ):
        assert httpx.get(hub.url + p, headers=h).status_code in (403, 404, 422)
    # upload file names and the card's class label
    g = make_set(s, spec, epsilon=0.2, seed=5)
    files = []
    for i, (d, c) in enumerate((x.decoder, x.card) for x in g.generators):
        files.append(("cards", (f"../../../../evil-card-{i}.json", c.to_json().encode(), "application/json")))
        files.append(("weights", (f"/tmp/../{outside}/evil-w-{i}", _w(d), "application/octet-stream")))
    res = env["client"].push_raw(files)  # content is valid: accepted, names ignored
    assert res.generators == 2
    bad = make_set(s, spec, seed=6)
    bad.generators[0].card = dataclasses.replace(bad.cards[0], class_label="../../evil")
    with pytest.raises(HubError) as e:
        env["client"].push(bad)
    assert e.value.status == 422 and "not a class" in e.value.detail
    # nothing was written outside the store, and inside it only content-addressed blobs
    after = set(outside.rglob("*"))
    new_outside = {p for p in after - before if store not in p.resolve().parents and p.resolve() != store}
    assert not new_outside, new_outside
    for f in (store / "blobs").rglob("*"):
        if f.is_file():
            assert (
                len(f.parent.name) == 2
                and len(f.name) == 62
                and all(ch in "0123456789abcdef" for ch in f.name)
            )
    assert not any("evil" in str(p) for p in store.rglob("*"))


def test_rate_limit_429(tmp_path: Path) -> None:
    # a slow refill (one token per 2 s) and one kept-alive connection, so that a loaded machine
    # cannot refill the bucket between the burst and the checks
    for hub in start_hub("sqlite", tmp_path, rate_per_s=0.5, rate_burst=5):
        adm = HubAdmin(hub.url, hub.admin_token)
        with httpx.Client() as h:
            codes = [h.get(f"{hub.url}/v1/federations", headers=adm._headers).status_code for _ in range(12)]
        assert codes[:5] == [200] * 5 and 429 in codes
        r = httpx.get(f"{hub.url}/v1/federations", headers=adm._headers)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # per token: another caller is not throttled by the first one's burst
        other = {"Authorization": "Bearer someone-else"}
        assert httpx.get(f"{hub.url}/v1/federations", headers=other).status_code == 401
        time.sleep(2.2)  # a token refills
        assert httpx.get(f"{hub.url}/v1/federations", headers=adm._headers).status_code == 200


def test_pull_fast_lane_answers_like_the_route_and_keeps_its_rules(env: dict) -> None:
    """Once the caches are warm, pulls are answered by ``PullFastLane``: same bytes, headers,
    audit events and refusals as the FastAPI route that answered the cold request."""
    hub, adm, s, spec = env["hub"], env["admin"], env["schema"], env["spec"]
    for name in ("lane", "lane-other"):
        adm.create_federation(
            name, s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0
        )
    alice, eve = adm.add_silo("lane", "alice"), adm.add_silo("lane-other", "eve")
    HubClient(hub.url, alice).push(make_set(s, spec, seed=7))
    g = HubClient(hub.url, alice).list_pool()[0]

    def get(path: str, token: str | None, scheme: str = "Bearer") -> httpx.Response:
        headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
        return httpx.get(f"{hub.url}/v1/federations/{path}", headers=headers)

    keep = ("content-type", "content-length", "x-content-sha256", "x-content-type-options", "cache-control")
    for which, digest in (("weights", g.weights_sha256), ("card", g.card_sha256)):
        cold, warm = (get(f"lane/generators/{g.id}/{which}", alice) for _ in range(2))
        assert cold.status_code == warm.status_code == 200
        assert cold.content == warm.content and sha256_bytes(warm.content) == digest
        assert {k: cold.headers[k] for k in keep} == {k: warm.headers[k] for k in keep}
        assert warm.headers["x-content-sha256"] == digest
    assert get(f"lane/generators/{g.id}/weights", hub.admin_token).status_code == 200  # admin may read

    # the same refusals with warm caches (eve's token is known to the hub once she has used it)
    assert HubClient(hub.url, eve).list_pool() == []
    url = f"lane/generators/{g.id}/weights"
    assert get(url, eve).status_code == 403  # a token of another federation
    assert get(f"lane-other/generators/{g.id}/weights", eve).status_code == 404  # not in eve's pool
    assert get(url, "not-a-token").status_code == 401
    assert get(url, None).status_code == 401
    assert get(url, alice, scheme="Basic").status_code == 401
    assert get(f"lane/generators/{2**31}/weights", alice).status_code == 422

    pulls = [e for e in adm.audit("lane") if e["action"] == "pull" and e["outcome"] == "ok"]
    assert sum(e["silo"] == "alice" for e in pulls) == 2 and sum(e["silo"] == "(admin)" for e in pulls) == 1
    assert all(e["sha256"] == g.weights_sha256 for e in pulls)
    refused = [e for e in adm.audit("lane-other") if e["outcome"] == "refused" and e["silo"] == "eve"]
    assert refused, "a refused fast-lane candidate must still reach the route and be audited"


def test_pull_fast_lane_passes_everything_else_through() -> None:
    import asyncio

    from fedsynth.exchange.limits import PullFastLane

    class G:
        weights_sha256, card_sha256 = "w" * 64, "c" * 64

    served: list[tuple] = []
    inner: list[str] = []

    def serve(fed: str, gid: int, which: str, token: str) -> tuple[G, bytes] | None:
        served.append((fed, gid, which, token))
        return (G(), b"BODY") if token == "good" else None

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        inner.append(scope["path"])

    lane = PullFastLane(app, serve=serve, media_types={"weights": "application/octet-stream", "card": "x/y"})

    def call(path: str, token: str | None = "good", method: str = "GET", qs: bytes = b"") -> list[dict]:
        sent: list[dict] = []
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        scope = {"type": "http", "method": method, "path": path, "query_string": qs, "headers": headers}

        async def send(m: dict) -> None:
            sent.append(m)

        asyncio.run(lane(scope, None, send))  # type: ignore[arg-type]
        return sent

    out = call("/v1/federations/f/generators/3/weights")
    assert out[0]["status"] == 200 and out[1]["body"] == b"BODY" and not inner
    assert dict(out[0]["headers"])[b"x-content-sha256"] == b"w" * 64
    assert dict(call("/v1/federations/f/generators/3/card")[0]["headers"])[b"content-type"] == b"x/y"
    assert served[0] == ("f", 3, "weights", "good")
    n = len(served)
    for path, kw in [
        ("/v1/federations/f/generators/3/weights", {"token": "bad"}),  # serve() says no
        ("/v1/federations/f/generators/3/weights", {"token": None}),
        ("/v1/federations/f/generators/3/weights", {"method": "DELETE"}),
        ("/v1/federations/f/generators/3/weights", {"qs": b"x=1"}),
        ("/v1/federations/f/generators/0/weights", {}),
        ("/v1/federations/f/generators/3/other", {}),
        ("/v1/federations/f/g/generators/3/weights", {}),
    ]:
        assert call(path, **kw) == [] and inner[-1] == path
    assert len(served) == n + 1  # only the bad token reached serve()
