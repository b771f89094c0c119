"""SIGKILL the hub in the middle of a large push; after a restart the pool is consistent."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.exchange.hub.settings import FAULT_DELAY_ENV
from fedsynth.exchange.process import RunningHub
from tests.conftest_hub import BACKENDS, make_set, start_hub, tiny_schema, tiny_spec, vae_fams


def _blobs(hub: RunningHub) -> list[Path]:
    return [p for p in (Path(hub.store_dir) / "blobs").rglob("*") if p.is_file()]


def _push_in_background(client: HubClient, gset: object) -> dict:
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = client.push(gset)
        except (HubError, httpx.HTTPError) as e:  # the server dies under it
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    box["thread"] = t
    return box


def _assert_consistent(hub: RunningHub, adm: HubAdmin, fed: str, expect_generators: int) -> None:
    pool = adm.pool(fed)
    assert len(pool) == expect_generators
    for e in pool:  # every listed generator is complete in the store and hashes right
        data = httpx.get(f"{hub.url}/v1/federations/{fed}/generators/{e.id}/weights", headers=adm._headers)
        assert data.status_code == 200 and len(data.content) == e.size
    assert not any((Path(hub.store_dir) / "tmp").iterdir()), "temp files survived the restart"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_push_then_restart(backend: str, tmp_path: Path) -> None:
    s = tiny_schema()
    spec = tiny_spec(s, hidden=(768, 768), latent=64)  # ≈ 2.6 MB per decoder, ≈ 5 MB per push
    gset = make_set(s, spec, epsilon=1.0, seed=3)
    for hub in start_hub(backend, tmp_path, extra_env={FAULT_DELAY_ENV: "30"}):
        adm = HubAdmin(hub.url, hub.admin_token)
        adm.create_federation(
            "crash", s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0
        )
        client = HubClient(hub.url, adm.add_silo("crash", "s1"))

        # 1) killed while the body is still arriving (nothing stored yet)
        box = _push_in_background(client, gset)
        time.sleep(0.05)
        hub.kill()
        box["thread"].join(30)
        hub.restart(extra_env={FAULT_DELAY_ENV: "30"})
        _assert_consistent(hub, adm, "crash", 0)

        # 2) killed after the artifacts are durably stored, before the database commit
        box = _push_in_background(client, gset)
        t0 = time.monotonic()
        while len(_blobs(hub)) < 4 and time.monotonic() - t0 < 60:  # 2 weights + 2 cards
            time.sleep(0.05)
        assert len(_blobs(hub)) >= 4, "push never reached the store"
        hub.kill()
        box["thread"].join(30)
        assert "result" not in box
        hub.restart(extra_env={FAULT_DELAY_ENV: "0"})
        _assert_consistent(hub, adm, "crash", 0)  # orphan blobs exist, but no generator is visible
        client.subscribe()
        assert client.epsilon_spent == 0.0  # and nothing was charged to the ledger
        assert not [e for e in adm.audit("crash") if e["action"] == "push" and e["outcome"] == "ok"]

        # 3) the same push again succeeds once, is charged once, and repeats are idempotent
        first = client.push(gset)
        assert not first.duplicate and first.generators == 2
        assert client.push(gset).duplicate
        _assert_consistent(hub, adm, "crash", 2)
        client.subscribe()
        assert client.epsilon_spent == pytest.approx(1.0)
        pulled = client.pull()
        assert {g.card.weights_sha256 for g in pulled} == {c.weights_sha256 for c in gset.cards}
