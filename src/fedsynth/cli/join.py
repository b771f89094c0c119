"""``fedsynth join`` (a silo takes part in a round) and ``fedsynth hub run-round`` (the admin runs it).

Thin: parse, call :func:`fedsynth.rounds.coordinator.join`, and — with ``--superlink`` — run this
silo's Flower SuperNode (``--node-config "partition-id=P data-path=FILE"``) until the round ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import typer

from fedsynth.cli.app import app, hub_app
from fedsynth.cli.common import console
from fedsynth.cli.hub import HUB_HELP, _admin_token, _run, _silo_token, _verify

FINAL = ("done", "aborted", "expired")


def _supernode(superlink: str, pid: int, data: Path, root_cert: Path | None) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("flower-supernode")
    args = [
        str(exe),
        "--superlink",
        superlink,
        "--node-config",
        f'partition-id={pid} data-path="{data.resolve()}"',
    ]
    args += ["--root-certificates", str(root_cert)] if root_cert else ["--insecure"]
    return subprocess.Popen(args, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@app.command("join")
def join_cmd(
    hub: str = typer.Option(..., help=HUB_HELP),
    round_id: int = typer.Option(..., "--round", help="the round id (fedsynth hub open-round prints it)"),
    data: Path = typer.Option(..., help="this silo's table (CSV or Parquet); never leaves the silo"),
    target: str = typer.Option(None, help="the target column (checked against the round's schema)"),
    token: str = typer.Option(None, help="silo token (or FEDSYNTH_HUB_TOKEN)"),
    superlink: str = typer.Option(
        None,
        help="the federation's Flower SuperLink (host:port): run this silo's SuperNode until the round ends",
    ),
    root_cert: Path = typer.Option(None, help="CA certificate of the SuperLink (default: insecure)"),
    ca_cert: Path = typer.Option(None, help="CA certificate of the hub"),
    poll: float = typer.Option(2.0, help="seconds between round status polls"),
) -> None:
    """Join a federation round. The hub checks this silo's remaining ε budget BEFORE the data is
    read; then the table is checked against the round's schema (a bad table withdraws the silo)."""

    def go() -> None:
        from fedsynth.exchange.client import HubClient
        from fedsynth.rounds.coordinator import join

        with HubClient(hub, _silo_token(token), verify=_verify(ca_cert)) as c:
            joined = join(c, round_id, data, target)
            info = joined.info
            console.print(
                f"joined round {info.id} ({info.family}, ε = {info.epsilon:g}, δ = {info.delta:g}); "
                f"{len(joined.frame)} rows checked against the schema; status {info.status}"
            )
            if not superlink:
                console.print("run a SuperNode for this silo with --superlink to take part")
                return
            while (info := c.round(round_id)).status == "open":
                time.sleep(poll)
            if info.status != "running" or info.membership is None or info.membership.partition_id is None:
                raise ValueError(f"round {round_id} is {info.status}: {info.detail or 'not started'}")
            node = _supernode(superlink, info.membership.partition_id, data, root_cert)
            try:
                while (info := c.round(round_id)).status not in FINAL:
                    time.sleep(poll)
            finally:
                node.terminate()
                node.wait(timeout=15)
            console.print(f"round {round_id} {info.status}: {info.detail or ''}".rstrip(": "))
            if info.status != "done":
                raise typer.Exit(code=2)

    _run(go)


@hub_app.command("run-round")
def run_round_cmd(
    hub: str = typer.Option(..., help=HUB_HELP),
    federation: str = typer.Option(...),
    round_id: int = typer.Option(..., "--round"),
    connection: str = typer.Option(
        ..., help="the Flower SuperLink connection (in $FLWR_HOME/config.toml) the silos' SuperNodes use"
    ),
    admin_token: str = typer.Option(None, help="default: $FEDSYNTH_HUB_ADMIN_TOKEN"),
    ca_cert: Path = typer.Option(None, help="CA certificate of the hub"),
    timeout: float = typer.Option(3600.0, help="seconds the Flower run may take"),
) -> None:
    """Start a round on the hub, run its fit on the SuperLink (flwr run) and post the artifact: the
    hub stores it and charges every contributing silo in one transaction (a failure aborts)."""

    def go() -> None:
        import tempfile

        from fedsynth.exchange.client import HubAdmin
        from fedsynth.rounds.coordinator import flwr_runner, run_round

        with (
            HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm,
            tempfile.TemporaryDirectory(prefix="fedsynth-app-") as app_dir,
        ):
            run = flwr_runner(connection, app_dir, timeout=timeout)
            out = run_round(adm, federation, round_id, run_app=run)
        rep = out.report
        console.print(
            f"round {round_id} done: {len(rep['contributors'])} of {rep['silos']} silos contributed, "
            f"ε = {out.generators.epsilon:.4g}; generator ids {list(out.result.generator_ids)}"
        )

    _run(go)
