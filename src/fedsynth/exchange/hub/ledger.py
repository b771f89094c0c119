"""The push transaction: the silo's ε ledger, the push and generator rows and the audit event
commit together or not at all; a repeated push is answered with the first one, uncharged."""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError

from fedsynth.exchange import db
from fedsynth.exchange.hub.audit_log import audit
from fedsynth.exchange.hub.settings import Caller
from fedsynth.exchange.hub.state import HubState
from fedsynth.exchange.hub.views import push_result
from fedsynth.exchange.protocol import PushRefused, Requirements, ValidatedPush, ledger_charge


def _existing(hub: HubState, silo_id: int | None, content_hash: str) -> db.Push | None:
    with hub.sessions() as s:
        return s.execute(
            select(db.Push).where(db.Push.silo_id == silo_id, db.Push.content_hash == content_hash)
        ).scalar_one_or_none()


def commit_push(
    hub: HubState, fed: str, fid: int, req: Requirements, c: Caller, vp: ValidatedPush
) -> tuple[dict[str, Any], bool]:
    """Store and record a validated push; ``(result, created)``. Refusals (budget) are audited
    and re-raised as :class:`PushRefused`."""
    dup = _existing(hub, c.silo_id, vp.content_hash)
    if dup is not None:
        audit(
            hub.audit,
            "push",
            "ok",
            federation=fed,
            silo=c.silo,
            sha256=vp.content_hash,
            epsilon=0.0,
            detail=f"repeat of push {dup.id}; nothing stored, nothing charged",
        )
        return push_result(dup, duplicate=True), False
    # 1) artifacts durable in the store (temp file, fsync, atomic rename) ...
    for g in vp.generators:
        hub.store.put(g.weights)
        hub.store.put(g.card_bytes)
    if hub.fault_delay > 0:
        time.sleep(hub.fault_delay)
    # 2) ... then one transaction: ledger charge (conditional UPDATE = atomic across processes),
    #    push + generator rows, audit event.
    try:
        with hub.sessions.begin() as s:
            silo = s.get(db.Silo, c.silo_id)
            # an UPDATE executes to a CursorResult (what has .rowcount); Session.execute is typed Result
            res = cast(
                "CursorResult[Any]",
                s.execute(
                    update(db.Silo)
                    .where(
                        db.Silo.id == c.silo_id,
                        db.Silo.epsilon_spent + vp.epsilon <= req.silo_epsilon_budget + 1e-12,
                    )
                    .values(
                        epsilon_spent=db.Silo.epsilon_spent + vp.epsilon,
                        delta_spent=db.Silo.delta_spent + vp.delta,
                    )
                ),
            )
            if res.rowcount != 1:  # the with-block rolls back
                assert silo is not None  # the caller authenticated as this silo
                ledger_charge(silo.epsilon_spent, vp.epsilon, req.silo_epsilon_budget)  # raises 409
                raise PushRefused("privacy budget exceeded", 409)
            p = db.Push(
                federation_id=fid,
                silo_id=c.silo_id,
                content_hash=vp.content_hash,
                epsilon=vp.epsilon,
                delta=vp.delta,
                n_generators=len(vp.generators),
                total_bytes=vp.total_bytes,
            )
            s.add(p)
            s.flush()
            for g in vp.generators:
                s.add(
                    db.Generator(
                        push_id=p.id,
                        federation_id=fid,
                        silo_id=c.silo_id,
                        family=g.card.family[:64],
                        class_label=g.card.class_label or "",
                        epsilon=g.card.epsilon,
                        delta=g.card.delta,
                        accountant=g.card.accountant[:64],
                        card_created=g.card.created[:64],
                        weights_sha256=g.card.weights_sha256,
                        card_sha256=g.card_sha256,
                        size=len(g.weights),
                    )
                )
            s.add(
                db.AuditEvent(
                    federation=fed,
                    silo=c.silo,
                    action="push",
                    outcome="ok",
                    sha256=vp.content_hash,
                    epsilon=vp.epsilon,
                    detail=f"{len(vp.generators)} generators, {vp.total_bytes} bytes",
                )
            )
    except PushRefused as e:
        audit(
            hub.audit,
            "push",
            "refused",
            federation=fed,
            silo=c.silo,
            sha256=vp.content_hash,
            epsilon=vp.epsilon,
            detail=str(e),
        )
        raise
    except IntegrityError:  # a concurrent identical push won the race: return that one
        with hub.sessions() as s:
            p = s.execute(
                select(db.Push).where(db.Push.silo_id == c.silo_id, db.Push.content_hash == vp.content_hash)
            ).scalar_one()
        return push_result(p, duplicate=True), False
    return push_result(p, duplicate=False), True
