"""Federation rounds as plain data types and rules (no HTTP, no database).

A round fits ONE generator across a federation's silos under secure aggregation; the hub only
coordinates it (a separate runner does the Flower computation and talks to the hub over HTTP).

States (``status``)::

    open ──start, ≥ min_silos joined──▶ running ──result──▶ done
     │ └──start with < min_silos, or deadline passed with < min_silos──▶ expired
     └──────────────abort (open or running)──────────────▶ aborted

Members (``round_members.status``): ``joined`` (holding ε reserved) → ``withdrawn`` (left while
open) | ``contributed`` (charged by the result) | ``dropped`` (the round ended without them:
not among the result's contributors, or the round expired / was aborted). Only ``joined``
members hold a reservation.

Privacy bookkeeping: joining reserves the round's ε on the silo before the silo reads any data
(spent + reserved + ε ≤ budget, the push rule), so a budget promised to a round cannot be spent
on a push meanwhile; the result charges each contributor the released set's ε and δ (≤ the
round's, checked here) and releases everyone else. One open or running round per federation at
a time: a second is refused, not queued.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from fedsynth import jsonsafe
from fedsynth.data.schema import Schema
from fedsynth.exchange.protocol import PushRefused

MAX_DEADLINE_S = 30 * 24 * 3600.0  # a round that waits longer than a month for its silos is a typo
MAX_REPORT_BYTES = 64 * 1024
MAX_CONTRIBUTORS = 10_000


def resolve_deadline(deadline_s: float | None, deadline: datetime | None, now: datetime) -> datetime:
    """The round's join deadline (aware UTC) from exactly one of ``deadline_s`` (seconds from
    ``now``) or ``deadline`` (an absolute time with a time zone)."""
    if (deadline_s is None) == (deadline is None):
        raise PushRefused("give exactly one of deadline_s (seconds from now) or deadline (ISO 8601 time)")
    if deadline_s is not None:
        if not (math.isfinite(deadline_s) and 0 < deadline_s <= MAX_DEADLINE_S):
            raise PushRefused(f"deadline_s must be in (0, {MAX_DEADLINE_S:.0f}] seconds, got {deadline_s}")
        return now + timedelta(seconds=deadline_s)
    assert deadline is not None
    if deadline.tzinfo is None or deadline.utcoffset() is None:
        raise PushRefused("deadline must carry a time zone, e.g. 2030-01-01T12:00:00Z")
    try:
        d = deadline.astimezone(UTC)
    except (OverflowError, ValueError) as e:
        raise PushRefused(f"deadline is out of range: {e}") from None
    if d <= now:
        raise PushRefused(f"deadline {d.isoformat()} is not in the future")
    if (d - now).total_seconds() > MAX_DEADLINE_S:
        raise PushRefused(f"deadline is more than {MAX_DEADLINE_S / 86400:.0f} days away")
    return d


def parse_contributors(raw: str) -> list[int]:
    """The result's ``contributors`` form field: a JSON array of distinct partition ids (≥ 2)."""
    try:
        v = json.loads(raw)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise PushRefused("contributors must be a JSON array of partition ids, e.g. [0, 1, 2]") from None
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise PushRefused("contributors must be a JSON array of integer partition ids, e.g. [0, 1, 2]")
    if len(v) > MAX_CONTRIBUTORS:
        raise PushRefused(f"contributors: at most {MAX_CONTRIBUTORS} partition ids")
    if len(set(v)) != len(v):
        raise PushRefused("contributors: a partition id appears twice")
    if len(v) < 2:
        raise PushRefused("contributors: a federation round's result needs at least 2 contributing silos")
    return list(v)


def parse_report(raw: str | None) -> dict[str, Any] | None:
    """The result's optional ``report`` form field: a JSON object (bytes per silo, realised noise,
    seconds, ...), stored as given: strict JSON only (:mod:`fedsynth.jsonsafe`; PostgreSQL JSON
    holds neither NaN nor NUL)."""
    if raw is None or raw == "":
        return None
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_REPORT_BYTES:
        raise PushRefused(f"report is larger than {MAX_REPORT_BYTES} bytes")
    try:
        v = jsonsafe.loads(raw, "report")
    except jsonsafe.JSONValueError as e:
        raise PushRefused(f"report must be a JSON object with finite numbers: {e}") from None
    if not isinstance(v, dict):
        raise PushRefused("report must be a JSON object")
    return v


