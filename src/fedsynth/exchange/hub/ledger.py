"""The ε ledger's transactions. A push: the silo's ε ledger, the push and generator rows and the
audit event commit together or not at all; a repeated push is answered with the first one,
uncharged. A federation round: joining reserves the round's ε on the silo (``epsilon_reserved``),
leaving or a round that ends without the silo releases it, and the round's result charges each
contributor the released card's ε and δ in the same transaction that stores the result.

Every ledger write is a conditional ``UPDATE ... WHERE <the budget still allows it>`` checked by
its row count, so the rule holds across threads and hub processes without a read-then-write race:
spent + reserved + new ≤ budget, for pushes and for reservations alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedsynth.exchange import db
from fedsynth.exchange.hub.audit_log import audit
from fedsynth.exchange.hub.settings import Caller
from fedsynth.exchange.hub.state import HubState
from fedsynth.exchange.hub.views import push_result
from fedsynth.exchange.protocol import PushRefused, Requirements, ValidatedPush, check_budget, ledger_charge
from fedsynth.exchange.rounds_protocol import contributing_members

TOL = 1e-12  # float slack on budget comparisons (sums of ε as floats)


def rowcount(s: Session, stmt: Any) -> int:
    # an UPDATE executes to a CursorResult (what has .rowcount); Session.execute is typed Result
    return cast("CursorResult[Any]", s.execute(stmt)).rowcount


def _existing(hub: HubState, silo_id: int | None, content_hash: str) -> db.Push | None:
    with hub.sessions() as s:
        return s.execute(
            select(db.Push).where(db.Push.silo_id == silo_id, db.Push.content_hash == content_hash)
        ).scalar_one_or_none()


def _put_blobs(hub: HubState, vp: ValidatedPush) -> None:
    """Every card and weight file of ``vp`` in the store. A blob already on disk is verified by
    :meth:`BlobStore.put` (size, then hash): an intact one is not rewritten (only its mtime is
    refreshed, for gc), a corrupted or missing one is replaced by these bytes."""
    for g in vp.generators:
        hub.store.put(g.weights)
        hub.store.put(g.card_bytes)


def _store_artifacts(hub: HubState, vp: ValidatedPush) -> None:
    """Step 1 of every upload: artifacts durable in the store (temp file, fsync, atomic rename)
    before any row points at them; a crash after this leaves only unreferenced blobs."""
    _put_blobs(hub, vp)
    if hub.fault_delay > 0:  # the crash tests' window between the store and the commit
        time.sleep(hub.fault_delay)


def _add_push_rows(
    s: Session, fid: int, vp: ValidatedPush, *, silo_id: int | None, round_id: int | None
) -> db.Push:
    """The push row and its generator rows, owned by one silo or by one round (never both)."""
    p = db.Push(
        federation_id=fid,
        silo_id=silo_id,
        round_id=round_id,
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
                silo_id=silo_id,
                round_id=round_id,
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
    return p


def commit_push(
    hub: HubState, fed: str, fid: int, req: Requirements, c: Caller, vp: ValidatedPush
) -> tuple[dict[str, Any], bool]:
    """Store and record a validated push; ``(result, created)``. Refusals (budget) are audited
    and re-raised as :class:`PushRefused`."""
    dup = _existing(hub, c.silo_id, vp.content_hash)
    if dup is not None:
        # the silo has just sent the right bytes: the store verifies its copies and replaces any
        # that rotted on disk (bit flip, truncation, deleted), so a repeated push repairs a blob
        # that pulls would otherwise refuse; intact blobs are not rewritten
        _put_blobs(hub, vp)
        audit(
            hub.audit,
            "push",
            "ok",
            federation=fed,
            silo=c.silo,
            sha256=vp.content_hash,
            epsilon=0.0,
            detail=f"repeat of push {dup.id}; blobs verified, nothing charged",
        )
        return push_result(dup, duplicate=True), False
    _store_artifacts(hub, vp)
    # 2) ... then one transaction: ledger charge (conditional UPDATE = atomic across processes;
    #    ε reserved by an open round counts as used), push + generator rows, audit event.
    try:
        with hub.sessions.begin() as s:
            n = rowcount(
                s,
                update(db.Silo)
                .where(
                    db.Silo.id == c.silo_id,
                    db.Silo.epsilon_spent + db.Silo.epsilon_reserved + vp.epsilon
                    <= req.silo_epsilon_budget + TOL,
                )
                .values(
                    epsilon_spent=db.Silo.epsilon_spent + vp.epsilon,
                    delta_spent=db.Silo.delta_spent + vp.delta,
                ),
            )
            if n != 1:  # the with-block rolls back
                silo = s.get(db.Silo, c.silo_id)
                assert silo is not None  # the caller authenticated as this silo
                ledger_charge(silo.epsilon_spent, vp.epsilon, req.silo_epsilon_budget, silo.epsilon_reserved)
                raise PushRefused(  # (a concurrent charge won between the UPDATE and this read)
                    f"privacy budget exceeded: a push needs ε = {vp.epsilon:g}; spent ε = "
                    f"{silo.epsilon_spent:g}, reserved {silo.epsilon_reserved:g}, budget "
                    f"{req.silo_epsilon_budget:g} (another request was charged meanwhile)",
                    409,
                )
            p = _add_push_rows(s, fid, vp, silo_id=c.silo_id, round_id=None)
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


# ---------------------------------------------------------------- federation rounds
def reserve(s: Session, silo_id: int, epsilon: float, budget: float, what: str) -> None:
    """Hold ``epsilon`` of the silo's budget for a round (inside the caller's transaction), or
    :class:`PushRefused` (409) naming what is left and what is needed."""
    n = rowcount(
        s,
        update(db.Silo)
        .where(
            db.Silo.id == silo_id,
            db.Silo.epsilon_spent + db.Silo.epsilon_reserved + epsilon <= budget + TOL,
        )
        .values(epsilon_reserved=db.Silo.epsilon_reserved + epsilon),
    )
    if n != 1:
        silo = s.get(db.Silo, silo_id)
        assert silo is not None  # the caller authenticated as this silo
        check_budget(silo.epsilon_spent, silo.epsilon_reserved, epsilon, budget, what)
        raise PushRefused(
            f"privacy budget exceeded: {what} needs ε = {epsilon:g}; spent ε = {silo.epsilon_spent:g}, "
            f"reserved {silo.epsilon_reserved:g}, budget {budget:g} (another request was charged meanwhile)",
            409,
        )


def release(s: Session, m: db.RoundMember, status: str) -> None:
    """Give a member's reservation back to its silo (nothing charged) and set its status."""
    if m.epsilon_reserved:
        rowcount(
            s,
            update(db.Silo)
            .where(db.Silo.id == m.silo_id)
            .values(epsilon_reserved=db.Silo.epsilon_reserved - m.epsilon_reserved),
        )
    m.epsilon_reserved = 0.0
    m.status = status


