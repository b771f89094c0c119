"""HTTP clients for the hub: :class:`HubClient` (a silo) and :class:`HubAdmin` (the operator).

The silo client never trusts the hub blindly: every downloaded card must hash to the pool's
``card_sha256``, every weight file to the card's ``weights_sha256``, and each artifact goes through
the same :func:`fedsynth.generators.io.from_artifact` checks the hub ran on push (family accepted,
spec equal to the federation's, tensors fitting it, a finite in-domain fixed batch) before it is
sampled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import httpx

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.data.schema import Schema
from fedsynth.exchange.protocol import Requirements
from fedsynth.generators.base import Generator, GeneratorSet
from fedsynth.generators.io import from_artifact, to_artifact


class HubError(RuntimeError):
    """The hub answered with an error; ``status`` is the HTTP status, the message its reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"hub refused ({status}): {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class PoolEntry:
    id: int
    silo: str
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

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PoolEntry:
        d = {"family": "dp-vae/1", **d}  # hubs before families listed decoders only
        return PoolEntry(**{k: d[k] for k in PoolEntry.__dataclass_fields__})


@dataclass(frozen=True)
class PushResult:
    push_id: int
    content_hash: str
    epsilon: float
    delta: float
    generators: int
    bytes: int
    duplicate: bool


def _check(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except (ValueError, AttributeError):
            detail = r.text
        raise HubError(r.status_code, detail if isinstance(detail, str) else json.dumps(detail))
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
    ) -> Requirements:
        r = self._req(
            "POST",
            "/v1/federations",
            json={
                "name": name,
                "schema": schema.to_dict(),
                "families": [{"kind": k, "spec": v} for k, v in families.items()],
                "max_epsilon": max_epsilon,
                "max_delta": max_delta,
                "silo_epsilon_budget": silo_epsilon_budget,
            },
        )
        return Requirements.from_dict(r.json())

    def add_silo(self, federation: str, name: str) -> str:
        """Register a silo; returns its bearer token (shown only this once)."""
        return str(
            self._req("POST", f"/v1/federations/{federation}/silos", json={"name": name}).json()["token"]
        )

    def federations(self) -> list[Requirements]:
        return [Requirements.from_dict(d) for d in self._req("GET", "/v1/federations").json()]

    def audit(self, federation: str, limit: int = 200) -> list[dict[str, Any]]:
        return list(self._req("GET", f"/v1/federations/{federation}/audit", params={"limit": limit}).json())

    def pool(self, federation: str) -> list[PoolEntry]:
        return [PoolEntry.from_dict(d) for d in self._req("GET", f"/v1/federations/{federation}/pool").json()]


class HubClient(_Base):
    """A silo's view of the hub. The federation is found from the token (``/v1/whoami``)."""

    def __init__(self, base_url: str, token: str, **kw: Any) -> None:
        super().__init__(base_url, token, **kw)
        who = self._req("GET", "/v1/whoami").json()
        if who.get("kind") != "silo":
            raise HubError(403, "HubClient needs a silo token (got the admin token)")
        self.federation: str = who["federation"]
        self.silo: str = who["silo"]
        self._requirements: Requirements | None = None

    def subscribe(self) -> Requirements:
        """Fetch the federation's requirements (schema, decoder spec, ε/δ caps, budget)."""
        d = self._req("GET", f"/v1/federations/{self.federation}/requirements").json()
        self.epsilon_spent = float(d.get("epsilon_spent", 0.0))
        self._requirements = Requirements.from_dict(d)
        return self._requirements

    @property
    def requirements(self) -> Requirements:
        return self._requirements or self.subscribe()

    def push(self, gset: GeneratorSet | list[Generator]) -> PushResult:
        """Push a :class:`~fedsynth.generators.base.GeneratorSet` (or a list of generators).
        All-or-nothing on the hub; pushing the same content again is a no-op."""
        gens = gset.generators if isinstance(gset, GeneratorSet) else list(gset)
        files: list[tuple[str, tuple[str, bytes, str]]] = []
        for i, g in enumerate(gens):
            card_b, w = to_artifact(g)
            files.append(("cards", (f"gen-{i}.json", card_b, "application/json")))
            files.append(("weights", (f"gen-{i}.safetensors", w, "application/octet-stream")))
        return self.push_raw(files)

    def push_raw(self, files: list[tuple[str, tuple[str, bytes, str]]]) -> PushResult:
        r = self._req("POST", f"/v1/federations/{self.federation}/pushes", files=files)
        return PushResult(**r.json())

    def list_pool(self, exclude_silos: tuple[str, ...] | list[str] = ()) -> list[PoolEntry]:
        params = [("exclude_silo", s) for s in exclude_silos]
        r = self._req("GET", f"/v1/federations/{self.federation}/pool", params=params)
        return [PoolEntry.from_dict(d) for d in r.json()]

    def download(self, entry: PoolEntry) -> tuple[bytes, bytes]:
        """(card bytes, weights bytes), each verified against the hashes the pool advertises."""
        base = f"/v1/federations/{self.federation}/generators/{entry.id}"
        card_b = self._req("GET", f"{base}/card").content
        if hashlib.sha256(card_b).hexdigest() != entry.card_sha256:
            raise ArtifactError(
                f"generator {entry.id}: card does not match its sha256 (tampered in transit?)"
            )
        w = self._req("GET", f"{base}/weights").content
        if hashlib.sha256(w).hexdigest() != entry.weights_sha256:
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
        out = []
        for e in chosen:
            card_b, w = self.download(e)
            card = GeneratorCard.from_json(card_b)
            if (
                card.weights_sha256 != e.weights_sha256
                or card.class_label != e.class_label
                or card.family != e.family
            ):
                raise ArtifactError(f"generator {e.id}: card disagrees with the pool listing")
            src = f"{self.base_url}#{self.federation}/{e.silo}/{e.id}"
            try:
                g = from_artifact(card, w, req.schema, required=req.families, source=src, check=True)
            except ArtifactError as err:
                raise ArtifactError(f"generator {e.id} of {e.silo}: {err}") from None
            out.append(g)
        return out
