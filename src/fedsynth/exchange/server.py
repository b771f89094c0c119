"""Start a hub process: migrate the database, then serve the app with uvicorn.

``python -m fedsynth.exchange.server --db URL --store DIR [--port P | --fd N] [--tls-cert C --tls-key K]``.
The admin token comes from ``FEDSYNTH_HUB_ADMIN_TOKEN`` (environment, not argv, so it does not show
in ``ps``); if unset a random one is generated and printed once on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import socket
import sys

ADMIN_TOKEN_ENV = "FEDSYNTH_HUB_ADMIN_TOKEN"


def header_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline for the request line and headers.

    uvicorn has no header timeout: its keep-alive timer is cancelled by any byte received, so a
    client sending one header byte per second holds its connection (and a ``limit_concurrency``
    slot) forever. Here a new connection, and each later request on a kept-alive one from its
    first byte, must deliver complete headers within ``timeout_s`` or the connection is closed
    (an idle kept-alive connection is left to uvicorn's keep-alive timer). Built on httptools
    when it is installed (what uvicorn's "auto" picks: h11 costs ~90 µs more CPU per request),
    else on h11.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # no httptools: uvicorn's pure-Python h11 protocol
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class HeaderDeadline(Base):
        _deadline: asyncio.TimerHandle | None = None
        _waiting = True  # no complete request head yet in this cycle

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._waiting = True
            self._deadline = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            self._waiting = False
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self._waiting and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and not self._in_request():
                self._arm()  # the first byte of the next request on a kept-alive connection
            super().data_received(data)
            if self._deadline is not None and self._head_done():
                self._disarm()  # headers are in; the body has its own timeouts (limits.py)

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _head_done(self) -> bool:
            # a request cycle exists once the parser has seen the whole head (both protocols
            # create it on "headers complete")
            return self._in_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline


def serve(
    db_url: str,
    store_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    fd: int | None = None,
    admin_token: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    migrate: bool = True,
    rate_per_s: float = 50.0,
    rate_burst: int = 200,
    max_body_mb: float = 64.0,
    log_level: str = "warning",
    loop: str = "asyncio",
    header_timeout_s: float = 10.0,
    keep_alive_s: int = 30,
    body_idle_s: float = 30.0,
    body_total_s: float = 600.0,
    limit_concurrency: int = 1000,
) -> None:
    import uvicorn

    from fedsynth.exchange.db import migrate as run_migrations
    from fedsynth.exchange.hub.app import create_app
    from fedsynth.exchange.hub.settings import settings_from_env

    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key must be given together")
    token = admin_token or os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        token = "fsa_" + secrets.token_urlsafe(32)
        print(f"admin token (shown once): {token}", file=sys.stderr, flush=True)
    if len(token) < 16:
        raise ValueError("the admin token must be at least 16 characters")
    if migrate:
        run_migrations(db_url)
    settings = settings_from_env(
        db_url,
        store_dir,
        token,
        rate_per_s=rate_per_s,
        rate_burst=rate_burst,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        body_idle_s=body_idle_s,
        body_total_s=body_total_s,
    )
    app = create_app(settings)
    # Start-up leaves the web and SQL stacks' long-lived objects (and, after the first push of a
    # neural family, torch's ~250k) for every full collection to walk, stalling the event loop
    # ~90 ms mid-burst. Freeze what exists once start-up is done.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        # slow clients: a header deadline per request, the keep-alive, a cap on connections
        # plus tasks (503 beyond it), and (under h11) a 16 KB cap on an incomplete request head
        http=header_deadline_protocol(header_timeout_s) if header_timeout_s > 0 else "auto",
        timeout_keep_alive=keep_alive_s,
        limit_concurrency=limit_concurrency or None,
        h11_max_incomplete_event_size=16 * 1024,
        host=host,
        port=port,
        log_level=log_level,
        # asyncio's accept loop drains a burst of new connections fairly; under load uvloop was
        # measured leaving some of 200 simultaneous connects unaccepted for ~400 ms (docs/hub.md)
        loop=loop,
        access_log=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    if fd is None:
        server.run()
    else:
        # socket.socket(fileno=) detects the real family (AF_INET); uvicorn's own ``fd=`` treats it
        # as AF_UNIX, so the event loop would skip TCP_NODELAY and every small response would
        # wait ~40 ms on Nagle + delayed ACK.
        server.run(sockets=[socket.socket(fileno=fd)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="fedsynth-hub")
    ap.add_argument("--db", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--fd", type=int, default=None, help="serve on an already-bound listening socket")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--no-migrate", action="store_true")
    ap.add_argument("--rate", type=float, default=50.0, help="requests/s per token (0 = unlimited)")
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--max-body-mb", type=float, default=64.0)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop", "auto"])
    ap.add_argument("--header-timeout", type=float, default=10.0, help="s for a request's headers (0: off)")
    ap.add_argument("--keep-alive", type=int, default=30, help="s an idle connection stays open")
    ap.add_argument("--body-idle-timeout", type=float, default=30.0, help="s between body chunks (408)")
    ap.add_argument("--body-timeout", type=float, default=600.0, help="s for a whole body (408)")
    ap.add_argument("--limit-concurrency", type=int, default=1000, help="connections+tasks (503 above)")
    a = ap.parse_args(argv)
    serve(
        a.db,
        a.store,
        host=a.host,
        port=a.port,
        fd=a.fd,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        migrate=not a.no_migrate,
        rate_per_s=a.rate,
        rate_burst=a.burst,
        max_body_mb=a.max_body_mb,
        log_level=a.log_level,
        loop=a.loop,
        header_timeout_s=a.header_timeout,
        keep_alive_s=a.keep_alive,
        body_idle_s=a.body_idle_timeout,
        body_total_s=a.body_timeout,
        limit_concurrency=a.limit_concurrency,
    )


if __name__ == "__main__":
    main()