def close_round(s: Session, r: db.Round, status: str, detail: str, fed: str) -> None:
    """End a round that releases everything (expired, aborted): every member still holding a
    reservation gets it back and is ``dropped``; nothing is charged."""
    r.status, r.detail, r.finished = status, detail, db.utcnow()
    members = s.execute(select(db.RoundMember).where(db.RoundMember.round_id == r.id)).scalars().all()
    for m in members:
        if m.status == "joined":
            release(s, m, "dropped")
    s.add(
        db.AuditEvent(
            federation=fed,
            action=f"round-{status}"[:32],
            outcome="ok",
            epsilon=0.0,
            detail=f"round {r.id}: {detail}",
        )
    )


def commit_round_result(
    hub: HubState,
    fed: str,
    fid: int,
    rid: int,
    vp: ValidatedPush,
    contributors: Sequence[int],
    report: dict[str, Any] | None,
) -> None:
    """Store a round's validated result and settle its ledger, all or nothing.

    Artifacts first (as a push), then ONE transaction: the round running → done (a conditional
    UPDATE: a concurrent result or abort loses), push + generator rows owned by the round, each
    contributing member charged the set's ε and δ out of its reservation, every other member
    still holding one released (``dropped``), audit events. Raises :class:`PushRefused`."""
    _store_artifacts(hub, vp)
    now = db.utcnow()
    with hub.sessions.begin() as s:
        n = rowcount(
            s,
            update(db.Round)
            .where(db.Round.id == rid, db.Round.federation_id == fid, db.Round.status == "running")
            .values(status="done", finished=now, report_json=report),
        )
        if n != 1:
            raise PushRefused(f"round {rid} is no longer running; nothing stored or charged", 409)
        members = list(s.execute(select(db.RoundMember).where(db.RoundMember.round_id == rid)).scalars())
        chosen = contributing_members(members, contributors, rid)  # authoritative, under the lock
        names = dict(
            s.execute(select(db.Silo.id, db.Silo.name).where(db.Silo.federation_id == fid)).tuples().all()
        )
        p = _add_push_rows(s, fid, vp, silo_id=None, round_id=rid)
        for m in members:
            if m in chosen:
                # reserved ε ≥ the round's ε ≥ the set's ε (checked before): the charge fits the
                # budget the reservation held
                rowcount(
                    s,
                    update(db.Silo)
                    .where(db.Silo.id == m.silo_id)
                    .values(
                        epsilon_spent=db.Silo.epsilon_spent + vp.epsilon,
                        delta_spent=db.Silo.delta_spent + vp.delta,
                        epsilon_reserved=db.Silo.epsilon_reserved - m.epsilon_reserved,
                    ),
                )
                m.epsilon_reserved, m.status = 0.0, "contributed"
                s.add(
                    db.AuditEvent(
                        federation=fed,
                        silo=names.get(m.silo_id),
                        action="round-charge",
                        outcome="ok",
                        sha256=vp.content_hash,
                        epsilon=vp.epsilon,
                        detail=f"round {rid}, partition {m.partition_id}: charged δ = {vp.delta:g}",
                    )
                )
            elif m.status == "joined":
                release(s, m, "dropped")
        r = s.get(db.Round, rid)
        assert r is not None  # the UPDATE above matched it
        r.detail = (
            f"{len(chosen)} of {len(members)} members contributed (partitions "
            f"{', '.join(str(m.partition_id) for m in chosen)}); push {p.id}"
        )
        s.add(
            db.AuditEvent(
                federation=fed,
                action="round-result",
                outcome="ok",
                sha256=vp.content_hash,
                epsilon=vp.epsilon,
                detail=f"round {rid}: {len(vp.generators)} generators, {vp.total_bytes} bytes, "
                f"{len(chosen)} contributors",
            )
        )
