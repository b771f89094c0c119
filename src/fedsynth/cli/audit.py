"""``fedsynth audit``: empirical privacy of a generator set (membership attacks, canary audit)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from fedsynth.cli.app import app
from fedsynth.cli.common import console, quiet, refuse_existing, user_errors, write_json
from fedsynth.cli.tables import out, print_table


@app.command("audit")
def audit_cmd(
    generators: Annotated[
        Path | None, typer.Option("--generators", help="generator set folder (manifest.json) to audit")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="the table the generators were trained on")
    ] = None,
    holdout: Annotated[
        Path | None, typer.Option("--holdout", help="rows of the same distribution never used in training")
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="label column (must match the set's schema)")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="benchmark dataset: train a silo's generators, then audit")
    ] = None,
    silo: Annotated[
        int, typer.Option("--silo", help="which silo of --silos equal shares (with --dataset)")
    ] = 0,
    silos: Annotated[int, typer.Option("--silos", help="number of equal silos (with --dataset)")] = 20,
    epsilon: Annotated[float, typer.Option("--epsilon", help="ε for training (with --dataset)")] = 1.0,
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator",
            help="generator family to train and audit with --dataset: vae|gan|pgm|diffusion (default vae); "
            "with --generators the family is read from the cards",
        ),
    ] = None,
    non_private: Annotated[
        bool,
        typer.Option("--non-private", help="train WITHOUT DP (a control that should fail; --dataset only)"),
    ] = False,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", help="training epochs for training/shadows/canaries (families with epochs)"),
    ] = None,
    shadows: Annotated[
        int, typer.Option("--shadows", help="shadow generator sets (0 = skip that attack)")
    ] = 4,
    canaries: Annotated[
        int, typer.Option("--canaries", help="canaries for the one-run audit (0 = skip)")
    ] = 1000,
    targets: Annotated[int, typer.Option("--targets", help="outlier targets for the shadow attack")] = 100,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report (JSON)")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="write the ROC plot (PNG)")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace existing --json/--plot files")
    ] = False,
    no_fail_exit: Annotated[
        bool, typer.Option("--no-fail-exit", help="exit 0 even when the audit fails (default: exit 1)")
    ] = False,
) -> None:
    """Audit a generator set: DCR share, exact copies, DOMIAS and shadow-model membership attacks
    (AUC, TPR at low FPR, ε lower bound) and a one-run canary audit of its DP training.

    Either ``--generators DIR --data FILE --holdout FILE`` (any family: read from the cards) or
    ``--dataset NAME --silo I [--generator FAMILY]``. Shadow sets and the canary run are trained
    by the audited family with the cards' (ε, δ) and spec. Exit code 1 when any check fails (the
    generators leak more than their claimed ε allows).
    """
    with user_errors():
        quiet(load_torch=False)
        if plot is not None and plot.suffix.lower() != ".png":
            raise ValueError(f"--plot must be a .png file, got {plot}")
        for p in (json_out, plot):
            if p is not None:
                refuse_existing(p, overwrite)
        if shadows < 0 or canaries < 0 or targets < 2:
            raise ValueError("--shadows and --canaries must be >= 0 and --targets >= 2")
        if canaries == 1 or (0 < canaries < 100):
            raise ValueError("--canaries must be 0 (skip) or >= 100 for a meaningful one-run audit")
        from fedsynth.audit.report import run_audit, train_generators
        from fedsynth.generators.base import get_family

        if dataset is not None:
            if generators or data or holdout:
                raise ValueError("use either --dataset or --generators/--data/--holdout, not both")
            from fedsynth.data.datasets import load_dataset
            from fedsynth.data.partition import equal_shares

            family = get_family(generator or "vae")
            bench = load_dataset(dataset, seed=seed)
            schema = bench.schema
            full = bench.train
            if not 0 <= silo < silos:
                raise ValueError(f"--silo must be in [0, {silos})")
            parts = equal_shares(len(full), silos, seed=seed)
            train = full.iloc[parts[silo]].reset_index(drop=True)
            # Holdout: an equal number of rows from the other silos (same distribution, never seen).
            others = full.drop(index=parts[silo]).reset_index(drop=True)
            take = min(len(train), len(others))
            holdout_df = others.sample(n=take, random_state=seed).reset_index(drop=True)
            cfg = _with_epochs(family.default_config(dataset), epochs, family.kind)
            console.print(
                f"training {'NON-PRIVATE' if non_private else f'ε={epsilon}'} {family.kind} generators "
                f"for silo {silo} of {dataset} ({len(train)} rows; holdout {len(holdout_df)} rows)"
            )
            gens = train_generators(
                train,
                schema,
                cfg,
                epsilon=None if non_private else epsilon,
                delta=None,
                seed=seed,
                family=family.kind,
            )
        else:
            if non_private:
                raise ValueError("--non-private only applies with --dataset (it trains the control)")
            if generators is None or data is None or holdout is None:
                raise ValueError("need --generators DIR, --data FILE and --holdout FILE (or --dataset NAME)")
            from fedsynth.data.datasets import load_table
            from fedsynth.generators.io import read_generator_set

            schema, gens = read_generator_set(generators)
            family = get_family(gens[0].card.family)
            if generator is not None and get_family(generator).kind != family.kind:
                raise ValueError(
                    f"--generator {generator!r} differs from the set's family {family.kind!r} "
                    "(with --generators the family is read from the cards)"
                )
            if target is not None and target != schema.target:
                raise ValueError(
                    f"--target {target!r} differs from the generator set's target {schema.target!r}"
                )
            train = load_table(data)
            holdout_df = load_table(holdout)
            cfg = _with_epochs(family.default_config(), epochs, family.kind)
        console.print(
            f"auditing {len(gens)} generators: {shadows} shadow sets, {canaries} canaries, "
            f"{len(train)} members vs {len(holdout_df)} holdout rows"
        )
        rep = run_audit(
            schema,
            gens,
            train,
            holdout_df,
            config=cfg,
            shadows=shadows,
            canaries=canaries,
            n_targets=targets,
            seed=seed,
        )
        print_table(rep.table())
        if json_out is not None:
            write_json(json_out, rep.to_dict())
            console.print(f"report written to {json_out}")
        if plot is not None:
            rep.plot_roc(plot)
            console.print(f"ROC plot written to {plot}")
        if rep.passed:
            out.print(
                f"[bold green]PASS[/] — no check exceeds its null band or the claimed ε ({rep.seconds:.0f} s)"
            )
        else:
            fails = rep.failures()
            out.print(f"[bold red]FAIL[/] — {len(fails)} check{'s' if len(fails) > 1 else ''} failed:")
            for f in fails:  # one line each: one joined sentence would wrap inside numbers
                out.print(f"  - {f}", highlight=False)
            if not no_fail_exit:
                raise typer.Exit(code=1)


def _with_epochs(cfg: Any, epochs: int | None, kind: str) -> Any:
    """``cfg`` with explicit ``--epochs`` (they win over a step cap, where the config has one)."""
    if epochs is None:
        return cfg
    if epochs < 1:
        raise ValueError("--epochs must be >= 1")
    names = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
    if "epochs" not in names:
        raise ValueError(f"--epochs is not a setting of the {kind} family")
    extra = {"max_steps": 10**6} if "max_steps" in names else {}
    return dataclasses.replace(cfg, epochs=epochs, **extra)
