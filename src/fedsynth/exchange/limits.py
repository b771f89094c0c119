"""ASGI middlewares around the hub app: size cap (413) and rate limit (429) before any endpoint
reads the body, security headers, and the pull fast lane."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

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
    for chunked uploads as soon as the running count passes the cap (the rest is never read)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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

        async def limited_receive() -> Message:
            # On overflow answer 413 ourselves and tell the app the client went away, so no
            # framework error handler can turn it into another status, and nothing more is read.
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    rejected = True
                    if not started:
                        await _json_response(
                            send, 413, f"request body exceeds the {self.max_bytes}-byte limit"
                        )
                    return {"type": "http.disconnect"}
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 has been sent; drop whatever the app answers
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        await self.app(scope, limited_receive, tracking_send)


class RateLimitMiddleware:
    """Token bucket per bearer token (per client address when there is none), per process.

    Runs before authentication so that guessing tokens is throttled too. With several hub
    processes each keeps its own buckets (the effective limit is N × rate; see docs/hub.md).
    """

    def __init__(
        self, app: ASGIApp, rate_per_s: float, burst: int, exempt: tuple[str, ...] = ("/v1/health",)
    ) -> None:
        self.app = app
        self.rate = rate_per_s
        self.burst = burst
        self.exempt = exempt
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _key(self, scope: Scope) -> str:
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                return "t:" + hashlib.sha256(v).hexdigest()
        client = scope.get("client") or ("?", 0)
        return f"ip:{client[0]}"

    def allow(self, key: str) -> float:
        """0 if allowed, else seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > 100_000:  # bound memory under token-guessing floods
                self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < 60}
        return wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate <= 0 or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        wait = self.allow(self._key(scope))
        if wait > 0:
            await _json_response(
                send,
                429,
                "rate limit exceeded for this token; slow down",
                [(b"retry-after", str(max(1, round(wait))).encode())],
            )
            return
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
