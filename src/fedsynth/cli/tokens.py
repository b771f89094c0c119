"""CLI for the silo token lifecycle: ``fedsynth hub revoke-silo`` / ``fedsynth hub rotate-token``.

Thin: the two admin endpoints of :mod:`fedsynth.exchange.hub.tokens`, called through
``HubAdmin._req`` (the client's typed methods live in :mod:`fedsynth.exchange.client`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from fedsynth.cli.app import hub_app
from fedsynth.cli.common import console
from fedsynth.cli.hub import ADMIN_TOKEN_ENV, HUB_HELP, _admin_token, _run, _verify
from fedsynth.cli.tables import out


def _call(
    hub: str, admin_token: str | None, ca_cert: Path | None, federation: str, name: str, op: str
) -> Any:
    from fedsynth.exchange.client import HubAdmin

    path = f"/v1/federations/{quote(federation, safe='')}/silos/{quote(name, safe='')}/{op}"
    with HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm:
        return adm._req("POST", path).json()


@hub_app.command("revoke-silo")
def revoke_silo_cmd(
    federation: str = typer.Option(..., "--federation"),
    name: str = typer.Option(..., "--name", help="the silo"),
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
) -> None:
    """Revoke a silo's token (its pushes stay in the pool; rotate-token issues a new one)."""

    def go() -> None:
        r = _call(hub, admin_token, ca_cert, federation, name, "revoke")
        console.print(
            f"silo {name!r} of {federation!r} revoked: its token is refused by every hub process "
            f"within {r['effective_within_s']:g} s; its pushes stay in the pool"
        )

    _run(go)


@hub_app.command("rotate-token")
def rotate_token_cmd(
    federation: str = typer.Option(..., "--federation"),
    name: str = typer.Option(..., "--name", help="the silo"),
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
) -> None:
    """Give a silo a new token and print it (shown only once); the old one stops working."""

    def go() -> None:
        r = _call(hub, admin_token, ca_cert, federation, name, "rotate")
        console.print(
            f"silo {name!r} of {federation!r}: new token (shown only once; the old one is refused "
            f"within {r['effective_within_s']:g} s):"
        )
        out.print(r["token"], highlight=False, soft_wrap=True)

    _run(go)
