"""Row → JSON views (what the API and the dashboard show) and the dashboard's query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
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
        }
    )


def generator_dict(g: db.Generator, silo: str) -> dict[str, Any]:
    return {
        "id": g.id,
        "silo": silo,
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


def dashboard_sections(sessions: sessionmaker[Session], federation_name: str | None) -> list[dict[str, Any]]:
    """One section per federation (or only ``federation_name``): requirements, silos with their
    ledgers, the pool and the 50 newest audit events."""
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
                            "delta_spent": x.delta_spent,
                            "created": x.created.isoformat(timespec="seconds"),
                        }
                        for x in silos
                    ],
                    "pool": [generator_dict(g, names.get(g.silo_id, "?")) for g in gens],
                    "audit": [audit_dict(a) for a in events],
                }
            )
    return sections
