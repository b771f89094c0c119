"""Hostile traffic against real hub processes (SQLite): rate-limit keys, authentication before the
body, aggregated refusal audits, slow clients, and the token lifecycle across two processes."""

from __future__ import annotations

import re
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.exchange.client import HubAdmin, HubClient
from fedsynth.exchange.limits import TokenBuckets
from fedsynth.exchange.process import RunningHub
from tests.conftest_hub import make_set, start_hub, tiny_schema, tiny_spec, vae_fams

runner = CliRunner()


def _fed(hub: RunningHub, name: str = "t", silos: tuple[str, ...] = ("alice",)) -> dict[str, str]:
    adm = HubAdmin(hub.url, hub.admin_token)
    s = tiny_schema()
    adm.create_federation(
        name, s, vae_fams(tiny_spec(s)), max_epsilon=1.5, max_delta=1e-5, silo_epsilon_budget=9.0
    )
    return {n: adm.add_silo(name, n) for n in silos}


def _port(hub: RunningHub) -> int:
    return int(hub.url.rsplit(":", 1)[1])


def _audit_rows(hub: RunningHub) -> int:
    HubAdmin(hub.url, hub.admin_token).audit("t", limit=1)  # flushes the writer and the counts
    path = hub.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM audit_events").fetchone()[0])


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    # no rate limit here (the rate-limit test starts its own hub), short slow-client limits
    for h in start_hub("sqlite", tmp_path_factory.mktemp("traffic"), header_timeout_s=2.0, body_idle_s=2.0):
        h.tokens = _fed(h)  # type: ignore[attr-defined]
        yield h


# ---------------------------------------------------------------- 5: rate-limit keys and memory
def test_rate_limit_keys_are_address_and_identity(tmp_path: Path) -> None:
    for hub in start_hub("sqlite", tmp_path, rate_per_s=0.5, rate_burst=20):
        tok = _fed(hub)["alice"]
        url = f"{hub.url}/v1/federations/t/requirements"

        # one valid token written 80 ways is one silo, hence one bucket
        def spelled(k: int, tok: str = tok) -> str:  # 64 bEaReR casings x 1-2 spaces
            scheme = "".join(c.upper() if (k >> i) & 1 else c for i, c in enumerate("bearer"))
            return f"{scheme}{' ' * (1 + k // 64)}{tok}"

        ways = [spelled(k) for k in range(80)]
        with httpx.Client() as h:
            codes = [h.get(url, headers={"Authorization": w}).status_code for w in ways]
        assert codes.count(200) <= 22 and codes.count(429) >= 58, codes
        # 400 random tokens from one address share that address's bucket
        with httpx.Client() as h:
            codes = [
                h.get(url, headers={"Authorization": f"Bearer {secrets.token_urlsafe(16)}"}).status_code
                for _ in range(400)
            ]
        assert codes.count(429) >= 370 and set(codes) <= {401, 429}, codes
        # ... which throttles neither another identity (the admin) nor health checks
        assert (
            httpx.get(
                f"{hub.url}/v1/federations", headers={"Authorization": f"Bearer {hub.admin_token}"}
            ).status_code
            == 200
        )
        assert httpx.get(f"{hub.url}/v1/health").status_code == 200


def test_token_buckets_bounded_and_constant_time() -> None:
    b = TokenBuckets(1.0, 5, max_keys=10_000)
    t0 = time.perf_counter()
    for i in range(200_000):
        b.take(f"ip:{i}")
    per_call = (time.perf_counter() - t0) / 200_000
    assert len(b) == 10_000
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per call"
    for _ in range(5):
        assert b.take("hot") == 0
    assert b.take("hot") > 0  # a live bucket keeps its state under the flood


