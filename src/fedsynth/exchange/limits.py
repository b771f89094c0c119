"""ASGI middlewares around the hub app: size cap (413), body-read timeouts (408), authentication
from the headers (401) and rate limit (429) before any endpoint reads the body, security headers,
and the pull fast lane."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _json_response(
    send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Answer 413 for bodies over ``max_bytes``: from Content-Length before reading anything, and
    for chunked uploads as soon as the running count passes the cap (the rest is never read).

    Also bounds how long a body may take (408): ``idle_s`` between two chunks and ``total_s`` for
    the whole body, so a client trickling bytes cannot hold a request (and its worker) forever.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, idle_s: float = 30.0, total_s: float = 600.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s
        self.total_s = total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    await _json_response(send, 400, "invalid Content-Length")
                    return
                if n > self.max_bytes:
                    await _json_response(
                        send, 413, f"request body of {n} bytes exceeds the {self.max_bytes}-byte limit"
                    )
                    return
        seen = 0
        started = False
        rejected = False
        deadline = time.monotonic() + self.total_s

        async def refuse(status: int, detail: str) -> Message:
            # answer ourselves and tell the app the client went away, so no framework error
            # handler can turn it into another status, and nothing more is read
            nonlocal rejected
            rejected = True
            if not started:
                await _json_response(send, status, detail)
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal seen
            if rejected:
                return {"type": "http.disconnect"}
            wait = min(self.idle_s, deadline - time.monotonic())
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except TimeoutError:
                return await refuse(408, "request body too slow; the hub closed the request")
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    return await refuse(413, f"request body exceeds the {self.max_bytes}-byte limit")
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if rejected:
                return  # our answer has been sent; drop whatever the app answers
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        await self.app(scope, limited_receive, tracking_send)


class TokenBuckets:
    """Token buckets in a bounded LRU (``OrderedDict``: O(1) lookup, refresh and eviction), so a
    flood of new keys costs constant memory and constant time per request. An evicted key starts
    again with a full bucket; with keys being client addresses and silo identities (never raw
    header strings) an attacker needs ``max_keys`` addresses to exploit that."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 65_536) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._b)

    def take(self, key: str) -> float:
        """0 if allowed (one token taken), else seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._b.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            self._b[key] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            self._b.move_to_end(key)
            if len(self._b) > self.max_keys:
                self._b.popitem(last=False)
        return wait


def client_key(scope: Scope) -> str:
    """The rate-limit key of an unauthenticated request: its address (IPv6: its /64, which one
    host usually owns whole, so rotating addresses inside it buys nothing)."""
    host = str((scope.get("client") or ("?", 0))[0])
    if ":" in host:
        try:
            return "ip:" + str(ipaddress.ip_network(f"{host}/64", strict=False))
        except ValueError:
            pass
    return "ip:" + host


def bearer_token(scope: Scope) -> str | None:
    """The bearer token of the FIRST Authorization header (the one the routes read), or None."""
    for k, v in scope.get("headers", []):
        if k == b"authorization":
            scheme, _, tok = v.decode("latin-1").partition(" ")
            return tok.strip() if scheme.lower() == "bearer" and tok.strip() else None
    return None


#: where :class:`AuthGate` leaves the resolved caller for the routes (None: no valid token)
CALLER_KEY = "fedsynth.caller"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuthGate:
    """Authenticate from the headers, then rate-limit, before anything reads the body.

    ``resolve(token, use_db)`` returns ``(identity, caller)`` or ``None``; ``use_db=False`` must
    not block (the per-process cache), ``use_db=True`` runs on the threadpool. Buckets are keyed
    by the identity (a silo, the admin) once the token is known, so one token spelled many ways
    is one bucket; anything else (no token, an unknown token, a cache miss before the DB lookup)
    is charged to the client's address, so guessing tokens is throttled per source. A request
    that can carry a body (POST/PUT/PATCH/DELETE) without a valid token gets its 401 here, before
    a byte of the body is read; others go on with ``scope[CALLER_KEY] = None`` and the route
    answers (404 before 401 keeps its old order there). ``on_refused(source, detail)`` records the
    401s answered here (aggregated by the caller; see ``AuditWriter.refused``).
    """

    def __init__(
        self,
        app: ASGIApp,
        resolve: Callable[[str, bool], tuple[str, Any] | None],
        on_refused: Callable[[str, str], None],
        rate_per_s: float,
        burst: int,
        exempt: tuple[str, ...] = ("/v1/health",),
        max_keys: int = 65_536,
    ) -> None:
        self.app = app
        self.resolve = resolve
        self.on_refused = on_refused
        self.buckets = TokenBuckets(rate_per_s, burst, max_keys) if rate_per_s > 0 else None
        self.exempt = exempt

    async def _throttled(self, key: str, send: Send) -> bool:
        if self.buckets is None:
            return False
        wait = self.buckets.take(key)
        if wait <= 0:
            return False
        await _json_response(
            send,
            429,
            "rate limit exceeded; slow down",
            [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
        )
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        hit = self.resolve(token, False) if token else None
        if hit is not None:
            if await self._throttled("id:" + hit[0], send):
                return
        else:
            source = client_key(scope)
            if await self._throttled(source, send):
                return
            if token:  # cache miss: the DB lookup, off the event loop
                hit = await run_in_threadpool(self.resolve, token, True)
            if hit is None and scope["method"] in _BODY_METHODS:
                self.on_refused(source[3:], f"{'unknown' if token else 'missing'} token on {scope['method']}")
                await _json_response(
                    send,
                    401,
                    "invalid token" if token else "missing bearer token",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        scope[CALLER_KEY] = hit[1] if hit is not None else None
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds ``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store`` to every response
    (pure ASGI: no per-request task like ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [
                    *msg.get("headers", []),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                ]
            await send(msg)

        await self.app(scope, receive, add_headers)


_PULL = re.compile(r"/v1/federations/([^/]+)/generators/([0-9]{1,10})/(weights|card)")


class PullFastLane:
    """Serve ``GET /v1/federations/{fed}/generators/{gid}/{weights|card}`` straight from memory.

    ``serve(fed, gid, which, token)`` returns ``(generator, bytes)`` when every fact the route
    needs is already cached and the token may read it, else ``None``: then the request goes on
    to the FastAPI route unchanged, which owns every error and refusal. Sits inside the rate
    limit and the security headers, so a fast-lane answer is throttled and labelled the same.
    """

    def __init__(
        self,
        app: ASGIApp,
        serve: Callable[[str, int, str, str], tuple[Any, bytes] | None],
        media_types: dict[str, str],
    ) -> None:
        self.app = app
        self.serve = serve
        self.media = {k: v.encode() for k, v in media_types.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("query_string"):
            m = _PULL.fullmatch(scope["path"])
            if m is not None:
                hit = self._hit(scope, m)
                if hit is not None:
                    digest, body, which = hit
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-length", str(len(body)).encode()),
                                (b"content-type", self.media[which]),
                                (b"x-content-sha256", digest.encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _hit(self, scope: Scope, m: re.Match[str]) -> tuple[str, bytes, str] | None:
        gid = int(m.group(2))
        if not 1 <= gid <= 2**31 - 1:
            return None
        token = None
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                scheme, _, tok = v.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and tok.strip():
                    token = tok.strip()
                break  # the first Authorization header is the one the route reads
        if token is None:
            return None
        which = m.group(3)
        hit = self.serve(m.group(1), gid, which, token)
        if hit is None:
            return None
        g, body = hit
        return (g.weights_sha256 if which == "weights" else g.card_sha256), body, which
