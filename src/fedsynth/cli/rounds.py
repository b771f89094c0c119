"""CLI for federation rounds on the hub: ``fedsynth hub open-round | round-status | start-round |
abort-round``. Thin: parse, call :class:`fedsynth.exchange.client.HubAdmin` (or a silo's
:class:`~fedsynth.exchange.client.HubClient` for ``round-status --token``), print.

Output is plain ``label  value`` lines wrapped at 80 columns between words, never inside a value
(a deadline, a family kind or a silo name is always printed whole). A refusal by the hub (e.g. a
second open round, too few silos at start) exits with code 2 and the hub's message.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fedsynth.cli.app import hub_app
from fedsynth.cli.common import out
from fedsynth.cli.hub import HUB_HELP, TOKEN_ENV, _admin_token, _run, _verify
from fedsynth.exchange.server import ADMIN_TOKEN_ENV

if TYPE_CHECKING:
    from fedsynth.exchange.client import RoundInfo

WIDTH = 80
LABEL = 15  # label column width; values start after it


def _line(label: str, value: str) -> str:
    return textwrap.fill(
        value,
        width=WIDTH,
        initial_indent=f"  {label:<{LABEL - 2}}",
        subsequent_indent=" " * LABEL,
        break_long_words=False,  # a value longer than a line overflows rather than being cut
        break_on_hyphens=False,
    )


def _when(t: datetime | None) -> str:
    return "" if t is None else t.astimezone(UTC).isoformat(timespec="seconds")


def round_lines(info: RoundInfo, now: datetime | None = None) -> list[str]:
    """A round as printed by every round command."""
    now = now or datetime.now(UTC)
    counts: dict[str, int] = {}
    for m in info.members:
        counts[m.status] = counts.get(m.status, 0) + 1
    who = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none joined yet"
    left = (info.deadline - now).total_seconds()
    due = f" (in {left:.0f} s)" if info.status == "open" and left > 0 else ""
    if info.status == "open" and left <= 0:
        due = " (passed)"
    # k=v without spaces: a line may break between settings, never inside one
    spec = ", ".join(f"{k}={v}" for k, v in sorted(info.spec.items()) if not isinstance(v, dict | list))
    lines = [
        f"round {info.id} of federation {info.federation!r}: {info.status}",
        _line("family", info.family),
        _line("privacy", f"ε = {info.epsilon:g}, δ = {info.delta:g} per contributing silo"),
        _line("silos", f"{who}; {info.min_silos} needed"),
        _line("joins until", f"{_when(info.deadline)}{due}"),
    ]
    if spec:
        lines.append(_line("spec", spec))
    if info.started:
        lines.append(_line("started", _when(info.started)))
    if info.finished:
        lines.append(_line("finished", _when(info.finished)))
    if info.generator_ids:
        ids = ", ".join(str(g) for g in info.generator_ids)
        lines.append(_line("result", f"generator {ids} (push {info.push_id}), in the pool"))
    if info.detail:
        lines.append(_line("detail", info.detail))
    if info.members:
        lines.append("  members")
        for m in info.members:
            bits = [m.status]
            if m.partition_id is not None:
                bits.append(f"partition {m.partition_id}")
            if m.epsilon_reserved:
                bits.append(f"ε reserved {m.epsilon_reserved:g}")
            lines.append(
                textwrap.fill(
                    ", ".join(bits),
                    width=WIDTH,
                    initial_indent=f"    {m.silo}: ",
                    subsequent_indent=" " * 6,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
    return lines


def _show(info: RoundInfo) -> None:
    for line in round_lines(info):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


ROUND_HELP = "round id (default: the federation's newest round)"


@hub_app.command("open-round")
def open_round_cmd(
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    federation: str = typer.Option(..., "--federation"),
    generator: str = typer.Option(
        ..., "--generator", help="the family to fit, e.g. fed-pgm (kind or short name)"
    ),
    epsilon: float = typer.Option(..., "--epsilon", help="ε each contributing silo is charged (≤ the cap)"),
    delta: float = typer.Option(..., "--delta", help="δ each contributing silo is charged (≤ the cap)"),
    min_silos: int = typer.Option(2, "--min-silos", min=2, help="the round expires with fewer"),
    deadline: float = typer.Option(600.0, "--deadline", help="seconds from now until joins close"),
    spec: Path | None = typer.Option(
        None, "--spec", exists=True, dir_okay=False, help="family spec (JSON); default: the family's default"
    ),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert", help="CA bundle to verify the hub's TLS cert"),
) -> None:
    """Open a federation round (one open or running round per federation at a time)."""

    def go() -> None:
        from fedsynth.exchange.client import HubAdmin

        spec_d = None
        if spec is not None:
            try:
                spec_d = json.loads(spec.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"--spec {spec} is not valid JSON: {e}") from None
        with HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm:
            info = adm.open_round(
                federation, generator, epsilon=epsilon, delta=delta, min_silos=min_silos,
                deadline_s=deadline, spec=spec_d,
            )  # fmt: skip
        _show(info)

    _run(go)


@hub_app.command("round-status")
def round_status_cmd(
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    federation: str | None = typer.Option(None, "--federation", help="needed with the admin token"),
    round_id: int | None = typer.Option(None, "--round", min=1, help=ROUND_HELP),
    token: str | None = typer.Option(
        None, "--token", help=f"ask as a silo (its own partition id only); e.g. ${TOKEN_ENV}"
    ),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
) -> None:
    """Show a round: state, family, ε/δ, deadline, members and their partition ids, result."""

    def go() -> None:
        from fedsynth.exchange.client import HubAdmin, HubClient

        if token:
            with HubClient(hub, token, verify=_verify(ca_cert)) as cli:
                infos = [cli.round(round_id)] if round_id else cli.rounds(limit=1)
        else:
            if not federation:
                raise ValueError("give --federation (or ask as a silo with --token)")
            with HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm:
                infos = [adm.round(federation, round_id)] if round_id else adm.rounds(federation, limit=1)
        if not infos:
            raise ValueError("this federation has no rounds yet")
        _show(infos[0])

    _run(go)


@hub_app.command("start-round")
def start_round_cmd(
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    federation: str = typer.Option(..., "--federation"),
    round_id: int = typer.Option(..., "--round", min=1),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
) -> None:
    """Start an open round: partition ids 0..K-1 in join order. With fewer than min_silos joined
    the round expires instead (reservations released, nothing charged) and this exits with 2."""

    def go() -> None:
        from fedsynth.exchange.client import HubAdmin

        with HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm:
            _show(adm.start_round(federation, round_id))

    _run(go)


@hub_app.command("abort-round")
def abort_round_cmd(
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    federation: str = typer.Option(..., "--federation"),
    round_id: int = typer.Option(..., "--round", min=1),
    reason: str = typer.Option("", "--reason", help="kept in the round's detail and the audit log"),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
) -> None:
    """Abort an open or running round: every reservation released, nothing charged."""

    def go() -> None:
        from fedsynth.exchange.client import HubAdmin

        with HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm:
            _show(adm.abort_round(federation, round_id, reason=reason))

    _run(go)


__all__ = ["round_lines"]
