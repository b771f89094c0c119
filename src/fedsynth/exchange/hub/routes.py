"""The HTTP endpoints, grouped by who calls them. Routes authenticate and check tenancy through
:mod:`.auth`, then hand off to :mod:`.ledger` (push) or answer from the caches / store / DB.
Sync routes (DB work) run on the threadpool; the pull routes are async so that a cached pull
never leaves the event loop."""

# no `from __future__ import annotations`: FastAPI resolves the Annotated[..., Depends(..)]
# parameters from these signatures at import time

import json
import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedsynth.exchange import db
from fedsynth.exchange.dashboard import render_dashboard
from fedsynth.exchange.hub.audit_log import audit, audit_pull
from fedsynth.exchange.hub.auth import AdminDep, CallerDep, amember, federation, member
from fedsynth.exchange.hub.ledger import commit_push
from fedsynth.exchange.hub.settings import (
    API_VERSION,
    CSP,
    MEDIA,
    AddSilo,
    CreateFederation,
    HubError,
    hash_token,
)
from fedsynth.exchange.hub.state import HubState, hub_of
from fedsynth.exchange.hub.validation import SafeErrorsRoute
from fedsynth.exchange.hub.views import audit_dict, dashboard_sections, generator_dict, requirements_of
from fedsynth.exchange.protocol import (
    PushRefused,
    check_name,
    check_requirements,
    schema_charge,
    validate_generator_set,
)

log = logging.getLogger("fedsynth.hub")


async def get_hub(request: Request) -> HubState:  # async: a sync dependency would cost a thread hop
    return hub_of(request)


Hub = Annotated[HubState, Depends(get_hub)]
GenId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]

meta = APIRouter(tags=["meta"])
admin = APIRouter(route_class=SafeErrorsRoute, tags=["admin"])
silo = APIRouter(route_class=SafeErrorsRoute, tags=["silo"])
pages = APIRouter(tags=["admin"])  # HTML, not JSON; registered last, as it always was


# ---------------------------------------------------------------- meta
@meta.get("/v1/health")
def health() -> dict[str, str]:
    return {"status": "ok", "api": API_VERSION}


@meta.get("/v1/whoami")
def whoami(c: CallerDep) -> dict[str, Any]:
    return {"kind": c.kind, "silo": c.silo, "federation": c.federation}


# ---------------------------------------------------------------- admin
@admin.post("/v1/federations", status_code=201)
def create_federation(hub: Hub, body: CreateFederation, _: AdminDep) -> dict[str, Any]:
    check_name("federation", body.name)
    families_d = body.families
    if families_d is None and body.decoder_spec is not None:  # clients from before families
        families_d = [{"kind": "dp-vae/1", "spec": body.decoder_spec}]
    if families_d is None:
        raise PushRefused("give 'families' (a list of {kind, spec}) for the federation")
    schema, families = check_requirements(
        body.data_schema,
        families_d,
        body.max_epsilon,
        body.max_delta,
        body.silo_epsilon_budget,
        schema_silos=body.schema_silos,
        spec=hub.checker.family_spec,
    )
    sd = schema.to_dict()
    pd_: dict[str, Any] = {"families": [{"kind": k, "spec": v} for k, v in families.items()]}
    if body.allow_legacy_cards:
        pd_["allow_legacy_cards"] = True
    if body.schema_silos:  # checked above: only for a DP schema, names valid and distinct
        pd_["schema_silos"] = list(body.schema_silos)
    if "\\u0000" in json.dumps([sd, pd_]):  # PostgreSQL JSON cannot hold NUL characters
        raise PushRefused("schema and spec may not contain NUL characters")
    try:
        with hub.sessions.begin() as s:
            s.add(
                db.Federation(
                    name=body.name,
                    schema_json=sd,
                    schema_hash=schema.hash(),
                    spec_json=pd_,
                    max_epsilon=body.max_epsilon,
                    max_delta=body.max_delta,
                    silo_epsilon_budget=body.silo_epsilon_budget,
                )
            )
            s.add(db.AuditEvent(federation=body.name, action="create-federation", outcome="ok", detail=""))
    except IntegrityError:
        raise HubError(409, f"federation {body.name!r} already exists") from None
    return federation(hub, body.name)[1].to_dict()


