"""``fedsynth bench drift``: synthetic data against non-IID drift (:mod:`fedsynth.evaluation.drift`)."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fedsynth.cli.app import bench_app
from fedsynth.cli.common import StageProgress, progress, refuse_existing, user_errors, write_json
from fedsynth.cli.tables import new_table, out, print_table

DEFAULT_BETAS = (0.05, 0.1, 0.5, 1.0)
#: one line per method under the results table
METHOD_LEGEND: dict[str, str] = {
    "local": "each silo alone (ε 0: nothing leaves it)",
    "pooled": "one model on all silos' real rows (non-private ceiling)",
    "fedavg": "Flower FedAvg on the private rows",
    "fedprox": "Flower FedProx (proximal term at the silos)",
    "fedavgm": "Flower FedAvgM (server momentum)",
    "dp-fedavg": "FedAvg with DP-SGD at every silo, ε from the accountant over all rounds",
    "synthetic": "SGDE: one model on class-balanced pool rows only",
    "synthetic+finetune": "the synthetic model fine-tuned per silo (own rows + pool rows in its mix)",
    "fedavg+synthetic": "FedAvg, every silo's rows augmented with class-balanced pool rows",
    "synthetic-regulariser": "FedAvg + distillation on pool rows (teacher: global or synthetic model)",
    "personalised": "fedavg+synthetic's model fine-tuned per silo (own rows + pool rows in its mix)",
}


def _f(v: Any, fmt: str = ".2f") -> str:
    if v is None:
        return "–"
    try:
        if v != v:  # NaN
            return "–"
    except TypeError:
        return str(v)
    return format(v, fmt)


def _eps(e: dict[str, Any]) -> str:
    if e["epsilon"] is None:
        return "∞ (none)"
    return "0 (local)" if e["epsilon"] == 0 else f"{e['epsilon']:.3g}"


def _results_table(entries: list[dict[str, Any]], title: str) -> Any:
    fair = any(e.get("fairness") for e in entries)
    cols: list[Any] = [
        "method",
        "generator",
        "ε/record",
        ("acc", "right"),
        ("F1", "right"),
        ("AUC", "right"),
        ("silo mean", "right"),
        ("silo worst", "right"),
        ("r95 acc", "right"),
        ("r95 AUC", "right"),
        ("KB/silo", "right"),
    ]
    if fair:
        cols += [("TPR gap sex", "right"), ("TPR gap race", "right")]
    t = new_table(title, cols)
    for e in entries:
        g, sd = e["global"], e.get("global_sd", {})
        cells = [
            e["method"],
            e.get("generator") or "",
            _eps(e),
            f"{_f(g['accuracy'])} ± {_f(sd.get('accuracy'), '.1f')}",
            _f(g["f1"]),
            f"{_f(g['auc'])} ± {_f(sd.get('auc'), '.1f')}",
            _f(e["per_silo"]["mean_accuracy"], ".1f"),
            _f(e["per_silo"]["worst_accuracy"], ".1f"),
            _f(e.get("rounds_to_95"), ".1f"),
            _f(e.get("rounds_to_95_auc"), ".1f"),
            _f(e["bytes_per_silo"] / 1e3, ".0f"),
        ]
        if fair:
            fa = e.get("fairness") or {}
            cells += [_f(fa.get(a, {}).get("tpr_gap"), ".1f") for a in ("sex", "race")]
        t.add_row(*cells)
    return t


def check_lines(checks: list[dict[str, Any]], *, markdown: bool = False) -> list[str]:
    """The issue's verdicts (:func:`fedsynth.evaluation.drift.drift_checks`) as lines of text;
    ``markdown``: list items with the method in bold (bench/drift_report.py)."""
    pre, b = ("- ", "**") if markdown else ("", "")
    lines = []
    for c in checks:
        head = f"{pre}{c['split']} {c['beta']:g}:"
        for g in c.get("gain", []):
            rr = "".join(
                f"; rounds ratio ({k}) {g[f'rounds_ratio_{k}']:.2f}"
                for k in ("accuracy", "auc")
                if f"rounds_ratio_{k}" in g
            )
            lines.append(
                f"{head} {b}{g['method']}{b} vs fedavg: {c['headline']} {g['headline_gain']:+.2f}, worst "
                f"silo {g['worst_gain']:+.1f} → {'met' if g['met'] else 'missed'}{rr}"
            )
        if "equal_epsilon" in c:
            q = c["equal_epsilon"]
            lines.append(
                f"{head} at ε {q['epsilon']:.3g}: {q['generator_method']} {q['generator_value']:.2f} "
                f"(worst silo {q['generator_worst']:.1f}) vs dp-fedavg {q['dp_fedavg_value']:.2f} "
                f"(worst silo {q['dp_fedavg_worst']:.1f}) → {b}{q['winner']}{b} by {abs(q['margin']):.2f}"
            )
        if c.get("bias"):
            flagged = [x for x in c["bias"] if x["flag"]]
            for x in flagged:
                wid = ", ".join(f"{k} {v:+.1f}" for k, v in x.items() if k.endswith("_vs_fedavg"))
                lines.append(
                    f"{head} {x['method']} widens the TPR gap over FedAvg by more than 2 points: {wid}"
                )
            if not flagged:
                lines.append(f"{head} no method widens a TPR gap by more than 2 points over FedAvg")
    return lines


@bench_app.command("drift")
def bench_drift(
    dataset: Annotated[str, typer.Option(help="adult | marketing | titanic | mnist | ... ")] = "adult",
    split: Annotated[
        str, typer.Option(help="label-skew, quantity-skew (β from --betas) or missing-classes:K")
    ] = "label-skew",
    betas: Annotated[
        list[float] | None, typer.Option("--betas", help="Dirichlet β (repeatable); default 0.05 0.1 0.5 1.0")
    ] = None,
    silos: Annotated[int, typer.Option(min=2)] = 20,
    seeds: Annotated[int, typer.Option(min=1)] = 3,
    epsilon: Annotated[float, typer.Option(help="ε per record: the generators' and dp-fedavg's")] = 1.0,
    generator: Annotated[
        str, typer.Option(help="generator families, comma-separated (per-silo and federation-level)")
    ] = "vae,fed-pgm",
    methods: Annotated[str | None, typer.Option(help="comma-separated subset of the methods")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="federated rounds (fixed)")] = 30,
    max_train_rows: Annotated[
        int | None, typer.Option(help="a seeded subset of the training rows (images: CPU time)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="DriftConfig override KEY=JSON, e.g. alone_epochs=10")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="folder for the PNG figures")] = None,
) -> None:
    """Non-IID drift: FedAvg / FedProx / FedAvgM / DP-FedAvg against synthetic augmentation,
    a synthetic regulariser and personalisation, per β; mean ± sd over seeds."""
    import dataclasses

    from fedsynth.cli.common import quiet
    from fedsynth.data.images import IMAGE_BENCHMARKS
    from fedsynth.data.partition import parse_drift_split
    from fedsynth.evaluation.drift import (
        METHODS,
        PRESETS,
        DriftConfig,
        aggregate,
        drift_checks,
        load_task,
        run_drift_seed,
    )
    from fedsynth.privacy.target import check_epsilon_delta

    with user_errors():
        check_epsilon_delta(epsilon, None)
        if json_out:
            refuse_existing(json_out)
        kind, param = parse_drift_split(split)
        if param is not None and betas:
            raise ValueError(f"--split {split} already names its parameter; drop --betas")
        params = [param] if param is not None else list(betas or DEFAULT_BETAS)
        for b in params:
            if kind != "missing-classes" and not b > 0:
                raise ValueError(f"β must be > 0, got {b}")
        gens = tuple(g.strip() for g in generator.split(",") if g.strip())
        chosen = tuple(m.strip() for m in methods.split(",")) if methods else METHODS
        overrides: dict[str, Any] = dict(PRESETS.get(dataset, {}))
        fields = {f.name for f in dataclasses.fields(DriftConfig)}
        for kv in set_ or []:
            k, _, v = kv.partition("=")
            if k not in fields:
                raise ValueError(f"unknown setting {k!r}; DriftConfig has {', '.join(sorted(fields))}")
            try:
                overrides[k] = json.loads(v)
            except json.JSONDecodeError:
                raise ValueError(f"--set {kv!r}: the value must be JSON, e.g. {k}=10") from None
        named = {"silos": silos, "epsilon": epsilon, "generators": gens, "methods": chosen, "rounds": rounds}
        cfg = DriftConfig(**{**named, **overrides})  # --set wins over presets and options
        quiet()
        task = load_task(dataset, max_train_rows=max_train_rows)
        headline = "accuracy" if dataset in IMAGE_BENCHMARKS else "auc"
        t_all = time.perf_counter()
        results: list[dict[str, Any]] = []
        per_seed: list[dict[str, Any]] = []
        with progress() as prog:
            for b in params:
                runs = []
                for seed in range(seeds):
                    cb = StageProgress(prog, f"{kind} {b:g} seed {seed}")
                    runs.append(run_drift_seed(task, cfg, kind, b, seed, cb))
                    cb.close()
                results.extend(aggregate(runs, kind, b))
                per_seed.extend(
                    {
                        "beta": b,
                        "seed": s,
                        "silo_rows": r["silo_rows"],
                        "rows_topped_up": r["rows_topped_up"],
                        "pools": r["pools"],
                        "timing": r["timing"],
                        "entries": [{k: v for k, v in e.items() if k != "history"} for e in r["entries"]],
                    }
                    for s, r in enumerate(runs)
                )
        checks = drift_checks(results, headline)
        for b in params:
            entries = [e for e in results if e["beta"] == b]
            print_table(
                _results_table(entries, f"{dataset}: {kind} {b:g}, {silos} silos, {seeds} seeds, test split")
            )
        for line in check_lines(checks):
            out.print(line, highlight=False)
        out.print("\n".join(f"  {m}: {d}" for m, d in METHOD_LEGEND.items() if m in chosen), highlight=False)
        res = {
            "dataset": dataset,
            "split": kind,
            "silos": silos,
            "seeds": seeds,
            "epsilon": epsilon,
            "generators": list(gens),
            "headline": headline,
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "gen_configs"},
            "results": results,
            "checks": checks,
            "per_seed": per_seed,
            "timing": {"total_s": time.perf_counter() - t_all},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch_threads": int(os.environ.get("FEDSYNTH_THREADS", "1")),
            },
        }
        if json_out:
            write_json(json_out, res)
            out.print(f"wrote {json_out}")
        if plot:
            from fedsynth.evaluation.drift_plots import drift_plots

            for p in drift_plots(res, plot, json_out.stem if json_out else f"drift_{dataset}"):
                out.print(f"wrote {p}")