def check_result_claim(epsilon: float, delta: float, round_epsilon: float, round_delta: float) -> None:
    """A round's result may not claim more than the round was opened (and reserved) for."""
    if epsilon > round_epsilon + 1e-12:
        raise PushRefused(f"epsilon: the result's ε = {epsilon:g} exceeds the round's ε = {round_epsilon:g}")
    if delta > round_delta * (1 + 1e-9):
        raise PushRefused(f"delta: the result's δ = {delta:g} exceeds the round's δ = {round_delta:g}")


class MemberLike(Protocol):
    partition_id: int | None
    status: str


M = TypeVar("M", bound=MemberLike)


def contributing_members(members: Sequence[M], contributors: Sequence[int], round_id: int) -> list[M]:
    """The members the result names (by partition id): each must be a ``joined`` member that got
    that partition id when the round started; 422 naming the ids that are not."""
    by_pid = {m.partition_id: m for m in members if m.status == "joined" and m.partition_id is not None}
    unknown = [p for p in contributors if p not in by_pid]
    if unknown:
        raise PushRefused(
            f"contributors: partition ids {unknown} are not members of round {round_id} "
            f"(its partitions: {sorted(p for p in by_pid if p is not None)})"
        )
    return [by_pid[p] for p in contributors]


def _time(v: Any) -> datetime | None:
    return None if v is None else datetime.fromisoformat(str(v))


@dataclass(frozen=True)
class RoundMember:
    silo: str
    status: str  # joined | withdrawn | contributed | dropped
    joined: datetime | None
    partition_id: int | None  # set at start; None for other silos' entries when a silo asks
    epsilon_reserved: float | None  # None: not shown to this caller

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RoundMember:
        pid, res = d.get("partition_id"), d.get("epsilon_reserved")
        return RoundMember(
            silo=str(d["silo"]),
            status=str(d["status"]),
            joined=_time(d.get("joined")),
            partition_id=None if pid is None else int(pid),
            epsilon_reserved=None if res is None else float(res),
        )


@dataclass(frozen=True)
class RoundInfo:
    """A round as the hub reports it (``GET .../rounds/{id}`` and every round action)."""

    id: int
    federation: str
    family: str  # the resolved kind, e.g. "pgm/1"
    spec: dict[str, Any]
    schema: dict[str, Any]  # the public schema as JSON (checked to parse; see ``table_schema``)
    epsilon: float
    delta: float
    min_silos: int
    deadline: datetime
    status: str  # open | running | done | aborted | expired
    created: datetime | None
    started: datetime | None
    finished: datetime | None
    detail: str
    members: tuple[RoundMember, ...]
    membership: RoundMember | None  # the calling silo's own entry (None for the admin)
    generator_ids: tuple[int, ...]  # the result's generators (done rounds)
    push_id: int | None
    report: dict[str, Any] | None  # the runner's report (admin only)

    @property
    def table_schema(self) -> Schema:
        return Schema.from_dict(self.schema)

    @property
    def partition_id(self) -> int | None:
        """The calling silo's partition id (assigned at start)."""
        return self.membership.partition_id if self.membership else None

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RoundInfo:
        try:
            deadline = _time(d["deadline"])
            assert deadline is not None
            mine = d.get("membership")
            return RoundInfo(
                id=int(d["id"]),
                federation=str(d["federation"]),
                family=str(d["family"]),
                spec=dict(d["spec"]),
                schema=Schema.from_dict(d["schema"]).to_dict(),
                epsilon=float(d["epsilon"]),
                delta=float(d["delta"]),
                min_silos=int(d["min_silos"]),
                deadline=deadline,
                status=str(d["status"]),
                created=_time(d.get("created")),
                started=_time(d.get("started")),
                finished=_time(d.get("finished")),
                detail=str(d.get("detail", "")),
                members=tuple(RoundMember.from_dict(m) for m in d.get("members", [])),
                membership=RoundMember.from_dict(mine) if mine else None,
                generator_ids=tuple(int(g) for g in d.get("generator_ids", [])),
                push_id=None if d.get("push_id") is None else int(d["push_id"]),
                report=d.get("report"),
            )
        except (KeyError, TypeError, ValueError, AssertionError) as e:
            raise ValueError(f"malformed round from the hub: {e!r}") from None


__all__ = [
    "RoundInfo",
    "RoundMember",
    "check_result_claim",
    "contributing_members",
    "parse_contributors",
    "parse_report",
    "resolve_deadline",
]
