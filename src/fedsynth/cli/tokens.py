"""CLI for the silo token lifecycle: ``fedsynth hub revoke-silo`` / ``fedsynth hub rotate-token``.

Thin: both talk HTTP to the hub's two admin endpoints (:mod:`fedsynth.exchange.hub.tokens`)
through the client's typed methods :meth:`~fedsynth.exchange.client.HubAdmin.revoke_silo` and
:meth:`~fedsynth.exchange.client.HubAdmin.rotate_token`, whose answers are parsed strictly
(a malformed one is a :class:`~fedsynth.exchange.answers.HubAnswerError`, exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedsynth.cli.app import hub_app
from fedsynth.cli.common import console
from fedsynth.cli.hub import ADMIN_TOKEN_ENV, HUB_HELP, _admin_token, _run, _verify
from fedsynth.cli.tables import out

if TYPE_CHECKING:
    from fedsynth.exchange.client import HubAdmin


def _admin(hub: str, admin_token: str | None, ca_cert: Path | None) -> HubAdmin:
    from fedsynth.exchange.client import HubAdmin

    return HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert))


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
        with _admin(hub, admin_token, ca_cert) as adm:
            within_s = adm.revoke_silo(federation, name)
        console.print(
            f"silo {name!r} of {federation!r} revoked: its token is refused by every hub process "
            f"within {within_s:g} s; its pushes stay in the pool"
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
        with _admin(hub, admin_token, ca_cert) as adm:
            token = adm.rotate_token(federation, name)
        console.print(
            f"silo {name!r} of {federation!r}: new token (shown only once; the old one is refused "
            "by every hub process within seconds):"
        )
        out.print(token, highlight=False, soft_wrap=True)

    _run(go)
