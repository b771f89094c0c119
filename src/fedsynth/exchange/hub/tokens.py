"""Silo token lifecycle (admin): revoke a silo's token, or rotate it (a new token, shown once).

==========================================================  ======  ==============================
``POST /v1/federations/{fed}/silos/{name}/revoke``           admin   the silo's token stops working
``POST /v1/federations/{fed}/silos/{name}/rotate``           admin   a new token; the old one stops
==========================================================  ======  ==============================

Both replace ``silos.token_hash`` (no new column): rotate with the new token's hash, revoke with
``revoked-`` + random hex, which no token hashes to (a SHA-256 hex digest has no ``-``). The silo's
row, ledger and pushes stay: its generators remain in the pool, its ε stays spent, and a later
rotate gives a revoked silo a working token again. This process forgets the old token at once;
other processes within ``TOKEN_CACHE_TTL_S`` (their cache entries expire, and the database no
longer knows the hash).
"""

# no `from __future__ import annotations`: FastAPI resolves the Annotated[..., Depends(..)]
# parameters from these signatures at import time

import secrets
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select, update

from fedsynth.exchange import db
from fedsynth.exchange.hub.auth import AdminDep, federation
from fedsynth.exchange.hub.routes import Hub
from fedsynth.exchange.hub.settings import TOKEN_CACHE_TTL_S, HubError, hash_token
from fedsynth.exchange.hub.state import HubState

tokens = APIRouter(tags=["admin"])


def _replace_hash(hub: HubState, fed: str, name: str, new_hash: str, action: str) -> None:
    fid, _req = federation(hub, fed)
    with hub.sessions.begin() as s:
        sid = s.execute(
            select(db.Silo.id).where(db.Silo.federation_id == fid, db.Silo.name == name)
        ).scalar_one_or_none()
        if sid is None:
            raise HubError(404, "no such silo in this federation")
        s.execute(update(db.Silo).where(db.Silo.id == sid).values(token_hash=new_hash))
        s.add(db.AuditEvent(federation=fed, silo=name, action=action, outcome="ok", detail=""))
    hub.forget_silo(sid)


@tokens.post("/v1/federations/{fed}/silos/{name}/revoke")
def revoke_silo(hub: Hub, fed: str, name: str, _: AdminDep) -> dict[str, Any]:
    _replace_hash(hub, fed, name, "revoked-" + secrets.token_hex(28), "revoke-silo")
    return {
        "federation": fed,
        "silo": name,
        "revoked": True,
        "effective_within_s": TOKEN_CACHE_TTL_S,
        "note": "the silo's pushes stay in the pool; rotate-token gives it a new token",
    }


@tokens.post("/v1/federations/{fed}/silos/{name}/rotate")
def rotate_token(hub: Hub, fed: str, name: str, _: AdminDep) -> dict[str, Any]:
    token = "fsk_" + secrets.token_urlsafe(32)
    _replace_hash(hub, fed, name, hash_token(token), "rotate-token")
    return {
        "federation": fed,
        "silo": name,
        "token": token,
        "effective_within_s": TOKEN_CACHE_TTL_S,
        "note": "the token is shown only once; the old token stops working within the bound",
    }
