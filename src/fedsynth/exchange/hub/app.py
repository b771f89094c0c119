"""The generator hub as an HTTP service (FastAPI). A thin adapter over :mod:`..protocol`,
:mod:`..db` and :mod:`..store`: authenticate, validate, store, commit, audit.

API (all under ``/v1``; bearer tokens in ``Authorization``):

=========================================================  ======  ==================================
``POST /v1/federations``                                    admin   create a federation + requirements
``GET  /v1/federations``                                    admin   list federations
``POST /v1/federations/{fed}/silos``                        admin   register a silo; token shown once
``GET  /v1/federations/{fed}/audit``                        admin   audit log (newest first)
``GET  /v1/whoami``                                         any     which silo/federation a token is
``GET  /v1/federations/{fed}/requirements``                 silo    Subscribe
``POST /v1/federations/{fed}/pushes``                       silo    Push a generator set (multipart)
``GET  /v1/federations/{fed}/pool``                         silo    list the pool
``GET  /v1/federations/{fed}/generators/{id}/card|weights`` silo    download (Pull)
``GET  /dashboard``                                         admin   read-only HTML page
``/v1/federations/{fed}/rounds[/{rid}[/join|withdraw|...]]`` both    federation rounds (``.rounds``)
``POST /v1/federations/{fed}/silos/{name}/revoke|rotate``   admin   token lifecycle (``.tokens``)
=========================================================  ======  ==================================
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fedsynth.exchange.hub.auth import gate_resolve
from fedsynth.exchange.hub.fastlane import cached_download
from fedsynth.exchange.hub.rounds import rounds
from fedsynth.exchange.hub.routes import ROUTERS
from fedsynth.exchange.hub.settings import MEDIA, HubError, HubSettings
from fedsynth.exchange.hub.state import HubState
from fedsynth.exchange.hub.tokens import tokens
from fedsynth.exchange.limits import (
    AuthGate,
    BodyLimitMiddleware,
    PullFastLane,
    SecurityHeadersMiddleware,
)
from fedsynth.exchange.protocol import PushRefused
from fedsynth.exchange.store import gc_in_background


async def _hub_error(_req: Request, e: HubError) -> JSONResponse:
    return JSONResponse({"detail": e.detail}, status_code=e.status, headers=e.headers)


async def _refused(_req: Request, e: PushRefused) -> JSONResponse:
    return JSONResponse({"detail": str(e)}, status_code=e.status)


def create_app(settings: HubSettings) -> FastAPI:
    hub = HubState.build(settings)
    gc_in_background(hub.engine, hub.store)  # orphans of refused/crashed pushes (issue 12, 7)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        hub.close()

    app = FastAPI(
        lifespan=lifespan,
        title="fedsynth generator hub",
        version="1",
        description="SGDE Subscribe / Push / Pull of DP generators (safetensors decoders + JSON cards).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.hub = hub  # what the routes' dependencies read (routes.get_hub, auth.caller)
    app.state.engine = hub.engine
    app.state.store = hub.store
    app.state.audit = hub.audit
    # Starlette types handlers as taking any Exception (its handler type is not generic in it)
    app.add_exception_handler(HubError, _hub_error)  # type: ignore[arg-type]
    app.add_exception_handler(PushRefused, _refused)  # type: ignore[arg-type]
    # Flat, as `@app.get` would register them: FastAPI 0.138's include_router nests each router
    # (a second route match per request, measured at ~40 µs more per request on the pull route).
    for router in (*ROUTERS, rounds, tokens):
        app.router.routes.extend(router.routes)
    # added innermost first: a request meets the security headers (outermost, so the gate's and the
    # body cap's own 401/408/413/429 carry them too), the body cap and body timeouts, the auth gate
    # (token from the headers, rate limit by identity or address, 401 before any body is read),
    # then the fast lane, and only then FastAPI's routing
    app.add_middleware(PullFastLane, serve=partial(cached_download, hub), media_types=MEDIA)
    app.add_middleware(
        AuthGate,
        resolve=partial(gate_resolve, hub),
        on_refused=hub.audit.refused,
        rate_per_s=settings.rate_per_s,
        burst=settings.rate_burst,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        idle_s=settings.body_idle_s,
        total_s=settings.body_total_s,
    )
    app.add_middleware(SecurityHeadersMiddleware)
    return app
