"""HTTP clients for the hub: :class:`HubClient` (a silo) and :class:`HubAdmin` (the operator).

The silo client never trusts the hub blindly: every downloaded card must hash to the pool's
``card_sha256``, every weight file to the card's ``weights_sha256``, and each artifact goes through
the same :func:`fedsynth.generators.io.from_artifact` checks the hub ran on push (family accepted,
spec equal to the federation's, tensors fitting it, a finite in-domain fixed batch) before it is
sampled. A federation round's generator (no single silo: ``PoolEntry.silo`` is ``None``,
``scope == "federation"``) is verified against the spec its round announced.

Rounds: :class:`HubAdmin` opens, starts, posts the result of and aborts them; a silo's
:class:`HubClient` joins (the hub reserves the round's ε before the silo reads any data),
withdraws and reads them. Every answer is a :class:`RoundInfo`.

Nor does it trust the hub's JSON: every answer is parsed strictly (no non-finite numbers, no
integer outside ±jsonsafe.MAX_INT, no lone surrogate, the fields a pool entry needs present and
typed) and a malformed one raises :class:`HubAnswerError` naming the field. Downloads are streamed with
the pool entry's announced ``size`` as a hard cap (and the card's 64 KB limit), hashed on the way:
a hub that sends more bytes than it announced is cut off at the first excess chunk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from fedsynth.artifacts.card import MAX_CARD_BYTES, ArtifactError, GeneratorCard
from fedsynth.data.schema import Schema
from fedsynth.exchange.answers import HubAnswerError, HubError, parse_answer
from fedsynth.exchange.answers import array as _list
from fedsynth.exchange.answers import field as _field
from fedsynth.exchange.answers import obj as _obj
from fedsynth.exchange.protocol import Requirements
from fedsynth.exchange.rounds_protocol import RoundInfo, RoundMember
from fedsynth.generators.base import Generator, GeneratorSet
from fedsynth.generators.io import from_artifact, read_generator_set, to_artifact

#: What a round result can be posted as: a set, its generators, ``(card bytes, weights bytes)``
#: pairs, or a generator-set folder on disk (``GeneratorSet.save``).
ResultArtifacts = GeneratorSet | Sequence[Generator] | Sequence[tuple[bytes, bytes]] | str | Path


@dataclass(frozen=True)
class PoolEntry:
    id: int
    silo: str | None  # None: a federation round's generator (see round_id)
    family: str
    class_label: str | None  # None: a joint model
    epsilon: float
    delta: float
    accountant: str
    created: str
    size: int
    weights_sha256: str
    card_sha256: str
    push_id: int
    scope: str = "silo"  # "federation": fitted by a round across silos
    round_id: int | None = None

    @staticmethod
    def from_dict(d: Any) -> PoolEntry:
        """Parse a pool entry, every field type-checked (:class:`HubAnswerError` names the one
        that is not); ``size`` is required: it caps the weights download."""
        d = _obj(d, "pool entry")
        w = f"pool entry {d.get('id')!r}" if isinstance(d.get("id"), int) else "pool entry"
        # hubs before families listed decoders only; hubs before rounds had per-silo entries only
        return PoolEntry(
            id=_field(d, "id", "int", w),
            silo=_field(d, "silo", "str?", w),
            family=_field(d, "family", "str", w, "dp-vae/1"),
            class_label=_field(d, "class_label", "str?", w),
            epsilon=_field(d, "epsilon", "number", w),
            delta=_field(d, "delta", "number", w),
            accountant=_field(d, "accountant", "str", w),
            created=_field(d, "created", "str", w),
            size=_field(d, "size", "size", w),
            weights_sha256=_field(d, "weights_sha256", "hex64", w),
            card_sha256=_field(d, "card_sha256", "hex64", w),
            push_id=_field(d, "push_id", "int", w),
            scope=_field(d, "scope", "str", w, "silo"),
            round_id=_field(d, "round_id", "int?", w, None),
        )

    @property
    def owner(self) -> str:
        """Who released it: the silo, or ``round-<id>`` for a federation round's generator."""
        return self.silo if self.silo is not None else f"round-{self.round_id}"