@admin.get("/v1/federations")
def list_federations(hub: Hub, _: AdminDep) -> list[dict[str, Any]]:
    with hub.sessions() as s:
        feds = s.execute(select(db.Federation).order_by(db.Federation.id)).scalars().all()
        return [requirements_of(f).to_dict() for f in feds]


@admin.post("/v1/federations/{fed}/silos", status_code=201)
def add_silo(hub: Hub, fed: str, body: AddSilo, _: AdminDep) -> dict[str, str]:
    fid, req = federation(hub, fed)
    check_name("silo", body.name)
    # a silo whose rows estimated the federation's DP schema starts with that (ε, δ) spent
    eps, dl = schema_charge(req, body.name)
    detail = (
        f"charged the DP schema's ε = {eps:g}, δ = {dl:g} (its rows were used to estimate it)"
        if eps > 0
        else ""
    )
    token = "fsk_" + secrets.token_urlsafe(32)
    try:
        with hub.sessions.begin() as s:
            s.add(
                db.Silo(
                    federation_id=fid,
                    name=body.name,
                    token_hash=hash_token(token),
                    epsilon_spent=eps,
                    delta_spent=dl,
                )
            )
            s.add(
                db.AuditEvent(
                    federation=fed,
                    silo=body.name,
                    action="add-silo",
                    outcome="ok",
                    epsilon=eps,
                    detail=detail,
                )
            )
    except IntegrityError:
        raise HubError(409, f"silo {body.name!r} already exists in {fed!r}") from None
    return {
        "federation": fed,
        "silo": body.name,
        "token": token,
        "note": "the token is shown only once; the hub stores only its hash",
    }


@admin.get("/v1/federations/{fed}/audit")
def get_audit(
    hub: Hub, fed: str, _: AdminDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 200
) -> list[dict[str, Any]]:
    federation(hub, fed)
    hub.audit.flush()
    with hub.sessions() as s:
        rows = (
            s.execute(
                select(db.AuditEvent)
                .where(db.AuditEvent.federation == fed)
                .order_by(db.AuditEvent.id.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
        return [audit_dict(a) for a in rows]


# ---------------------------------------------------------------- silo: subscribe, push, pool
@silo.get("/v1/federations/{fed}/requirements")
def subscribe(hub: Hub, fed: str, c: CallerDep) -> dict[str, Any]:
    _fid, req = member(hub, fed, c, allow_admin=True)
    out = req.to_dict()
    if c.kind == "silo":
        with hub.sessions() as s:
            row = s.get(db.Silo, c.silo_id)
            assert row is not None  # the caller authenticated as this silo
            out.update(
                silo=c.silo,
                epsilon_spent=row.epsilon_spent,
                epsilon_reserved=row.epsilon_reserved,  # held by a federation round it joined
                delta_spent=row.delta_spent,
            )
        audit(hub.audit, "subscribe", "ok", federation=fed, silo=c.silo)
    return out


@silo.post("/v1/federations/{fed}/pushes")
def push(
    hub: Hub,
    fed: str,
    c: CallerDep,
    response: Response,
    cards: Annotated[list[UploadFile], File(description="one JSON card per generator")],
    weights: Annotated[list[UploadFile], File(description="safetensors weights, same order as cards")],
) -> dict[str, Any]:
    fid, req = member(hub, fed, c, allow_admin=False)
    try:
        if len(cards) != len(weights):
            raise PushRefused(f"{len(cards)} cards but {len(weights)} weight files; they must pair up")
        # client-chosen file names are ignored: the store names everything by SHA-256
        items = [(cf.file.read(), wf.file.read()) for cf, wf in zip(cards, weights, strict=True)]
        vp = validate_generator_set(req, items, schema_cost=schema_charge(req, c.silo), check=hub.checker)
    except PushRefused as e:
        audit(hub.audit, "push", "refused", federation=fed, silo=c.silo, detail=str(e))
        raise
    result, created = commit_push(hub, fed, fid, req, c, vp)
    if created:
        response.status_code = 201
    return result


@silo.get("/v1/federations/{fed}/pool")
def pool(
    hub: Hub,
    fed: str,
    c: CallerDep,
    exclude_silo: Annotated[list[str] | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    fid, _req = member(hub, fed, c, allow_admin=True)
    with hub.sessions() as s:
        rows = s.execute(  # outer join: a federation round's generator has no silo
            select(db.Generator, db.Silo.name)
            .outerjoin(db.Silo, db.Generator.silo_id == db.Silo.id)
            .where(db.Generator.federation_id == fid)
            .order_by(db.Generator.id)
        ).all()
    skip = set(exclude_silo or ())
    return [generator_dict(g, name) for g, name in rows if name not in skip]


# ---------------------------------------------------------------- silo: downloads (Pull)
def generator_row(hub: HubState, fid: int, gid: int) -> tuple[db.Generator, str]:
    with hub.lock:
        hit = hub.generators.get((fid, gid))
    if hit:
        return hit
    with hub.sessions() as s:
        row = s.execute(
            select(db.Generator, db.Silo.name)
            .outerjoin(db.Silo, db.Generator.silo_id == db.Silo.id)
            .where(db.Generator.id == gid, db.Generator.federation_id == fid)
        ).first()
    if row is None:
        raise HubError(404, "no such generator in this federation")
    owner = row[1] if row[1] is not None else f"round {row[0].round_id}"
    with hub.lock:  # committed generators never change
        hub.generators[(fid, gid)] = (row[0], owner)
    return row[0], owner


async def download(hub: HubState, fid: int, gid: int, which: str) -> tuple[db.Generator, str, bytes]:
    with hub.lock:
        hit = hub.generators.get((fid, gid))
    g, owner = hit if hit else await run_in_threadpool(generator_row, hub, fid, gid)
    digest = g.weights_sha256 if which == "weights" else g.card_sha256
    data = hub.blobs.get(digest)
    if data is None:
        try:
            data = await run_in_threadpool(hub.store.get, digest)
        except OSError as e:  # missing or corrupted on disk: an operator problem, say so
            log.error("artifact %s of generator %s unavailable: %s", digest, gid, e)
            raise HubError(503, "artifact temporarily unavailable on the hub") from None
        hub.blobs.put(digest, data)
    return g, owner, data


@silo.get("/v1/federations/{fed}/generators/{gid}/card")
async def get_card(request: Request, fed: str, gid: GenId, c: CallerDep) -> Response:
    hub = hub_of(request)  # the pull routes skip the Hub dependency: one solve less per pull
    fid, _req = await amember(hub, fed, c, allow_admin=True)
    g, _, data = await download(hub, fid, gid, "card")
    return Response(data, media_type=MEDIA["card"], headers={"X-Content-SHA256": g.card_sha256})


@silo.get("/v1/federations/{fed}/generators/{gid}/weights")
async def get_weights(request: Request, fed: str, gid: GenId, c: CallerDep) -> Response:
    hub = hub_of(request)
    fid, _req = await amember(hub, fed, c, allow_admin=True)
    g, owner, data = await download(hub, fid, gid, "weights")
    audit_pull(hub.audit, fed, c, g, owner)
    return Response(data, media_type=MEDIA["weights"], headers={"X-Content-SHA256": g.weights_sha256})


# ---------------------------------------------------------------- dashboard
@pages.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    hub: Hub,
    _: AdminDep,
    federation_name: Annotated[str | None, Query(alias="federation", max_length=64)] = None,
) -> HTMLResponse:
    hub.audit.flush()
    html = render_dashboard(dashboard_sections(hub.sessions, federation_name))
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"})


ROUTERS = (meta, admin, silo, pages)
