"""The hub's configuration, caller identity, request bodies, error type and constants."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "v1"
MEDIA = {"weights": "application/octet-stream", "card": "application/json"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
#: Test hook (documented in docs/hub.md): seconds to sleep after the artifacts are durably stored
#: and before the DB commit, to let the crash test SIGKILL the hub inside that window.
FAULT_DELAY_ENV = "FEDSYNTH_HUB_FAULT_DELAY_BEFORE_COMMIT"
#: How long a process trusts its cached token -> silo entry before asking the database again:
#: the bound on how long a revoked or rotated token keeps working in another hub process.
TOKEN_CACHE_TTL_S = 5.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class HubSettings:
    db_url: str
    store_dir: str
    admin_token_hash: str
    max_body_bytes: int = 64 * 1024 * 1024
    rate_per_s: float = 50.0
    rate_burst: int = 200
    body_idle_s: float = 30.0  # 408 when a body chunk takes longer than this
    body_total_s: float = 600.0  # ... or the whole body longer than this


@dataclass(frozen=True)
class Caller:
    kind: str  # "admin" | "silo"
    silo_id: int | None = None
    silo: str | None = None
    federation_id: int | None = None
    federation: str | None = None


class CreateFederation(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    name: str = Field(max_length=64)
    data_schema: dict[str, Any] = Field(alias="schema")
    families: list[dict[str, Any]] | None = Field(default=None, max_length=16)  # [{kind, spec}]
    decoder_spec: dict[str, Any] | None = None  # before families: a dp-vae decoder spec
    max_epsilon: float = Field(gt=0)
    max_delta: float = Field(gt=0, lt=1)
    silo_epsilon_budget: float = Field(gt=0)
    # accept cards written before claims carried their parameters (their ε cannot be re-derived)
    allow_legacy_cards: bool = False
    # a DP schema (source "dp"): the silos whose rows its estimate used (each charged its ε when added)
    schema_silos: list[str] = Field(default_factory=list, max_length=1024)


class AddSilo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)


class HubError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def settings_from_env(db_url: str, store_dir: str | Path, admin_token: str, **kw: Any) -> HubSettings:
    return HubSettings(
        db_url=db_url, store_dir=str(store_dir), admin_token_hash=hash_token(admin_token), **kw
    )
