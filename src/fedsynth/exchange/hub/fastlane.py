"""The pull fast lane's lookup, for :class:`fedsynth.exchange.limits.PullFastLane`."""

from __future__ import annotations

from fedsynth.exchange import db
from fedsynth.exchange.hub.audit_log import audit_pull
from fedsynth.exchange.hub.auth import identify
from fedsynth.exchange.hub.settings import hash_token
from fedsynth.exchange.hub.state import HubState


def cached_download(
    hub: HubState, fed: str, gid: int, which: str, token: str
) -> tuple[db.Generator, bytes] | None:
    """Answer a pull from the per-process caches alone, or ``None``.

    Serves only an authorised read whose every fact is already cached (token -> silo,
    federation, generator row, blob bytes) — exactly what the ``caller`` dependency, ``member``
    and ``download`` would find; anything else (a miss, a bad or foreign token, an unknown
    federation or generator) returns ``None`` and goes through the FastAPI route, which owns
    every error, refusal audit and DB lookup. Skipping FastAPI's routing and dependency
    solving cuts the app's time per pull from ~175–195 µs to ~20–110 µs (docs/benchmarks.md)."""
    c = identify(hub, hash_token(token), use_db=False)
    if c is None or (c.kind != "admin" and c.federation != fed):
        return None
    with hub.lock:
        f = hub.federations.get(fed)
        hit = hub.generators.get((f[0], gid)) if f else None
    if hit is None:
        return None
    g, owner = hit
    data = hub.blobs.get(g.weights_sha256 if which == "weights" else g.card_sha256)
    if data is None:
        return None
    if which == "weights":
        audit_pull(hub.audit, fed, c, g, owner)
    return g, data
