"""One federation round through the hub, run on Flower.

Silo side — :func:`join`: the hub checks the silo's remaining ε budget and reserves the round's ε
*before* the silo reads its data; then the silo validates its table against the public schema and
the family's encoding (wrong schema, missing target → the silo withdraws, its reservation is
released, and a :class:`~fedsynth.data.schema.SchemaError` says what is wrong).

Admin side — :func:`run_round`: start (the hub refuses a round with fewer than its minimum silos:
nothing released, nothing charged), run the family's fit on Flower over the members, post the
artifact with the contributing silos (the survivors of every released sum). The hub stores it and
charges every contributor in one transaction; a failed run aborts the round (reservations
released, nothing charged). ``transport``:

* ``"simulation"`` — the ServerApp and one ClientApp per silo in this process
  (:func:`fedsynth.federated.local.run_in_process`); the silos' tables are handed in;
* :class:`Deployment` — ``flwr run`` against a SuperLink where every silo runs a SuperNode with
  ``--node-config "partition-id=P data-path=FILE"`` (what ``fedsynth join --superlink`` starts).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth.data.datasets import load_table
from fedsynth.data.schema import Schema, SchemaError
from fedsynth.exchange.client import HubAdmin, HubClient
from fedsynth.exchange.rounds_protocol import RoundInfo
from fedsynth.federated.deploy import LocalDeployment, flwr_run, write_app
from fedsynth.federated.round_fit import REPORT, build_fit
from fedsynth.generators.base import GeneratorSet
from fedsynth.generators.io import read_generator_set


@dataclass
class Joined:
    """A silo's place in a round: the hub's answer and its validated table."""

    info: RoundInfo
    frame: pd.DataFrame


def run_config(
    info: RoundInfo,
    silos: int,
    out: str | Path,
    *,
    seed: int = 0,
    seeded_noise: bool = False,
    max_client_rows: int = 10_000_000,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Flower run config of a round (every value public: it is what the hub announced)."""
    cfg: dict[str, Any] = {
        "family": info.family,
        "schema-json": json.dumps(info.schema),
        "spec-json": json.dumps(info.spec) if info.spec else "",
        "epsilon": float(info.epsilon),
        "delta": float(info.delta),
        "silos": int(silos),
        "min-silos": int(info.min_silos),
        "seed": int(seed),
        "max-client-rows": int(max_client_rows),
        "seeded-noise": bool(seeded_noise),
        "out": str(out),
    }
    cfg.update(extra or {})
    return cfg


def join(
    client: HubClient, round_id: int, data: str | Path | pd.DataFrame, target: str | None = None
) -> Joined:
    """Join a round: budget first (the hub refuses before anything is read), then the data check."""
    info = client.join_round(round_id)  # HubError 409 when the remaining budget is below the round's ε
    try:
        schema = Schema.from_dict(info.schema)
        if target is not None and target != schema.target:
            raise SchemaError(f"the round's target is {schema.target!r}, not {target!r}")
        df = load_table(data) if not isinstance(data, pd.DataFrame) else data
        if schema.target not in df.columns:
            raise SchemaError(f"the data has no target column {schema.target!r}")
        # the family's own encoding validates every column against the public schema
        build_fit(run_config(info, max(2, info.min_silos), "")).encode(df)
    except Exception as e:
        client.withdraw(round_id, reason=f"local data check failed: {e}")
        raise
    return Joined(info, df)


@dataclass
class RoundOutcome:
    generators: GeneratorSet
    report: dict[str, Any]
    result: RoundInfo  # the hub's answer to the posted result (status "done")


def _finish(admin: HubAdmin, fed: str, rid: int, out: Path, pid_to_silo: Mapping[int, str]) -> RoundOutcome:
    schema, gens = read_generator_set(out / "generators")
    report = json.loads((out / REPORT).read_text())
    contributors = [pid_to_silo[int(p)] for p in report["contributors"]]
    gset = GeneratorSet(schema, gens[0].card.family, gens)
    result = admin.post_round_result(fed, rid, gset, contributors=contributors, report=report)
    return RoundOutcome(gset, report, result)


def run_round(
    admin: HubAdmin,
    fed: str,
    rid: int,
    frames: Mapping[str, pd.DataFrame] | None = None,
    *,
    run_app: Callable[[dict[str, Any], int], None] | None = None,
    seed: int = 0,
    seeded_noise: bool = False,
    drop: Callable[[int, Any], bool] | None = None,
) -> RoundOutcome:
    """Start round ``rid`` and run it. ``frames`` (silo name → table) runs the simulation in this
    process; ``run_app(run_config, silos)`` runs it on a deployment instead (SuperNodes read their
    own data). Any failure after the start aborts the round on the hub and re-raises."""
    info = admin.start_round(fed, rid)  # HubError 409: fewer than min_silos joined (round expired)
    members = {m.partition_id: m.silo for m in info.members if m.partition_id is not None}
    try:
        with tempfile.TemporaryDirectory(prefix="fedsynth-round-") as tmp:
            cfg = run_config(info, len(members), tmp, seed=seed, seeded_noise=seeded_noise)
            if run_app is not None:
                run_app(cfg, len(members))
            else:
                if frames is None or set(members.values()) - set(frames):
                    raise ValueError("a simulated round needs every member's table")
                assert frames is not None
                # Flower only where a round runs in process: ``join`` (a silo's data check) needs none
                from fedsynth.federated.fed_round import make_apps
                from fedsynth.federated.local import run_in_process

                by_pid = {p: frames[s] for p, s in members.items()}
                server, client = make_apps(cfg, frames=lambda pid: by_pid[pid])
                run_in_process(server, client, len(members), drop=drop, run_config=cfg)
            return _finish(admin, fed, rid, Path(tmp), members)
    except BaseException as e:
        # the hub may already be gone; the original error is what matters
        with contextlib.suppress(Exception):
            admin.abort_round(fed, rid, reason=f"{type(e).__name__}: {e}"[:500])
        raise


def flwr_runner(
    connection: str,
    app_dir: str | Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 3600.0,
    logs: str = "the SuperLink's log",
) -> Callable[[dict[str, Any], int], None]:
    """``run_app`` for :func:`run_round` on a SuperLink: the round's run config becomes the Flower
    App's config and ``flwr run APP CONNECTION`` executes it; each silo's SuperNode reads its own
    ``data-path``. ``connection`` is a SuperLink named in ``$FLWR_HOME/config.toml``."""

    def run(cfg: dict[str, Any], silos: int) -> None:
        app = write_app(
            Path(app_dir), "fedsynth.federated.fed_round:server_app",
            "fedsynth.federated.fed_round:client_app", cfg, name="fedsynth-round",
        )  # fmt: skip
        res = flwr_run(app, connection, env=env, timeout=timeout)
        if res.returncode != 0 or not (Path(cfg["out"]) / REPORT).exists():
            tail = (res.stdout or "")[-1500:] + (res.stderr or "")[-1500:]
            raise RuntimeError(f"flwr run failed (exit {res.returncode}; see {logs}): {tail}")

    return run


def deployment_runner(
    deployment: LocalDeployment, app_dir: str | Path, timeout: float = 600.0
) -> Callable[[dict[str, Any], int], None]:
    """:func:`flwr_runner` on a one-machine :class:`~fedsynth.federated.deploy.LocalDeployment`."""
    return flwr_runner(
        deployment.connection, app_dir, env=deployment.env, timeout=timeout, logs=str(deployment.logs)
    )


__all__ = ["Joined", "RoundOutcome", "deployment_runner", "flwr_runner", "join", "run_config", "run_round"]
