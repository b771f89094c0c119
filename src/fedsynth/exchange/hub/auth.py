"""Who is calling (bearer token → :class:`Caller`) and what they may touch (admin, federation
membership). The dependencies here are what the routes declare in ``Annotated[..., Depends(..)]``."""

# no `from __future__ import annotations`: FastAPI reads these signatures at import time and
# resolves the dependency types from them

import hmac
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from fedsynth.exchange import db
from fedsynth.exchange.hub.audit_log import audit
from fedsynth.exchange.hub.settings import TOKEN_CACHE_TTL_S, Caller, HubError, hash_token
from fedsynth.exchange.hub.state import HubState, hub_of
from fedsynth.exchange.hub.views import requirements_of
from fedsynth.exchange.limits import CALLER_KEY, client_key
from fedsynth.exchange.protocol import PushRefused, Requirements, check_name


def identify(hub: HubState, token_hash: str, *, use_db: bool) -> Caller | None:
    """The one token lookup: the admin token, then the per-process cache (entries live
    ``TOKEN_CACHE_TTL_S``: the revocation bound), then (only if ``use_db``, which blocks) the
    silos table. ``None`` for an unknown token."""
    if hmac.compare_digest(token_hash, hub.settings.admin_token_hash):
        return Caller("admin")
    now = time.monotonic()
    with hub.lock:
        hit = hub.tokens.get(token_hash)
        if hit is not None and hit[1] <= now:
            del hub.tokens[token_hash]
            hit = None
    if hit is not None:
        return hit[0]
    if not use_db:
        return None
    with hub.sessions() as s:
        row = s.execute(
            select(db.Silo.id, db.Silo.name, db.Federation.id, db.Federation.name)
            .join(db.Federation, db.Silo.federation_id == db.Federation.id)
            .where(db.Silo.token_hash == token_hash)
        ).first()
    if row is None:
        return None
    c = Caller("silo", row[0], row[1], row[2], row[3])
    with hub.lock:
        hub.tokens[token_hash] = (c, time.monotonic() + TOKEN_CACHE_TTL_S)
    return c


def gate_resolve(hub: HubState, token: str, use_db: bool) -> tuple[str, Any] | None:
    """For :class:`fedsynth.exchange.limits.AuthGate`: (rate-limit identity, caller) or None."""
    c = identify(hub, hash_token(token), use_db=use_db)
    if c is None:
        return None
    return ("admin" if c.kind == "admin" else f"silo:{c.silo_id}"), c


def bearer(hub: HubState, request: Request) -> str:
    h = request.headers.get("authorization", "")
    scheme, _, tok = h.partition(" ")
    if scheme.lower() != "bearer" or not tok.strip():
        hub.audit.refused(client_key(request.scope)[3:], f"missing bearer token on {request.url.path[:100]}")
        raise HubError(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    return tok.strip()


async def caller(request: Request) -> Caller:
    hub = hub_of(request)
    th = hash_token(bearer(hub, request))
    if CALLER_KEY in request.scope:  # the gate already looked the token up (cache, then DB)
        c = request.scope[CALLER_KEY]
    else:
        c = identify(hub, th, use_db=False)
        if c is None:  # cache miss: the DB lookup runs off the event loop
            c = await run_in_threadpool(identify, hub, th, use_db=True)
    if c is None:
        hub.audit.refused(client_key(request.scope)[3:], f"unknown token on {request.url.path[:100]}")
        raise HubError(401, "invalid token", {"WWW-Authenticate": "Bearer"})
    return c


async def admin(request: Request, c: Annotated[Caller, Depends(caller)]) -> Caller:
    if c.kind != "admin":
        audit(
            hub_of(request).audit,
            "auth",
            "refused",
            federation=c.federation,
            silo=c.silo,
            detail="silo token on admin endpoint",
        )
        raise HubError(403, "this endpoint needs the admin token")
    return c


CallerDep = Annotated[Caller, Depends(caller)]
AdminDep = Annotated[Caller, Depends(admin)]


def federation(hub: HubState, fed: str) -> tuple[int, Requirements]:
    """(id, requirements) of a federation; 404 for a malformed or unknown name."""
    try:
        check_name("federation", fed)
    except PushRefused:
        raise HubError(404, "no such federation") from None
    with hub.lock:
        hit = hub.federations.get(fed)
    if hit:
        return hit
    with hub.sessions() as s:
        f = s.execute(select(db.Federation).where(db.Federation.name == fed)).scalar_one_or_none()
    if f is None:
        raise HubError(404, "no such federation")
    out = (f.id, requirements_of(f))
    with hub.lock:
        hub.federations[fed] = out
    return out


def member(hub: HubState, fed: str, c: Caller, *, allow_admin: bool) -> tuple[int, Requirements]:
    """Tenancy: a silo token acts only in its own federation; the admin only where allowed."""
    if c.kind == "admin":
        if not allow_admin:
            raise HubError(403, "the admin token cannot act as a silo")
        return federation(hub, fed)
    if c.federation != fed:
        audit(
            hub.audit,
            "auth",
            "refused",
            federation=c.federation,
            silo=c.silo,
            detail=f"token scoped to another federation tried {fed[:64]!r}",
        )
        raise HubError(403, "this token belongs to another federation")
    return federation(hub, fed)


async def amember(hub: HubState, fed: str, c: Caller, *, allow_admin: bool) -> tuple[int, Requirements]:
    """:func:`member` for async routes: on the loop when the federation is cached, else off it."""
    with hub.lock:
        cached = fed in hub.federations
    if cached:
        return member(hub, fed, c, allow_admin=allow_admin)
    return await run_in_threadpool(member, hub, fed, c, allow_admin=allow_admin)
