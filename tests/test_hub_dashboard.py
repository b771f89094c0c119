"""The read-only dashboard, rendered by headless Chromium (Playwright) against a real hub."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedsynth.exchange.client import HubAdmin, HubClient
from fedsynth.exchange.dashboard import render_dashboard
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


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("FEDSYNTH_CHROMIUM"):
            pytest.fail(f"FEDSYNTH_CHROMIUM={CHROMIUM} does not exist")
        pytest.skip(f"no Chromium at {CHROMIUM}")


def _text(loc: Any) -> str:
    """Text of an SVG element (inner_text is for HTML elements only)."""
    return str(loc.text_content() or "")


def _assert_png(shot: Path) -> None:
    assert shot.exists() and shot.stat().st_size > 5000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    _need_chromium()
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
                # pictures: ε per silo against the budget, pool per class and per family
                eps = page.locator("svg.chart.epsilon")
                assert eps.count() == 1 and "st-mary" in _text(eps)
                assert "0.75 of 3" in _text(eps) and "budget 3" in _text(eps)
                assert page.locator("svg.chart.epsilon rect.bar-spent").count() == 1
                classes = _text(page.locator("svg.chart.pool-classes"))
                assert "no" in classes and "yes" in classes
                assert "dp-vae/1" in _text(page.locator("svg.chart.pool-families"))
                assert page.locator("script").count() == 0
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
        _assert_png(shot)


def _section() -> dict[str, Any]:
    """A dashboard section with hostile names, a reservation and a federation round's generators."""
    evil = "<script>alert(1)</script>"

    def gen(i: int, silo: str | None, family: str, cls: str | None) -> dict[str, Any]:
        return {
            "id": i, "silo": silo, "round_id": None if silo else 7, "family": family, "class_label": cls,
            "epsilon": 0.5, "delta": 1e-6, "accountant": "rdp", "created": "2026-01-01", "size": 10,
            "weights_sha256": "ab" * 32,
        }  # fmt: skip

    return {
        "requirements": {
            "federation": "fed", "max_epsilon": 1.0, "max_delta": 1e-5, "silo_epsilon_budget": 2.0,
            "schema": {"columns": [1, 2], "target": "y"}, "schema_hash": "0" * 64,
            "families": [{"kind": "dp-vae/1", "spec": {}}],
        },
        "silos": [
            {"name": evil, "epsilon_spent": 1.5, "epsilon_reserved": 0.25, "delta_spent": 1e-6,
             "created": "x"},
            {"name": "clinic-b", "epsilon_spent": 0.5, "epsilon_reserved": 0.0, "delta_spent": 0,
             "created": "x"},
        ],
        "pool": [
            gen(1, evil, "dp-vae/1", evil), gen(2, "clinic-b", "dp-vae/1", "yes"),
            gen(3, None, "fed-pgm/1", None), gen(4, None, "fed-pgm/1", None),
        ],
        "rounds": [],
        "audit": [],
    }  # fmt: skip


def test_dashboard_pictures_are_escaped_svg_without_scripts(tmp_path: Path) -> None:
    html = render_dashboard([_section()])
    assert "<script" not in html.lower() and "&lt;script&gt;" in html
    assert html.count("<svg") == 3
    _need_chromium()
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "pictures.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.set_content(html)
            assert page.locator("script").count() == 0
            eps = page.locator("svg.chart.epsilon")
            text = _text(eps)
            # the hostile name is a text node (shortened, full name in its tooltip), not markup
            assert "<script>" in text and "1.5 + 0.25 reserved of 2" in text and "clinic-b" in text
            assert eps.locator("rect.bar-reserved").count() == 1 and eps.locator("line.budget").count() == 1
            assert eps.locator("rect.bar-over").count() == 0  # 1.5 + 0.25 ≤ 2
            fams = _text(page.locator("svg.chart.pool-families"))
            assert "fed-pgm/1 (federation)" in fams and "dp-vae/1" in fams
            classes = _text(page.locator("svg.chart.pool-classes"))
            assert "(joint)" in classes and "<script>" in classes
            # bar lengths follow the numbers: reserved starts where spent ends
            spent = eps.locator("rect.bar-spent").first.bounding_box()
            reserved = eps.locator("rect.bar-reserved").first.bounding_box()
            assert spent and reserved and abs(reserved["x"] - (spent["x"] + spent["width"])) < 1.0
            assert abs(reserved["width"] * 6 - spent["width"]) < 1.0  # 0.25 vs 1.5
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    _assert_png(shot)
