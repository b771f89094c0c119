"""The read-only dashboard, rendered by headless Chromium (Playwright) against a real hub."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from fedsynth.exchange.client import HubAdmin, HubClient
from tests.conftest_hub import make_set, start_hub, tiny_schema, tiny_spec, vae_fams

CHROMIUM = os.environ.get("FEDSYNTH_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("FEDSYNTH_CHROMIUM"):
            pytest.fail(f"FEDSYNTH_CHROMIUM={CHROMIUM} does not exist")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    s = tiny_schema()
    spec = tiny_spec(s)
    for hub in start_hub("sqlite", tmp_path):
        adm = HubAdmin(hub.url, hub.admin_token)
        adm.create_federation(
            "clinics", s, vae_fams(spec), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=3.0
        )
        client = HubClient(hub.url, adm.add_silo("clinics", "st-mary"))
        res = client.push(make_set(s, spec, epsilon=0.75, seed=1))
        entry = client.list_pool()[0]
        # behind the admin token
        assert httpx.get(f"{hub.url}/dashboard").status_code == 401
        shot = tmp_path / "dashboard.png"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                ctx = browser.new_context(extra_http_headers={"Authorization": f"Bearer {hub.admin_token}"})
                page = ctx.new_page()
                resp = page.goto(f"{hub.url}/dashboard?federation=clinics")
                assert resp is not None and resp.status == 200
                assert page.title() == "fedsynth generator hub"
                pool = page.locator("table.pool tbody tr")
                assert pool.count() == 2
                text = pool.first.inner_text()
                assert "st-mary" in text and entry.weights_sha256[:16] in text and "0.75" in text
                silos = page.locator("table.silos").inner_text()
                assert "st-mary" in silos and "0.75" in silos  # cumulative ε per silo
                audit = page.locator("table.audit").inner_text()
                assert "push" in audit and res.content_hash[:16] in audit
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
        assert shot.exists() and shot.stat().st_size > 5000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
