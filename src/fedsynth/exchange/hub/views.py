"""Row → JSON views (what the API and the dashboard show) and the dashboard's query."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fedsynth.exchange import db
from fedsynth.exchange.protocol import Requirements


def requirements_of(f: db.Federation) -> Requirements:
    return Requirements.from_dict(
        {
            "federation": f.name,
            "schema": f.schema_json,
            # spec_json is {"families": [...]} (migration 0002 wrapped older bare decoder specs)
            "families": f.spec_json["families"],
            "max_epsilon": f.max_epsilon,
            "max_delta": f.max_delta,
            "silo_epsilon_budget": f.silo_epsilon_budget,
            "allow_legacy_cards": bool(f.spec_json.get("allow_legacy_cards", False)),
            "schema_silos": list(f.spec_json.get("schema_silos", [])),
        }
    )


def generator_dict(g: db.Generator, silo: str | None) -> dict[str, Any]:
    """A pool entry. A federation round's generator has no single silo: ``silo`` is null, ``scope``
    is ``"federation"`` and ``round_id`` names the round (whose spec a reader verifies it against)."""
    return {
        "id": g.id,
        "silo": silo,
        "scope": "federation" if g.round_id is not None else "silo",
        "round_id": g.round_id,
        "family": g.family,
        "class_label": g.class_label or None,  # "" in the table: a joint model
        "epsilon": g.epsilon,
        "delta": g.delta,
        "accountant": g.accountant,
        "created": g.card_created,
        "size": g.size,
        "weights_sha256": g.weights_sha256,
        "card_sha256": g.card_sha256,
        "push_id": g.push_id,
    }


def audit_dict(a: db.AuditEvent) -> dict[str, Any]:
    return {
        "id": a.id,
        "time": a.time.isoformat(timespec="seconds") if a.time else None,
        "federation": a.federation,
        "silo": a.silo,
        "action": a.action,
        "outcome": a.outcome,
        "sha256": a.sha256,
        "epsilon": a.epsilon,
        "detail": a.detail,
    }


def push_result(p: db.Push, *, duplicate: bool) -> dict[str, Any]:
    return {
        "push_id": p.id,
        "content_hash": p.content_hash,
        "epsilon": p.epsilon,
        "delta": p.delta,
        "generators": p.n_generators,
        "bytes": p.total_bytes,
        "duplicate": duplicate,
    }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else db.as_utc(t).isoformat()


def member_dict(m: db.RoundMember, silo: str, *, reveal: bool) -> dict[str, Any]:
    """A round member; ``reveal`` False hides the partition id and reservation (another silo's)."""
    return {
        "silo": silo,
        "status": m.status,
        "joined": _iso(m.joined),
        "partition_id": m.partition_id if reveal else None,
        "epsilon_reserved": m.epsilon_reserved if reveal else None,
    }


def round_dict(
    r: db.Round,
    req: Requirements,
    members: Sequence[tuple[db.RoundMember, str]],
    generator_ids: Sequence[int],
    push_id: int | None,
    *,
    viewer_silo_id: int | None,
) -> dict[str, Any]:
    """A round as the API returns it. ``viewer_silo_id``: the calling silo (None: the admin), who
    sees only its own partition id and reservation, and not the runner's report."""
    admin = viewer_silo_id is None
    mine = [member_dict(m, n, reveal=True) for m, n in members if m.silo_id == viewer_silo_id]
    return {
        "id": r.id,
        "federation": req.federation,
        "family": r.family,
        "spec": r.spec_json,
        "schema": req.schema.to_dict(),
        "schema_hash": req.schema.hash(),
        "epsilon": r.epsilon,
        "delta": r.delta,
        "min_silos": r.min_silos,
        "deadline": _iso(r.deadline),
        "status": r.status,
        "created": _iso(r.created),
        "started": _iso(r.started),
        "finished": _iso(r.finished),
        "detail": r.detail,
        "members": [member_dict(m, n, reveal=admin or m.silo_id == viewer_silo_id) for m, n in members],
        "membership": mine[0] if mine else None,
        "generator_ids": list(generator_ids),
        "push_id": push_id,
        "report": r.report_json if admin else None,
    }


def round_rows(s: Session, r: db.Round) -> tuple[list[tuple[db.RoundMember, str]], list[int], int | None]:
    """(members with silo names in join order, result generator ids, result push id) of a round."""
    members = [
        (m, name)
        for m, name in s.execute(
            select(db.RoundMember, db.Silo.name)
            .join(db.Silo, db.RoundMember.silo_id == db.Silo.id)
            .where(db.RoundMember.round_id == r.id)
            .order_by(db.RoundMember.joined, db.RoundMember.silo_id)
        ).all()
    ]
    gens = list(
        s.execute(select(db.Generator.id).where(db.Generator.round_id == r.id).order_by(db.Generator.id))
        .scalars()
        .all()
    )
    push_id = s.execute(select(db.Push.id).where(db.Push.round_id == r.id)).scalar_one_or_none()
    return members, gens, push_id


def dashboard_sections(sessions: sessionmaker[Session], federation_name: str | None) -> list[dict[str, Any]]:
    """One section per federation (or only ``federation_name``): requirements, silos with their
    ledgers, the pool, the 20 newest rounds and the 50 newest audit events."""
    with sessions() as s:
        q = select(db.Federation).order_by(db.Federation.id)
        if federation_name:
            q = q.where(db.Federation.name == federation_name)
        feds = s.execute(q).scalars().all()
        sections = []
        for f in feds:
            silos = (
                s.execute(select(db.Silo).where(db.Silo.federation_id == f.id).order_by(db.Silo.id))
                .scalars()
                .all()
            )
            names = {x.id: x.name for x in silos}
            gens = (
                s.execute(
                    select(db.Generator).where(db.Generator.federation_id == f.id).order_by(db.Generator.id)
                )
                .scalars()
                .all()
            )
            rounds = (
                s.execute(
                    select(db.Round)
                    .where(db.Round.federation_id == f.id)
                    .order_by(db.Round.id.desc())
                    .limit(20)
                )
                .scalars()
                .all()
            )
            # members that joined (and did not withdraw) per round
            joined = dict(
                s.execute(
                    select(db.RoundMember.round_id, func.count())
                    .where(
                        db.RoundMember.round_id.in_([r.id for r in rounds]),
                        db.RoundMember.status != "withdrawn",
                    )
                    .group_by(db.RoundMember.round_id)
                )
                .tuples()
                .all()
            )
            events = (
                s.execute(
                    select(db.AuditEvent)
                    .where(db.AuditEvent.federation == f.name)
                    .order_by(db.AuditEvent.id.desc())
                    .limit(50)
                )
                .scalars()
                .all()
            )
            sections.append(
                {
                    "requirements": requirements_of(f).to_dict(),
                    "silos": [
                        {
                            "name": x.name,
                            "epsilon_spent": x.epsilon_spent,
                            "epsilon_reserved": x.epsilon_reserved,
                            "delta_spent": x.delta_spent,
                            "created": x.created.isoformat(timespec="seconds"),
                        }
                        for x in silos
                    ],
                    "pool": [
                        generator_dict(g, None if g.silo_id is None else names.get(g.silo_id, "?"))
                        for g in gens
                    ],
                    "rounds": [
                        {
                            "id": r.id,
                            "family": r.family,
                            "status": r.status,
                            "epsilon": r.epsilon,
                            "delta": r.delta,
                            "min_silos": r.min_silos,
                            "members": joined.get(r.id, 0),
                            "deadline": _iso(r.deadline),
                            "detail": r.detail,
                        }
                        for r in rounds
                    ],
                    "audit": [audit_dict(a) for a in events],
                }
            )
    return sections
