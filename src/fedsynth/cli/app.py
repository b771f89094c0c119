"""The typer applications. Command modules register on these; keep them thin: parse, call, print."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="fedsynth",
    help="Federated, differentially private synthetic data (SGDE generator exchange, federated AIM).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
bench_app = typer.Typer(help="Benchmarks that reproduce the papers' tables (print a table, write JSON).")
hub_app = typer.Typer(help="The generator hub: serve, create federations, register silos.")
flaim_app = typer.Typer(help="Federated marginal-based synthesis (AIM family).")
data_app = typer.Typer(help="Benchmark data: verify or fetch the dataset files.")
app.add_typer(bench_app, name="bench")
app.add_typer(hub_app, name="hub")
app.add_typer(flaim_app, name="flaim")
app.add_typer(data_app, name="data")

import fedsynth.cli.rounds  # noqa: E402, F401  (registers `fedsynth hub open-round ...` on hub_app)