# ---------------------------------------------------------------- 6: 401 before the body; audits
def _head_only(
    hub: RunningHub, path: str, token: str | None, length: int = 60 * 1024 * 1024
) -> tuple[float, bytes]:
    """Send a POST's headers announcing a ``length``-byte multipart body, then none of it; return
    (seconds to the first response byte, the response head), or (inf, b"") if none within 5 s."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", _port(hub))) as s:
        s.settimeout(5)
        t0 = time.monotonic()
        s.sendall(head + b"--b\r\n")  # a few bytes of the body, not the 60 MB announced
        try:
            data = s.recv(4096)
        except TimeoutError:
            return float("inf"), b""
        return time.monotonic() - t0, data


@pytest.mark.parametrize(
    "path", ["/v1/federations/t/pushes", "/v1/federations/t/rounds/1/result", "/v1/federations"]
)
def test_unauthenticated_upload_refused_before_the_body(hub: RunningHub, path: str) -> None:
    for token in (None, "fsk_" + secrets.token_urlsafe(32)):
        dt, data = _head_only(hub, path, token)
        assert data.startswith(b"HTTP/1.1 401"), data[:80]
        assert dt < 1.0, f"401 after {dt:.2f} s"
        print(f"401 for {path} ({'bad' if token else 'no'} token, 60 MB announced) after {dt * 1e3:.1f} ms")


def test_authenticated_upload_waits_for_its_body_then_times_out(hub: RunningHub) -> None:
    # the contrast: with a valid token the hub does wait for the body, and the body-idle timeout
    # (2 s here) answers 408 instead of holding the request forever
    dt, data = _head_only(hub, "/v1/federations/t/pushes", hub.tokens["alice"])  # type: ignore[attr-defined]
    assert data.startswith(b"HTTP/1.1 408"), data[:80]
    assert 1.5 < dt < 4.0, dt


def test_refusal_audits_are_aggregated(hub: RunningHub) -> None:
    before = _audit_rows(hub)
    with httpx.Client() as h:
        for i in range(500):
            bad = {"Authorization": f"Bearer nope{i}"} if i % 3 else {}
            if i % 2:
                r = h.get(f"{hub.url}/v1/federations/t/pool", headers=bad)
            else:
                r = h.post(f"{hub.url}/v1/federations/t/pushes", headers=bad, files={"cards": b"x" * 2000})
            assert r.status_code == 401
    added = _audit_rows(hub) - before
    assert added <= 4, f"{added} audit rows for 500 refusals"  # one per (source, minute, flush)
    path = hub.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as c:
        details = [
            d for (d,) in c.execute("SELECT detail FROM audit_events ORDER BY id DESC LIMIT ?", (added,))
        ]
    counted = sum(int(m.group(1)) for d in details if (m := re.match(r"(\d+) unauthenticated", d)))
    assert counted == 500, details
    print(f"500 refusals -> {added} audit row(s)")


# ---------------------------------------------------------------- 9: slow clients
def test_slow_loris_closed_in_bounded_time_and_cannot_starve(hub: RunningHub) -> None:
    n, port = 60, _port(hub)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
    closed_at: dict[int, float] = {}
    t0 = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:  # one header byte per second per connection, never the blank line
        for k in range(len(head)):
            for i, s in enumerate(socks):
                if i in closed_at:
                    continue
                try:
                    s.sendall(head[k : k + 1])
                    s.setblocking(False)
                    try:
                        if s.recv(1) == b"":
                            closed_at[i] = time.monotonic() - t0
                    except BlockingIOError:
                        pass
                    finally:
                        s.setblocking(True)
                except OSError:
                    closed_at[i] = time.monotonic() - t0
            if len(closed_at) == n or stop.wait(1.0):
                return

    th = threading.Thread(target=trickle)
    th.start()
    try:
        time.sleep(0.5)
        t = time.monotonic()  # a normal request meanwhile is served at once
        assert httpx.get(f"{hub.url}/v1/health", timeout=5).status_code == 200
        assert time.monotonic() - t < 1.0
        th.join(15)
    finally:
        stop.set()
        th.join()
        for s in socks:
            s.close()
    assert len(closed_at) == n, f"{n - len(closed_at)} slow connections still open after 15 s"
    worst = max(closed_at.values())
    print(f"{n} slow-loris connections closed after {min(closed_at.values()):.2f}-{worst:.2f} s")
    assert worst < 2.0 + 2.5, f"slowest close after {worst:.1f} s (header timeout 2 s)"
    # a connection that sends nothing at all is closed by the same deadline
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(6)
        t = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - t < 4.0


# ---------------------------------------------------------------- 12: token lifecycle
def _codes(url: str, token: str, n: int = 12) -> list[int]:
    """``n`` requests on fresh connections, so both processes (SO_REUSEPORT) answer some."""
    return [
        httpx.get(
            f"{url}/v1/federations/t/requirements", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        for _ in range(n)
    ]


def _refused_within(url: str, token: str, bound: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound + 5:
        if set(_codes(url, token)) == {401}:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError("the old token still works")


def test_rotate_and_revoke_across_two_processes(tmp_path: Path) -> None:
    from fedsynth.exchange.hub.settings import TOKEN_CACHE_TTL_S

    for hub in start_hub("sqlite", tmp_path, processes=2):
        toks = _fed(hub, silos=("alice", "bob"))
        old = toks["alice"]
        HubClient(hub.url, old).push(make_set(tiny_schema(), tiny_spec(tiny_schema()), seed=3))
        assert set(_codes(hub.url, old, 24)) == {200}  # both processes have the token cached
        cli = ["--hub", hub.url, "--federation", "t", "--name", "alice", "--admin-token", hub.admin_token]
        res = runner.invoke(app, ["hub", "rotate-token", *cli])
        assert res.exit_code == 0, res.output
        new = re.findall(r"fsk_[A-Za-z0-9_-]{43}", res.output)[0]
        assert set(_codes(hub.url, new, 24)) == {200}  # the new token works at once everywhere
        dt_rotate = _refused_within(hub.url, old, TOKEN_CACHE_TTL_S)
        assert dt_rotate <= TOKEN_CACHE_TTL_S + 1.5, dt_rotate
        res = runner.invoke(app, ["hub", "revoke-silo", *cli])
        assert res.exit_code == 0 and "revoked" in res.output, res.output
        dt_revoke = _refused_within(hub.url, new, TOKEN_CACHE_TTL_S)
        assert dt_revoke <= TOKEN_CACHE_TTL_S + 1.5, dt_revoke
        print(f"old token refused everywhere after {dt_rotate:.2f} s (rotate), {dt_revoke:.2f} s (revoke)")
        adm = HubAdmin(hub.url, hub.admin_token)
        assert [e.silo for e in adm.pool("t")] == ["alice", "alice"]  # its pushes stay in the pool
        actions = [e["action"] for e in adm.audit("t")]
        assert "rotate-token" in actions and "revoke-silo" in actions
        bad = runner.invoke(app, ["hub", "revoke-silo", *cli[:4], "--name", "nobody", *cli[6:]])
        assert bad.exit_code == 2 and "no such silo" in bad.output
        revoke_bob = f"{hub.url}/v1/federations/t/silos/bob/revoke"
        assert httpx.post(revoke_bob, headers={"Authorization": f"Bearer {toks['bob']}"}).status_code == 403
        assert httpx.post(revoke_bob, headers={"Authorization": f"Bearer {old}"}).status_code == 401
        assert set(_codes(hub.url, toks["bob"])) == {200}  # another silo is untouched
