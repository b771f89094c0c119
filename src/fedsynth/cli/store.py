"""``fedsynth hub gc``: delete the store's orphan blobs (stored by pushes that were refused or
never committed). Safe while hubs run on the same store: a blob younger than ``--grace`` is kept,
so another process's push in flight is never raced (see :meth:`BlobStore.gc`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fedsynth.cli.app import hub_app
from fedsynth.cli.common import out, user_errors
from fedsynth.exchange.store import DEFAULT_GRACE_S


@hub_app.command("gc")
def gc_cmd(
    db: str = typer.Option(
        ..., "--db", help="the hub's SQLAlchemy URL (sqlite:///FILE, postgresql+psycopg://...)"
    ),
    store: Path = typer.Option(..., "--store", help="the hub's artifact folder"),
    grace: float = typer.Option(
        DEFAULT_GRACE_S, "--grace", help="keep unreferenced blobs younger than this many seconds"
    ),
) -> None:
    """Delete blobs that no generator references and that are older than --grace seconds."""
    with user_errors():
        if not grace >= 0:  # also refuses NaN
            raise ValueError(f"--grace must be ≥ 0 seconds, not {grace}")
        if not (store / "blobs").is_dir():
            raise FileNotFoundError(f"{store} is not a hub store (no blobs/ folder)")
        from sqlalchemy.exc import SQLAlchemyError

        from fedsynth.exchange import db as hubdb
        from fedsynth.exchange.store import BlobStore, collect_garbage

        engine = hubdb.make_engine(db)
        try:
            st = collect_garbage(engine, BlobStore(store), grace)
        except SQLAlchemyError as e:  # an unmigrated or unreachable database: never delete blind
            raise ValueError(f"cannot read the referenced blobs from {db.split('@')[-1]}: {e}") from None
        finally:
            engine.dispose()
    out.print(
        f"removed {st.removed} orphan blobs ({st.freed_bytes} bytes); kept {st.kept_referenced} "
        f"referenced and {st.kept_recent} younger than {grace:g} s"
    )
