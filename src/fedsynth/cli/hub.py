"""CLI for the generator hub: ``fedsynth hub serve|create-federation|add-silo`` and the silo side
``fedsynth push`` / ``fedsynth pull``. Thin: parse, call :mod:`fedsynth.exchange`, print."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, RenderableType
from rich.table import Table

from fedsynth.cli.app import app, hub_app
from fedsynth.cli.common import console, progress, refuse_existing, user_errors, write_atomic
from fedsynth.cli.sgde import DEFAULT_GENERATOR
from fedsynth.cli.tables import new_table, out, print_table
from fedsynth.exchange.server import ADMIN_TOKEN_ENV

if TYPE_CHECKING:
    from fedsynth.audit.poison import PoolScreen

HUB_HELP = "Hub base URL, e.g. https://hub.example.org:8765"
TOKEN_ENV = "FEDSYNTH_HUB_TOKEN"


def _origin(source: str) -> str:
    """The silo of a pulled generator (``URL#federation/silo/id``), else its set folder's name."""
    if "#" in source:
        parts = source.rsplit("#", 1)[1].split("/")
        if len(parts) >= 3:
            return parts[1]
    p = Path(source)
    return p.parent.name or p.name


def screen_report(screen: PoolScreen) -> list[RenderableType]:
    """The pull-time screen as printed: a table of short scores, one row per (generator, class),
    then for each dropped generator its source and reasons, one per line. Sources, reasons and
    cell names are too long for a table cell at 80 columns. Last, in bold, the screen's warnings:
    a flagged generator kept because it was the last of its class ("KEEP!" in the table), or a
    class that no pulled generator could be sampled for."""
    n = len(screen.kept) + len(screen.dropped)
    t = new_table(
        f"pool screen: kept {len(screen.kept)} of {n} generators",
        ["#", "silo", "class", ("label", "right"), ("pool TV", "right"), ("rare cell", "right"),
         ("own TV", "right"), ("col z", "right"), "verdict"],
        caption="label: own model's P(class); rare cell: excess share; col z: worst column",
    )  # fmt: skip

    def f(x: float, spec: str) -> str:  # NaN: the generator could not be sampled (reason below)
        return "–" if math.isnan(x) else format(x, spec)

    rescued = screen.kept_for_class

    def verdict(i: int, flagged: bool) -> str:
        if not flagged:
            return "[green]keep[/]"
        return "[bold yellow]KEEP![/]" if i in rescued else "[bold red]DROP[/]"

    for sc in screen.scores:
        t.add_row(
            str(sc.index),
            _origin(sc.source),
            sc.class_label,
            f(sc.label_consistency, ".2f"),
            f(sc.pool_distance, ".3f"),
            f(sc.cell_spike, ".1%"),
            f(sc.own_distance, ".3f"),
            f(sc.column_z, ".1f"),
            verdict(sc.index, sc.flagged),
        )
    lines: list[RenderableType] = [t]
    for sc in screen.scores:
        if sc.flagged:
            what = "kept although flagged" if sc.index in rescued else "dropped"
            lines.append(f"#{sc.index} {what} (class {sc.class_label}, {sc.source}):")
            lines += [f"  - {r}" for r in sc.reasons]
    # Loud: the table alone would not tell that a class now rests on a flagged generator.
    lines += [f"[bold yellow]warning:[/] {w}" for w in screen.warnings]
    return lines


def print_screen(screen: PoolScreen, to: Console | None = None) -> None:
    c = to if to is not None else out
    for r in screen_report(screen):
        if isinstance(r, Table):
            print_table(r, c)
        else:  # soft wrap: a long source URL stays one line in a log (a TTY wraps it for display)
            c.print(r, soft_wrap=True, highlight=False)


def _verify(ca_cert: Path | None) -> bool | str:
    return str(ca_cert) if ca_cert else True


def _admin_token(tok: str | None) -> str:
    t = tok or os.environ.get(ADMIN_TOKEN_ENV)
    if not t:
        raise ValueError(f"give --admin-token or set {ADMIN_TOKEN_ENV}")
    return t


def _silo_token(tok: str | None) -> str:
    t = tok or os.environ.get(TOKEN_ENV)
    if not t:
        raise ValueError(f"give --token or set {TOKEN_ENV}")
    return t


def _hub_errors() -> tuple[type[BaseException], ...]:
    import httpx

    from fedsynth.exchange.client import HubError

    return (HubError, httpx.HTTPError)


def _run(fn) -> None:
    """user_errors() plus hub refusals / connection errors as one red line, exit code 2."""
    with user_errors():
        try:
            fn()
        except _hub_errors() as e:
            console.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(code=2) from None


@hub_app.command("serve")
def serve_cmd(
    db: str = typer.Option(
        "sqlite:///fedsynth-hub.db",
        "--db",
        help="SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://user@host/db",
    ),
    store: Path = typer.Option(Path("fedsynth-hub-store"), "--store", help="artifact folder"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8765, "--port"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", exists=True, dir_okay=False),
    tls_key: Path | None = typer.Option(None, "--tls-key", exists=True, dir_okay=False),
    admin_token: str | None = typer.Option(
        None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}, else a random token printed once"
    ),
    rate: float = typer.Option(50.0, "--rate", help="requests per second per token (0 = off)"),
    burst: int = typer.Option(200, "--burst"),
    max_body_mb: float = typer.Option(64.0, "--max-body-mb", help="413 above this request size"),
) -> None:
    """Run the hub (migrates the database first)."""
    from fedsynth.exchange.server import serve

    with user_errors():
        scheme = "https" if tls_cert else "http"
        console.print(f"hub on {scheme}://{host}:{port}  db={db.split('@')[-1]}  store={store}")
        serve(
            db,
            str(store),
            host=host,
            port=port,
            admin_token=admin_token,
            tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
            rate_per_s=rate,
            rate_burst=burst,
            max_body_mb=max_body_mb,
            log_level="info",
        )


@hub_app.command("create-federation")
def create_federation_cmd(
    name: str = typer.Option(..., "--name"),
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    schema: Path | None = typer.Option(None, "--schema", help="declared schema (JSON/YAML)"),
    dataset: str | None = typer.Option(None, "--dataset", help="use a benchmark dataset's public schema"),
    max_epsilon: float = typer.Option(1.5, "--max-epsilon"),
    max_delta: float = typer.Option(1e-5, "--max-delta"),
    silo_budget: float = typer.Option(3.0, "--silo-budget", help="cumulative ε per silo over all its pushes"),
    families: list[str] = typer.Option(
        [DEFAULT_GENERATOR],
        "--families",
        help="accepted families (repeat or comma-separate): vae, gan, pgm, diffusion",
    ),
    latent_dim: int = typer.Option(8, "--latent-dim", help="vae: latent size"),
    hidden: str = typer.Option(
        "64,64", "--hidden", help="vae: encoder hidden sizes; the decoder mirrors them"
    ),
    schema_silos: list[str] = typer.Option(
        [],
        "--schema-silo",
        help="a DP schema (source dp): a silo whose rows its estimate used (repeat); the hub "
        "charges it the schema's ε when it is added",
    ),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert", help="CA bundle to verify the hub's TLS cert"),
) -> None:
    """Create a federation: schema, accepted generator families with their specs, privacy caps."""

    def go() -> None:
        import dataclasses

        from fedsynth.data.schema import load_schema
        from fedsynth.exchange.client import HubAdmin
        from fedsynth.generators.base import get_family

        if (schema is None) == (dataset is None):
            raise ValueError("give exactly one of --schema FILE or --dataset NAME")
        if schema is not None:
            sch = load_schema(schema)
        else:
            from fedsynth.data.datasets import load_dataset
            from fedsynth.data.images import IMAGE_BENCHMARKS, image_schema

            if dataset in IMAGE_BENCHMARKS:  # public: 28×28 8-bit images, ten labels
                sch = image_schema((1, 28, 28), tuple(str(i) for i in range(len(IMAGE_BENCHMARKS[dataset]))))
            else:
                sch = load_dataset(str(dataset), seed=0).schema
        try:
            hid = tuple(int(h) for h in hidden.split(",") if h.strip())
        except ValueError:
            raise ValueError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
        specs: dict[str, dict] = {}
        for fname in (f.strip() for item in families for f in item.split(",") if f.strip()):
            fam = get_family(fname)
            cfg = fam.default_config(dataset)
            if fam.kind == "dp-vae/1":
                cfg = dataclasses.replace(cfg, latent_dim=latent_dim, hidden=hid)
            specs[fam.kind] = fam.spec_for(sch, cfg).to_dict()
        if not specs:
            raise ValueError("--families needs at least one family")
        with HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm:
            req = adm.create_federation(
                name,
                sch,
                specs,
                max_epsilon=max_epsilon,
                max_delta=max_delta,
                silo_epsilon_budget=silo_budget,
                schema_silos=tuple(schema_silos),
            )
        dp_note = (
            f", DP schema ε {req.schema.dp_epsilon:g} charged to {', '.join(req.schema_silos)}"
            if req.schema_silos
            else ""
        )
        out.print(
            f"federation {req.federation!r}: {len(req.schema.columns)} columns, target "
            f"{req.schema.target!r}, ε ≤ {req.max_epsilon:g}, δ ≤ {req.max_delta:g}, "
            f"silo budget ε {req.silo_epsilon_budget:g}, schema hash {req.schema.hash()[:12]}, "
            f"families {', '.join(req.families)}{dp_note}"
        )

    _run(go)


@hub_app.command("add-silo")
def add_silo_cmd(
    federation: str = typer.Option(..., "--federation"),
    name: str = typer.Option(..., "--name"),
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    admin_token: str | None = typer.Option(None, "--admin-token", help=f"default: ${ADMIN_TOKEN_ENV}"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
) -> None:
    """Register a silo and print its bearer token (shown only once; the hub keeps a hash)."""

    def go() -> None:
        from fedsynth.exchange.client import HubAdmin

        with HubAdmin(hub, _admin_token(admin_token), verify=_verify(ca_cert)) as adm:
            token = adm.add_silo(federation, name)
        console.print(f"silo {name!r} registered in {federation!r}; its token (shown only once):")
        out.print(token, highlight=False, soft_wrap=True)

    _run(go)


@app.command("push")
def push_cmd(
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    token: str | None = typer.Option(None, "--token", help=f"silo token (default: ${TOKEN_ENV})"),
    data: Path = typer.Option(..., "--data", help="the silo's private table (CSV/Parquet)"),
    target: str = typer.Option(..., "--target"),
    epsilon: float | None = typer.Option(None, "--epsilon", help="default: min(1.0, the hub's cap)"),
    delta: float | None = typer.Option(None, "--delta", help="default: min(1/(10·|D_c|), the hub's cap)"),
    epochs: int | None = typer.Option(None, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    seed: int = typer.Option(0, "--seed"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
    generator: str | None = typer.Option(
        None, "--generator", help="family to train (vae, gan, pgm, diffusion); default: the hub's first"
    ),
) -> None:
    """Subscribe, train DP generators to the hub's requirements, push them."""

    def go() -> None:
        import dataclasses

        from fedsynth.data.datasets import load_table
        from fedsynth.data.schema import validate_frame
        from fedsynth.exchange.client import HubClient
        from fedsynth.exchange.protocol import schema_charge
        from fedsynth.generators.base import get_family
        from fedsynth.privacy.target import PrivacyTarget, default_delta

        with HubClient(hub, _silo_token(token), verify=_verify(ca_cert)) as cli:
            req = cli.subscribe()
            if target != req.schema.target:
                raise ValueError(
                    f"--target {target!r} differs from the federation's target {req.schema.target!r}"
                )
            left = req.silo_epsilon_budget - cli.epsilon_spent
            eps = epsilon if epsilon is not None else min(1.0, req.max_epsilon, left)
            if eps > req.max_epsilon:
                raise ValueError(f"--epsilon {eps:g} exceeds the federation's cap {req.max_epsilon:g}")
            if eps > left + 1e-12 or eps <= 0:
                raise ValueError(
                    f"this silo has ε {left:g} left of its budget {req.silo_epsilon_budget:g}; "
                    f"cannot train at ε = {eps:g}"
                )
            df = validate_frame(load_table(data), req.schema)
            counts = df[target].astype(str).value_counts()
            dl = delta if delta is not None else min(req.max_delta, default_delta(int(counts.min())))
            if dl > req.max_delta:
                raise ValueError(f"--delta {dl:g} exceeds the federation's cap {req.max_delta:g}")
            fam = get_family(generator or next(iter(req.families)))
            spec = fam.spec_from_dict(req.spec(fam.kind), req.schema)  # refuses a family not accepted
            cfg = fam.default_config(None)
            over = {k: v for k, v in (("epochs", epochs), ("max_steps", max_steps)) if v is not None}
            unknown = [k for k in over if k not in {f.name for f in dataclasses.fields(cfg)}]
            if unknown:
                raise ValueError(f"--{unknown[0].replace('_', '-')} does not apply to family {fam.kind}")
            cfg = dataclasses.replace(cfg, **over)
            console.print(
                f"federation {req.federation!r} as silo {cli.silo!r}: training {fam.kind} generators "
                f"at ε = {eps:g}, δ = {dl:g} on {len(df)} rows"
            )
            with progress() as prog:
                task = prog.add_task("training", total=None)

                def on_fit(rep: Any) -> None:
                    prog.update(task, advance=1, description=f"trained {rep.class_label or 'joint model'}")

                gset = fam.fit(
                    df, req.schema, PrivacyTarget(eps, dl), cfg, spec=spec, seed=seed, on_fit=on_fit
                )
            for msg in gset.skipped:
                console.print(f"[yellow]warning:[/] {msg}")
            if schema_charge(req, cli.silo)[0] > 0:
                # this silo's rows estimated the DP schema: its cards record that cost (the ledger
                # charged it when the silo was added, so `left` above already excludes it)
                gset.with_schema_cost()
            worst = max(c.epsilon for c in gset.cards)  # the hub's cap is per generator
            if worst > req.max_epsilon:
                raise ValueError(f"the accountant reports ε = {worst:.4g} > the hub's cap; not pushing")
            res = cli.push(gset)
        state = "already in the pool (nothing charged)" if res.duplicate else "accepted"
        out.print(
            f"push {res.push_id} {state}: {res.generators} generators, {res.bytes} bytes, "
            f"ε = {res.epsilon:.4g}, δ = {res.delta:.2g}"
        )

    _run(go)


@app.command("pull")
def pull_cmd(
    hub: str = typer.Option(..., "--hub", help=HUB_HELP),
    token: str | None = typer.Option(None, "--token", help=f"silo token (default: ${TOKEN_ENV})"),
    rows: int = typer.Option(..., "--rows", min=1),
    out_path: Path = typer.Option(..., "--out", help="CSV to write (atomically)"),
    exclude_silo: list[str] = typer.Option([], "--exclude-silo", help="skip this silo's generators"),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert"),
    screen_data: Path | None = typer.Option(
        None,
        "--screen-data",
        help="your own rows (CSV/Parquet, hub schema): screen out poisoned generators before sampling",
    ),
) -> None:
    """Download and verify the pool's generators, sample a class-balanced synthetic table.

    With ``--screen-data`` every pulled generator is first checked against the silo's own rows
    (label consistency, distance to the pool and to the local data; robust median ± MAD rule) and
    the flagged ones are dropped, with the reasons printed. The rows never leave the machine.
    """

    def go() -> None:
        from fedsynth.exchange.client import HubClient
        from fedsynth.generators.pool import GeneratorPool

        refuse_existing(out_path, overwrite)
        with HubClient(hub, _silo_token(token), verify=_verify(ca_cert)) as cli:
            req = cli.subscribe()
            entries = cli.list_pool(exclude_silo)
            if not entries:
                raise ValueError("the pool has no generators (after exclusions) to sample from")
            gens = []
            with progress() as prog:
                task = prog.add_task("pulling generators", total=len(entries))
                for e in entries:
                    gens.extend(cli.pull([e]))
                    prog.advance(task)
            if screen_data is not None:
                from fedsynth.audit.poison import PoolScreener
                from fedsynth.data.datasets import load_table
                from fedsynth.data.schema import validate_frame

                screener = PoolScreener(validate_frame(load_table(screen_data), req.schema), req.schema)
                gens = screener(gens)
                assert screener.last is not None
                print_screen(screener.last)
                for w in screener.last.warnings:  # on stderr too: stdout may be a log nobody reads
                    console.print(f"[bold yellow]warning:[/] {w}", soft_wrap=True, highlight=False)
                if screener.last.missing_classes:
                    lost = ", ".join(repr(c) for c in screener.last.missing_classes)
                    raise ValueError(
                        f"after screening no generator can draw class {lost}; refusing to write a "
                        "table without it (see the reasons above)"
                    )
            frame = GeneratorPool(req.schema, gens).sample(rows, seed=seed)
            write_atomic(out_path, frame.to_csv(index=False))
        silos = sorted({e.silo for e in entries})
        out.print(
            f"wrote {len(frame)} rows to {out_path} from {len(gens)} generators of {len(silos)} silos "
            f"(max ε {max(e.epsilon for e in entries):.4g}); {cli.bytes_received} bytes downloaded"
        )

    _run(go)
