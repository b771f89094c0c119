"""Run real hub processes on 127.0.0.1 (for ``fedsynth demo``, tests and benchmarks).

    with run_hub("sqlite:///hub.db", "store/") as hub:
        admin = HubAdmin(hub.url, hub.admin_token)
        ...

The parent binds a free port and passes a listening socket to each child (``--fd``), so there is
no port race. ``processes=2`` gives two hub processes in front of one database — the scale-out
deployment in miniature. Each process gets its own ``SO_REUSEPORT`` socket on the same port, so the
kernel hashes new connections evenly over them; with one shared socket both processes wake on a
burst and whichever accepts first takes nearly all of it (measured: a p99 tail several times the
median at 200 concurrent pulls).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fedsynth.exchange.server import ADMIN_TOKEN_ENV


@dataclass
class RunningHub:
    url: str
    admin_token: str
    db_url: str
    store_dir: str
    socks: list[socket.socket]
    args: list[str]
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    log_paths: list[Path] = field(default_factory=list)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill every hub process (SIGKILL by default: no cleanup, as in a crash)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def restart(self, extra_env: dict[str, str] | None = None) -> None:
        """Start the processes again on the same socket (same URL), running migrations first."""
        self.kill()
        from fedsynth.exchange.db import migrate

        migrate(self.db_url)
        env = {**self.env, **(extra_env or {})}
        self.procs = [_spawn(self.args, env, s, lp) for s, lp in zip(self.socks, self.log_paths, strict=True)]
        wait_ready(self.url, self.procs)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())


def _spawn(args: list[str], env: dict[str, str], sock: socket.socket, log_path: Path) -> subprocess.Popen:
    fd = sock.fileno()
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fedsynth.exchange.server", *args, "--fd", str(fd), "--no-migrate"],
            env=env,
            pass_fds=(fd,),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_ready(url: str, procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"hub process exited with code {p.returncode} during start-up")
        try:
            if httpx.get(f"{url}/v1/health", timeout=2, verify=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"hub at {url} did not become ready within {timeout:.0f} s")


@contextmanager
def run_hub(
    db_url: str,
    store_dir: str | Path,
    *,
    admin_token: str | None = None,
    processes: int = 1,
    rate_per_s: float = 0.0,
    rate_burst: int = 200,
    max_body_mb: float = 64.0,
    extra_env: dict[str, str] | None = None,
    log_dir: str | Path | None = None,
    header_timeout_s: float = 10.0,
    body_idle_s: float = 30.0,
    limit_concurrency: int = 1000,
) -> Iterator[RunningHub]:
    """Start ``processes`` hub server processes on a free 127.0.0.1 port; yield a :class:`RunningHub`.

    ``rate_per_s=0`` disables the per-token rate limit (demo/benchmarks); the CLI default is 50/s.
    ``header_timeout_s`` / ``body_idle_s`` / ``limit_concurrency``: the slow-client limits
    (``python -m fedsynth.exchange.server --help``).
    """
    from fedsynth.exchange.db import migrate

    token = admin_token or "fsa_" + secrets.token_urlsafe(32)
    store = Path(store_dir)
    store.mkdir(parents=True, exist_ok=True)
    logs = Path(log_dir) if log_dir else store / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    migrate(db_url)  # once, before any server process starts
    socks = _listeners(processes)
    port = socks[0].getsockname()[1]
    env = {**os.environ, ADMIN_TOKEN_ENV: token, **(extra_env or {})}
    args = [
        "--db",
        db_url,
        "--store",
        str(store),
        "--rate",
        str(rate_per_s),
        "--burst",
        str(rate_burst),
        "--max-body-mb",
        str(max_body_mb),
        "--header-timeout",
        str(header_timeout_s),
        "--body-idle-timeout",
        str(body_idle_s),
        "--limit-concurrency",
        str(limit_concurrency),
    ]
    hub = RunningHub(
        f"http://127.0.0.1:{port}",
        token,
        db_url,
        str(store),
        socks,
        args,
        env,
        log_paths=[logs / f".hub-{port}-{i}.log" for i in range(processes)],
    )
    try:
        hub.procs = [_spawn(args, env, s, lp) for s, lp in zip(socks, hub.log_paths, strict=True)]
        wait_ready(hub.url, hub.procs)
        yield hub
    finally:
        hub.kill(signal.SIGTERM)
        for s in socks:
            s.close()


def _listeners(n: int, backlog: int = 1024) -> list[socket.socket]:
    """``n`` listening sockets on one free 127.0.0.1 port (``SO_REUSEPORT`` when ``n > 1``)."""
    socks: list[socket.socket] = []
    port = 0
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if n > 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", port))
            port = s.getsockname()[1]
            s.listen(backlog)
            s.set_inheritable(True)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks
