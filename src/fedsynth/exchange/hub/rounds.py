"""Federation rounds over HTTP: the hub coordinates, a separate runner computes.

=====================================================  ======  ========================================
``POST /v1/federations/{fed}/rounds``                   admin   open a round (one at a time)
``GET  /v1/federations/{fed}/rounds``                   both    the federation's rounds, newest first
``GET  /v1/federations/{fed}/rounds/{rid}``             both    one round (a silo sees its own partition)
``POST /v1/federations/{fed}/rounds/{rid}/join``        silo    reserve ε, become a member
``POST /v1/federations/{fed}/rounds/{rid}/withdraw``    silo    leave an open round, ε released
``POST /v1/federations/{fed}/rounds/{rid}/start``       admin   running (partition ids) or expired
``POST /v1/federations/{fed}/rounds/{rid}/result``      admin   the fitted generator (multipart)
``POST /v1/federations/{fed}/rounds/{rid}/abort``       admin   aborted, ε released
=====================================================  ======  ========================================

Rules and states: :mod:`fedsynth.exchange.rounds_protocol`; ledger writes: :mod:`.ledger`.
Every state change opens its transaction with a conditional UPDATE of the round row (SQLite: the
database's write lock; PostgreSQL: the row lock), so a join racing a start, or a result racing an
abort, serialise: exactly one wins and the other sees the new state.

Rounds expire lazily: any call that looks at a federation's rounds first expires an open round
whose join deadline passed with fewer than ``min_silos`` members (reservations released), so a
round nobody starts cannot hold silos' budgets, or block the next round, forever.
"""

# no `from __future__ import annotations`: FastAPI resolves the Annotated[..., Depends(..)]
# parameters from these signatures at import time

import dataclasses
import json
import logging
from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Body, File, Form, Query, UploadFile
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from fedsynth.artifacts.card import ArtifactError
from fedsynth.exchange import db
from fedsynth.exchange.hub.audit_log import audit
from fedsynth.exchange.hub.auth import AdminDep, CallerDep, federation, member
from fedsynth.exchange.hub.ledger import close_round, commit_round_result, release, reserve, rowcount
from fedsynth.exchange.hub.routes import Hub
from fedsynth.exchange.hub.settings import HubError
from fedsynth.exchange.hub.state import HubState
from fedsynth.exchange.hub.validation import SafeErrorsRoute
from fedsynth.exchange.hub.views import round_dict, round_rows
from fedsynth.exchange.protocol import (
    PushRefused,
    Requirements,
    check_caps,
    validate_generator_set,
)
from fedsynth.exchange.rounds_protocol import (
    MAX_DEADLINE_S,
    check_result_claim,
    contributing_members,
    parse_contributors,
    parse_report,
    resolve_deadline,
)
from fedsynth.generators.base import UnknownFamilyError

log = logging.getLogger("fedsynth.hub")
RoundId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
rounds = APIRouter(route_class=SafeErrorsRoute, tags=["rounds"])


class OpenRound(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str = Field(min_length=1, max_length=64, description="a family kind or short name")
    epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(gt=0, lt=1)
    min_silos: int = Field(ge=2, le=10_000)
    deadline_s: float | None = Field(default=None, gt=0, le=MAX_DEADLINE_S, description="joins close then")
    deadline: datetime | None = Field(default=None, description="or an absolute time, with a time zone")
    spec: dict[str, Any] | None = Field(default=None, description="default: the family's default spec")


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)


# ---------------------------------------------------------------- helpers
def _round(s: Session, fid: int, rid: int) -> db.Round:
    r = s.get(db.Round, rid)
    if r is None or r.federation_id != fid:
        raise HubError(404, f"no round {rid} in this federation")
    return r


def _lock(
    s: Session, fid: int, rid: int, states: tuple[str, ...], open_until: datetime | None = None
) -> bool:
    """The first statement of every round transaction: a no-op UPDATE of the round row, matching
    only while it is in ``states`` (and, with ``open_until``, its deadline is after that time)."""
    q = update(db.Round).where(db.Round.id == rid, db.Round.federation_id == fid, db.Round.status.in_(states))
    if open_until is not None:
        q = q.where(db.Round.deadline > open_until)
    return rowcount(s, q.values(status=db.Round.status)) == 1


def _state(r: db.Round) -> str:
    """``"expired (why)"``: the state with the reason it got there, for refusals."""
    return f"{r.status} ({r.detail})" if r.detail and r.status in ("expired", "aborted") else r.status


def _wrong_state(s: Session, fid: int, rid: int, what: str) -> NoReturn:
    r = _round(s, fid, rid)  # 404 first
    raise PushRefused(f"round {rid} is {_state(r)}; {what}", 409)


def _view(hub: HubState, fid: int, req: Requirements, rid: int, viewer_silo_id: int | None) -> dict[str, Any]:
    with hub.sessions() as s:
        r = _round(s, fid, rid)
        members, gens, push_id = round_rows(s, r)
        return round_dict(r, req, members, gens, push_id, viewer_silo_id=viewer_silo_id)


def _joined(s: Session, rid: int) -> list[db.RoundMember]:
    """Members holding a reservation, in join order (the order partition ids follow)."""
    return list(
        s.execute(
            select(db.RoundMember)
            .where(db.RoundMember.round_id == rid, db.RoundMember.status == "joined")
            .order_by(db.RoundMember.joined, db.RoundMember.silo_id)
        ).scalars()
    )


def expire_due(hub: HubState, fed: str, fid: int) -> None:
    """Expire the federation's open round if its deadline passed with fewer than min_silos."""
    now = db.utcnow()
    joined = (
        select(func.count())
        .where(db.RoundMember.round_id == db.Round.id, db.RoundMember.status == "joined")
        .scalar_subquery()
    )
    with hub.sessions() as s:  # read-only first: most calls find nothing due and write nothing
        rid = s.execute(
            select(db.Round.id).where(
                db.Round.federation_id == fid,
                db.Round.status == "open",
                db.Round.deadline <= now,
                joined < db.Round.min_silos,
            )
        ).scalar_one_or_none()
    if rid is None:
        return
    with hub.sessions.begin() as s:
        if not _lock(s, fid, rid, ("open",)):
            return  # someone else moved it on
        r = _round(s, fid, rid)
        k = len(_joined(s, rid))
        if k < r.min_silos:
            close_round(
                s,
                r,
                "expired",
                f"the join deadline passed with {k} of the {r.min_silos} silos needed; "
                "reservations released, nothing charged",
                fed,
            )


# ---------------------------------------------------------------- admin: open, start, abort
@rounds.post("/v1/federations/{fed}/rounds", status_code=201)
def open_round(hub: Hub, fed: str, body: OpenRound, _: AdminDep) -> dict[str, Any]:
    fid, req = federation(hub, fed)
    try:
        kind, spec = hub.checker.family_spec(body.family, body.spec, req.schema)
    except ArtifactError as e:
        field = "family" if isinstance(e, UnknownFamilyError) or body.spec is None else "spec"
        raise PushRefused(f"{field}: {e}") from None
    if "\\u0000" in json.dumps(spec):  # PostgreSQL JSON cannot hold NUL characters
        raise PushRefused("spec may not contain NUL characters")
    check_caps(req, body.epsilon, body.delta, "round")  # the same caps a push's cards meet
    now = db.utcnow()
    deadline = resolve_deadline(body.deadline_s, body.deadline, now)
    expire_due(hub, fed, fid)
    try:
        with hub.sessions.begin() as s:
            r = db.Round(
                federation_id=fid,
                family=kind,
                spec_json=spec,
                epsilon=body.epsilon,
                delta=body.delta,
                min_silos=body.min_silos,
                deadline=deadline,
                status="open",
                created=now,
                detail="",
            )
            s.add(r)
            s.flush()
            rid = r.id
            s.add(
                db.AuditEvent(
                    federation=fed,
                    action="round-open",
                    outcome="ok",
                    epsilon=body.epsilon,
                    detail=f"round {rid}: {kind}, δ = {body.delta:g}, min {body.min_silos} silos, "
                    f"joins until {deadline.isoformat(timespec='seconds')}",
                )
            )
    except IntegrityError:  # uq_round_active: one open or running round per federation
        with hub.sessions() as s:
            active = s.execute(
                select(db.Round).where(
                    db.Round.federation_id == fid, db.Round.status.in_(db.ACTIVE_ROUND_STATES)
                )
            ).scalar_one_or_none()
        which = f" (round {active.id}, {active.status})" if active else ""
        raise HubError(
            409,
            f"a round is already open in federation {fed!r}{which}: one round at a time; "
            "finish or abort it (or let it expire) first",
        ) from None
    return _view(hub, fid, req, rid, None)


@rounds.post("/v1/federations/{fed}/rounds/{rid}/start")
def start_round(hub: Hub, fed: str, rid: RoundId, _: AdminDep) -> dict[str, Any]:
    fid, req = federation(hub, fed)
    expired: str | None = None
    with hub.sessions.begin() as s:
        if not _lock(s, fid, rid, ("open",)):
            _wrong_state(s, fid, rid, "only an open round can start")
        r = _round(s, fid, rid)
        joined = _joined(s, rid)
        if len(joined) < r.min_silos:
            expired = (
                f"only {len(joined)} of the {r.min_silos} silos needed joined round {rid}: it expired, "
                "reservations released, nothing charged"
            )
            close_round(s, r, "expired", expired, fed)
        else:
            r.status, r.started = "running", db.utcnow()
            for i, m in enumerate(joined):  # partition ids 0..K-1 in join order
                m.partition_id = i
            r.detail = f"running with {len(joined)} silos"
            s.add(
                db.AuditEvent(
                    federation=fed,
                    action="round-start",
                    outcome="ok",
                    detail=f"round {rid}: {len(joined)} silos, partitions 0..{len(joined) - 1}",
                )
            )
    if expired:  # committed above: the expiry stands, the start is refused
        raise HubError(409, expired)
    return _view(hub, fid, req, rid, None)


@rounds.post("/v1/federations/{fed}/rounds/{rid}/abort")
def abort_round(
    hub: Hub, fed: str, rid: RoundId, _: AdminDep, body: Annotated[Reason | None, Body()] = None
) -> dict[str, Any]:
    fid, req = federation(hub, fed)
    why = body.reason if body else ""
    with hub.sessions.begin() as s:
        if not _lock(s, fid, rid, db.ACTIVE_ROUND_STATES):
            _wrong_state(s, fid, rid, "only an open or running round can be aborted")
        r = _round(s, fid, rid)
        close_round(
            s,
            r,
            "aborted",
            f"aborted by the operator{': ' + why if why else ''}; reservations released, nothing charged",
            fed,
        )
    return _view(hub, fid, req, rid, None)


@rounds.post("/v1/federations/{fed}/rounds/{rid}/result", status_code=201)
def round_result(
    hub: Hub,
    fed: str,
    rid: RoundId,
    _: AdminDep,
    cards: Annotated[list[UploadFile], File(description="one JSON card per generator")],
    weights: Annotated[list[UploadFile], File(description="safetensors weights, same order as cards")],
    contributors: Annotated[str, Form(max_length=200_000, description="JSON array of partition ids")],
    report: Annotated[str | None, Form(max_length=70_000, description="JSON object from the runner")] = None,
) -> dict[str, Any]:
    fid, req = federation(hub, fed)
    try:
        with hub.sessions() as s:
            r = _round(s, fid, rid)
            if r.status != "running":
                raise PushRefused(f"round {rid} is {_state(r)}; a result needs it running", 409)
            members = list(s.execute(select(db.RoundMember).where(db.RoundMember.round_id == rid)).scalars())
            kind, spec, r_eps, r_delta = r.family, r.spec_json, r.epsilon, r.delta
        pids = parse_contributors(contributors)
        rep = parse_report(report)
        contributing_members(members, pids, rid)  # cheap refusals before any tensor is parsed
        if len(cards) != len(weights):
            raise PushRefused(f"{len(cards)} cards but {len(weights)} weight files; they must pair up")
        items = [(cf.file.read(), wf.file.read()) for cf, wf in zip(cards, weights, strict=True)]
        # the push path's checks, against the ROUND's family and spec: card format, claim
        # re-derived (PrivacyClaim.verify), federation caps, from_artifact(check=True)
        vp = validate_generator_set(
            dataclasses.replace(req, families={kind: spec}), items, scope="federation", check=hub.checker
        )
        check_result_claim(vp.epsilon, vp.delta, r_eps, r_delta)
        try:
            commit_round_result(hub, fed, fid, rid, vp, pids, rep)
        except SQLAlchemyError as e:  # the transaction rolled back: say so in JSON, keep serving
            log.exception("round %s of %s: result not recorded", rid, fed)
            raise HubError(
                503,
                f"round {rid}'s result was not recorded (database error: {type(e).__name__}); "
                "check the round's status, then retry",
            ) from None
    except PushRefused as e:
        audit(hub.audit, "round-result", "refused", federation=fed, detail=f"round {rid}: {e}")
        raise
    return _view(hub, fid, req, rid, None)


# ---------------------------------------------------------------- silo: join, withdraw
@rounds.post("/v1/federations/{fed}/rounds/{rid}/join")
def join_round(hub: Hub, fed: str, rid: RoundId, c: CallerDep) -> dict[str, Any]:
    """Reserve the round's ε on this silo and become a member. Called BEFORE the silo reads any
    data: a silo without the budget learns it here, and nothing is reserved."""
    fid, req = member(hub, fed, c, allow_admin=False)
    assert c.silo_id is not None  # a silo token
    expire_due(hub, fed, fid)
    now = db.utcnow()
    try:
        with hub.sessions.begin() as s:
            if not _lock(s, fid, rid, ("open",), open_until=now):
                r = _round(s, fid, rid)
                if r.status == "open":
                    raise PushRefused(
                        f"round {rid}'s join deadline passed at {db.as_utc(r.deadline).isoformat()}", 409
                    )
                raise PushRefused(f"round {rid} is {_state(r)}, not open: it takes no more silos", 409)
            r = _round(s, fid, rid)
            m = s.get(db.RoundMember, (rid, c.silo_id))
            if m is None or m.status != "joined":  # joining twice is a no-op
                reserve(s, c.silo_id, r.epsilon, req.silo_epsilon_budget, f"round {rid}")
                if m is None:
                    s.add(
                        db.RoundMember(
                            round_id=rid,
                            silo_id=c.silo_id,
                            joined=now,
                            status="joined",
                            epsilon_reserved=r.epsilon,
                        )
                    )
                else:  # back after a withdrawal: to the end of the join order
                    m.status, m.joined, m.epsilon_reserved = "joined", now, r.epsilon
                s.add(
                    db.AuditEvent(
                        federation=fed,
                        silo=c.silo,
                        action="round-join",
                        outcome="ok",
                        epsilon=r.epsilon,
                        detail=f"round {rid}: ε = {r.epsilon:g} reserved",
                    )
                )
    except PushRefused as e:
        audit(hub.audit, "round-join", "refused", federation=fed, silo=c.silo, detail=str(e))
        raise
    except IntegrityError:  # a concurrent join of the same silo won: it is a member either way
        pass
    return _view(hub, fid, req, rid, c.silo_id)


@rounds.post("/v1/federations/{fed}/rounds/{rid}/withdraw")
def withdraw_round(
    hub: Hub, fed: str, rid: RoundId, c: CallerDep, body: Annotated[Reason | None, Body()] = None
) -> dict[str, Any]:
    """Leave an open round (e.g. the silo's local data check failed after joining): the
    reservation is released, nothing is charged."""
    fid, req = member(hub, fed, c, allow_admin=False)
    why = body.reason if body else ""
    with hub.sessions.begin() as s:
        if not _lock(s, fid, rid, ("open",)):
            _wrong_state(s, fid, rid, "a silo can withdraw only while it is open")
        m = s.get(db.RoundMember, (rid, c.silo_id))
        if m is None:
            raise PushRefused(f"this silo has not joined round {rid}", 409)
        if m.status == "joined":
            release(s, m, "withdrawn")
            s.add(
                db.AuditEvent(
                    federation=fed,
                    silo=c.silo,
                    action="round-withdraw",
                    outcome="ok",
                    epsilon=0.0,
                    detail=f"round {rid}: reservation released{': ' + why if why else ''}",
                )
            )
    return _view(hub, fid, req, rid, c.silo_id)


# ---------------------------------------------------------------- both: status
@rounds.get("/v1/federations/{fed}/rounds/{rid}")
def get_round(hub: Hub, fed: str, rid: RoundId, c: CallerDep) -> dict[str, Any]:
    fid, req = member(hub, fed, c, allow_admin=True)
    expire_due(hub, fed, fid)
    return _view(hub, fid, req, rid, c.silo_id)


@rounds.get("/v1/federations/{fed}/rounds")
def list_rounds(
    hub: Hub, fed: str, c: CallerDep, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[dict[str, Any]]:
    fid, req = member(hub, fed, c, allow_admin=True)
    expire_due(hub, fed, fid)
    with hub.sessions() as s:
        rows = (
            s.execute(
                select(db.Round)
                .where(db.Round.federation_id == fid)
                .order_by(db.Round.id.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
        out = []
        for r in rows:
            members, gens, push_id = round_rows(s, r)
            out.append(round_dict(r, req, members, gens, push_id, viewer_silo_id=c.silo_id))
    return out


__all__ = ["expire_due", "rounds"]