@dataclass(frozen=True)
class PushResult:
    push_id: int
    content_hash: str
    epsilon: float
    delta: float
    generators: int
    bytes: int
    duplicate: bool

    @staticmethod
    def from_dict(d: Any) -> PushResult:
        w = "push result"
        d = _obj(d, w)
        return PushResult(
            push_id=_field(d, "push_id", "int", w),
            content_hash=_field(d, "content_hash", "str", w),
            epsilon=_field(d, "epsilon", "number", w),
            delta=_field(d, "delta", "number", w),
            generators=_field(d, "generators", "size", w),
            bytes=_field(d, "bytes", "size", w),
            duplicate=_field(d, "duplicate", "bool", w),
        )


def _requirements(x: Any) -> Requirements:
    try:
        return Requirements.from_dict(_obj(x, "requirements"))
    except (ValueError, OverflowError) as e:  # ValueError includes ArtifactError (spec, schema)
        raise HubAnswerError(f"requirements: {e}") from None


def _round(x: Any) -> RoundInfo:
    try:
        return RoundInfo.from_dict(_obj(x, "round"))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, AssertionError) as e:
        raise HubAnswerError(f"round: {type(e).__name__}: {e}") from None


def _artifact_files(items: ResultArtifacts) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The multipart ``cards`` / ``weights`` files of a push or a round result."""
    if isinstance(items, str | Path):
        _schema, gens = read_generator_set(items)
        pairs = [to_artifact(g) for g in gens]
    elif isinstance(items, GeneratorSet):
        pairs = [to_artifact(g) for g in items.generators]
    else:
        pairs = [x if isinstance(x, tuple) else to_artifact(x) for x in items]
    files: list[tuple[str, tuple[str, bytes, str]]] = []
    for i, (card_b, w) in enumerate(pairs):
        files.append(("cards", (f"gen-{i}.json", card_b, "application/json")))
        files.append(("weights", (f"gen-{i}.safetensors", w, "application/octet-stream")))
    return files


def _printable(t: str, limit: int = 2000) -> str:
    # a refusal's reason is printed: a lone surrogate would crash the console, a megabyte flood it
    return t[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


_MAX_ERROR_BYTES = 65536  # of a refusal's body: its reason, not a flood
#: No generator the client downloads may be larger than this, whatever size the hub announces.
MAX_WEIGHTS_BYTES = 1 << 30


def _refusal(status: int, body: bytes) -> HubError:
    body = body[:_MAX_ERROR_BYTES]
    try:
        detail: Any = parse_answer(body, "error").get("detail", body.decode("utf-8", "replace"))
    except (HubError, AttributeError):
        detail = body.decode("utf-8", "replace")
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return HubError(status, _printable(text))


def _check(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise _refusal(r.status_code, r.content)
    return r


class _Base:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        verify: bool | str = True,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = client or httpx.Client(base_url=self.base_url, timeout=timeout, verify=verify)
        self._headers = {"Authorization": f"Bearer {token}"}
        self.bytes_sent = 0  # request bodies (communication accounting)
        self.bytes_received = 0  # response bodies

    def _req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self._http.request(method, path, headers=self._headers, **kw)
        self.bytes_sent += int(r.request.headers.get("content-length", 0) or 0)
        self.bytes_received += len(r.content)
        return _check(r)

    def _json(self, method: str, path: str, what: str, **kw: Any) -> Any:
        r = self._req(method, path, **kw)
        return parse_answer(r.content, what, r.status_code)

    def _download(self, path: str, cap: int, what: str) -> tuple[bytes, str]:
        """``(body, sha256)`` of a GET streamed with ``cap`` bytes as a hard limit: never more
        than ``cap`` plus one network chunk is read or held, whatever the hub sends."""
        with self._http.stream("GET", path, headers=self._headers) as r:
            if r.status_code >= 400:
                head = b""
                for chunk in r.iter_bytes():
                    head += chunk
                    if len(head) >= _MAX_ERROR_BYTES:
                        break
                raise _refusal(r.status_code, head)
            if cap > MAX_WEIGHTS_BYTES:
                raise ArtifactError(
                    f"{what}: announced as {cap} bytes, above the client's {MAX_WEIGHTS_BYTES}"
                )
            announced = r.headers.get("content-length")
            if announced is not None and announced.isdigit() and int(announced) > cap:
                raise ArtifactError(
                    f"{what}: the hub announces {announced} bytes, more than the {cap} expected"
                )
            h = hashlib.sha256()
            chunks: list[bytes] = []
            n = 0
            for chunk in r.iter_bytes():  # decoded bytes: a compressed bomb is capped as well
                n += len(chunk)
                self.bytes_received += len(chunk)
                if n > cap:
                    raise ArtifactError(f"{what}: the hub sent more than the {cap} bytes expected; aborted")
                h.update(chunk)
                chunks.append(chunk)
        if n < cap and what.endswith("weights"):
            raise ArtifactError(f"{what}: truncated ({n} of {cap} bytes)")
        return b"".join(chunks), h.hexdigest()

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HubAdmin(_Base):
    """Operator actions (admin token)."""

    def create_federation(
        self,
        name: str,
        schema: Schema,
        families: dict[str, dict[str, Any]],
        *,
        max_epsilon: float = 1.5,
        max_delta: float = 1e-5,
        silo_epsilon_budget: float = 3.0,
        allow_legacy_cards: bool = False,
        schema_silos: Sequence[str] = (),
    ) -> Requirements:
        """``schema_silos``: for a schema estimated under DP, the silos whose rows it used (the hub
        charges each the schema's ε when it is added)."""
        body: dict[str, Any] = {
            "name": name,
            "schema": schema.to_dict(),
            "families": [{"kind": k, "spec": v} for k, v in families.items()],
            "max_epsilon": max_epsilon,
            "max_delta": max_delta,
            "silo_epsilon_budget": silo_epsilon_budget,
        }
        if allow_legacy_cards:  # sent only when set: older hubs refuse unknown fields
            body["allow_legacy_cards"] = True
        if schema_silos:  # likewise
            if isinstance(schema_silos, str):
                raise TypeError("schema_silos must be a list of silo names, not one string")
            body["schema_silos"] = list(schema_silos)
        r = self._req("POST", "/v1/federations", json=body)
        return _requirements(parse_answer(r.content, "requirements"))

    def add_silo(self, federation: str, name: str) -> str:
        """Register a silo; returns its bearer token (shown only this once)."""
        d = _obj(
            self._json("POST", f"/v1/federations/{federation}/silos", "silo", json={"name": name}), "silo"
        )
        return str(_field(d, "token", "str", "silo"))

    def revoke_silo(self, federation: str, name: str) -> float:
        """Revoke a silo's token (its pushes stay in the pool; :meth:`rotate_token` gives it a
        new one). Returns the bound, in seconds, within which every hub process refuses it."""
        d = self._token_op(federation, name, "revoke")
        if _field(d, "revoked", "bool", "revoke") is not True:
            raise HubAnswerError("revoke: field 'revoked' is not true")
        return float(_field(d, "effective_within_s", "number", "revoke"))

    def rotate_token(self, federation: str, name: str) -> str:
        """Give a silo a new bearer token and return it (shown only this once); the old one is
        refused by every hub process within the bound :meth:`revoke_silo` returns."""
        d = self._token_op(federation, name, "rotate")
        _field(d, "effective_within_s", "number", "rotate")
        token = str(_field(d, "token", "str", "rotate"))
        if not token:
            raise HubAnswerError("rotate: field 'token' is empty")
        return token

    def _token_op(self, federation: str, name: str, op: str) -> dict[str, Any]:
        path = f"/v1/federations/{quote(federation, safe='')}/silos/{quote(name, safe='')}/{op}"
        return _obj(self._json("POST", path, op), op)

    def federations(self) -> list[Requirements]:
        return [
            _requirements(d)
            for d in _list(self._json("GET", "/v1/federations", "federations"), "federations")
        ]

    def audit(self, federation: str, limit: int = 200) -> list[dict[str, Any]]:
        d = self._json("GET", f"/v1/federations/{federation}/audit", "audit", params={"limit": limit})
        return [_obj(e, "audit event") for e in _list(d, "audit")]

    def pool(self, federation: str) -> list[PoolEntry]:
        return [
            PoolEntry.from_dict(d)
            for d in _list(self._json("GET", f"/v1/federations/{federation}/pool", "pool"), "pool")
        ]

    # ------------------------------------------------------------ federation rounds
    def open_round(
        self,
        federation: str,
        family: str,
        *,
        epsilon: float,
        delta: float,
        min_silos: int = 2,
        deadline_s: float | None = None,
        deadline: datetime | None = None,
        spec: dict[str, Any] | None = None,
    ) -> RoundInfo:
        """Open a round (one open or running round per federation: a second is a 409). Give
        ``deadline_s`` (seconds from now) or ``deadline`` (aware datetime); ``spec`` defaults to the
        family's default spec for the federation's schema."""
        body: dict[str, Any] = {"family": family, "epsilon": epsilon, "delta": delta, "min_silos": min_silos}
        if deadline_s is not None:
            body["deadline_s"] = deadline_s
        if deadline is not None:
            body["deadline"] = deadline.isoformat()
        if spec is not None:
            body["spec"] = spec
        return _round(self._json("POST", f"/v1/federations/{federation}/rounds", "round", json=body))

    def round(self, federation: str, round_id: int) -> RoundInfo:
        return _round(self._json("GET", f"/v1/federations/{federation}/rounds/{round_id}", "round"))

    def rounds(self, federation: str, limit: int = 20) -> list[RoundInfo]:
        """The federation's rounds, newest first."""
        d = self._json("GET", f"/v1/federations/{federation}/rounds", "rounds", params={"limit": limit})
        return [_round(x) for x in _list(d, "rounds")]

    def start_round(self, federation: str, round_id: int) -> RoundInfo:
        """Open → running (partition ids 0..K-1 in join order); with fewer than ``min_silos``
        members the hub expires the round instead and answers 409 (:class:`HubError`)."""
        path = f"/v1/federations/{federation}/rounds/{round_id}/start"
        return _round(self._json("POST", path, "round"))

    def post_round_result(
        self,
        federation: str,
        round_id: int,
        generators: ResultArtifacts,
        contributors: Sequence[int | str],
        report: dict[str, Any] | None = None,
    ) -> RoundInfo:
        """Post a running round's fitted generator(s) with the contributing members (partition
        ids, or silo names that are mapped to theirs) and the runner's optional report. The hub
        checks everything a push gets checked for, then stores the result and charges every
        contributor in one transaction."""
        pids: list[int] = []
        if any(isinstance(c, str) for c in contributors):
            by_name = {m.silo: m.partition_id for m in self.round(federation, round_id).members}
            for c in contributors:
                pid = by_name.get(c) if isinstance(c, str) else c
                if pid is None:
                    raise ValueError(f"{c!r} is not a started member of round {round_id}")
                pids.append(pid)
        else:
            pids = [int(c) for c in contributors]
        data = {"contributors": json.dumps(pids)}
        if report is not None:
            data["report"] = json.dumps(report, allow_nan=False)
        path = f"/v1/federations/{federation}/rounds/{round_id}/result"
        return _round(self._json("POST", path, "round", files=_artifact_files(generators), data=data))

    def abort_round(self, federation: str, round_id: int, reason: str = "") -> RoundInfo:
        """Open or running → aborted: every reservation released, nothing charged."""
        path = f"/v1/federations/{federation}/rounds/{round_id}/abort"
        return _round(self._json("POST", path, "round", json={"reason": reason[:500]}))


class HubClient(_Base):
    """A silo's view of the hub. The federation is found from the token (``/v1/whoami``)."""

    def __init__(self, base_url: str, token: str, **kw: Any) -> None:
        super().__init__(base_url, token, **kw)
        who = _obj(self._json("GET", "/v1/whoami", "whoami"), "whoami")
        if who.get("kind") != "silo":
            raise HubError(403, "HubClient needs a silo token (got the admin token)")
        # both go into URL paths: the hub's name rule, checked here too
        self.federation: str = _field(who, "federation", "name", "whoami")
        self.silo: str = _field(who, "silo", "name", "whoami")
        self._requirements: Requirements | None = None

    def subscribe(self) -> Requirements:
        """Fetch the federation's requirements (schema, decoder spec, ε/δ caps, budget)."""
        w = "requirements"
        d = _obj(self._json("GET", f"/v1/federations/{self.federation}/requirements", w), w)
        self.epsilon_spent = _field(d, "epsilon_spent", "number", w, 0.0)
        self.epsilon_reserved = _field(d, "epsilon_reserved", "number", w, 0.0)  # held by a round joined
        self._requirements = _requirements(d)
        return self._requirements

    @property
    def requirements(self) -> Requirements:
        return self._requirements or self.subscribe()

    def push(self, gset: GeneratorSet | list[Generator]) -> PushResult:
        """Push a :class:`~fedsynth.generators.base.GeneratorSet` (or a list of generators).
        All-or-nothing on the hub; pushing the same content again is a no-op."""
        return self.push_raw(_artifact_files(gset))

    def push_raw(self, files: list[tuple[str, tuple[str, bytes, str]]]) -> PushResult:
        r = self._req("POST", f"/v1/federations/{self.federation}/pushes", files=files)
        return PushResult.from_dict(parse_answer(r.content, "push result", r.status_code))

    # ------------------------------------------------------------ federation rounds
    def join_round(self, round_id: int) -> RoundInfo:
        """Join an open round BEFORE reading any data: the hub refuses (409, :class:`HubError`
        naming the remaining and the needed ε) when this silo's budget cannot cover the round,
        and otherwise reserves the round's ε. Joining twice is a no-op. The answer carries the
        round's family, spec, schema, ε, δ, min_silos, deadline and status."""
        path = f"/v1/federations/{self.federation}/rounds/{round_id}/join"
        return _round(self._json("POST", path, "round"))

    def withdraw(self, round_id: int, reason: str = "") -> RoundInfo:
        """Leave a round that is still open (e.g. the local data check failed): the reservation is
        released, nothing is charged."""
        path = f"/v1/federations/{self.federation}/rounds/{round_id}/withdraw"
        return _round(self._json("POST", path, "round", json={"reason": reason[:500]}))

    def round(self, round_id: int) -> RoundInfo:
        """A round of this silo's federation (this silo's own partition id once started)."""
        path = f"/v1/federations/{self.federation}/rounds/{round_id}"
        return _round(self._json("GET", path, "round"))

    def rounds(self, limit: int = 20) -> list[RoundInfo]:
        d = self._json("GET", f"/v1/federations/{self.federation}/rounds", "rounds", params={"limit": limit})
        return [_round(x) for x in _list(d, "rounds")]

    def list_pool(self, exclude_silos: tuple[str, ...] | list[str] = ()) -> list[PoolEntry]:
        params = [("exclude_silo", s) for s in exclude_silos]
        d = self._json("GET", f"/v1/federations/{self.federation}/pool", "pool", params=params)
        return [PoolEntry.from_dict(x) for x in _list(d, "pool")]

    def download(self, entry: PoolEntry) -> tuple[bytes, bytes]:
        """(card bytes, weights bytes), each verified against the hashes the pool advertises; the
        weights are capped at the entry's announced ``size``, the card at the card size limit."""
        base = f"/v1/federations/{self.federation}/generators/{entry.id}"
        card_b, card_h = self._download(f"{base}/card", MAX_CARD_BYTES, f"generator {entry.id}: card")
        if card_h != entry.card_sha256:
            raise ArtifactError(
                f"generator {entry.id}: card does not match its sha256 (tampered in transit?)"
            )
        w, w_h = self._download(f"{base}/weights", entry.size, f"generator {entry.id}: weights")
        if w_h != entry.weights_sha256:
            raise ArtifactError(f"generator {entry.id}: weights do not match their sha256")
        return card_b, w

    def pull(
        self,
        entries: list[PoolEntry] | None = None,
        *,
        exclude_silos: tuple[str, ...] | list[str] = (),
    ) -> list[Generator]:
        """Download and verify generators (default: the whole pool minus ``exclude_silos``)."""
        req = self.requirements
        chosen = entries if entries is not None else self.list_pool(exclude_silos)
        round_specs: dict[int, dict[str, dict[str, Any]]] = {}
        out = []
        for e in chosen:
            card_b, w = self.download(e)
            card = GeneratorCard.from_json(card_b)
            if (
                card.weights_sha256 != e.weights_sha256
                or card.class_label != e.class_label
                or card.family != e.family
                or card.scope != e.scope
            ):
                raise ArtifactError(f"generator {e.id}: card disagrees with the pool listing")
            required = req.families
            if e.round_id is not None:  # a round's generator must fit the spec its round announced
                if e.round_id not in round_specs:
                    info = self.round(e.round_id)
                    round_specs[e.round_id] = {info.family: info.spec}
                required = round_specs[e.round_id]
            src = f"{self.base_url}#{self.federation}/{e.owner}/{e.id}"
            try:
                g = from_artifact(card, w, req.schema, required=required, source=src, check=True)
            except ArtifactError as err:
                raise ArtifactError(f"generator {e.id} of {e.owner}: {err}") from None
            out.append(g)
        return out


__all__ = [
    "HubAdmin",
    "HubAnswerError",
    "HubClient",
    "HubError",
    "PoolEntry",
    "PushResult",
    "ResultArtifacts",
    "RoundInfo",
    "RoundMember",
]
