"""SGDE commands: demo, train-generators, sample, bench sgde, data verify/fetch."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedsynth.cli.app import app, bench_app, data_app
from fedsynth.cli.common import (
    StageProgress,
    console,
    progress,
    quiet,
    refuse_existing,
    user_errors,
    warn,
    write_atomic,
    write_json,
)
from fedsynth.cli.tables import Col, new_table, out, print_table
from fedsynth.evaluation.plots import METRIC_LABELS, ordered_scenarios, scenario_label, sgde_bars
from fedsynth.generators import DEFAULT_FAMILY
from fedsynth.privacy.target import check_epsilon_delta

#: the image benchmarks' default family (the paper's generator); `--generator` overrides it
DEFAULT_IMAGE_GENERATOR = "conv-vae"

# The paper's Table I (evaluated on local data), for side-by-side printing. Its Synthetic column
# trains on class-balanced pool samples: our ``synthetic_balanced`` scenario.
PAPER_TABLE_I: dict[str, dict[str, dict[str, float]]] = {
    "titanic": {
        "local": {"accuracy": 75.67, "f1": 19.43, "auc": 75.70},
        "federated": {"accuracy": 76.67, "f1": 69.89, "auc": 69.38},
        "synthetic_balanced": {"accuracy": 80.87, "f1": 63.37, "auc": 78.35},
    },
    "breast_cancer": {
        "local": {"accuracy": 89.67, "f1": 93.37, "auc": 99.17},
        "federated": {"accuracy": 89.50, "f1": 84.16, "auc": 98.75},
        "synthetic_balanced": {"accuracy": 97.09, "f1": 97.81, "auc": 99.27},
    },
    "mushroom": {
        "local": {"accuracy": 92.93, "f1": 92.43, "auc": 96.23},
        "federated": {"accuracy": 91.51, "f1": 91.32, "auc": 95.84},
        "synthetic_balanced": {"accuracy": 93.49, "f1": 93.14, "auc": 96.61},
    },
    "adult": {
        "local": {"accuracy": 80.64, "f1": 49.69, "auc": 83.30},
        "federated": {"accuracy": 76.01, "f1": 47.95, "auc": 79.81},
        "synthetic_balanced": {"accuracy": 79.65, "f1": 61.64, "auc": 83.73},
    },
    "wine_quality": {
        "local": {"accuracy": 93.46, "f1": 82.98, "auc": 99.44},
        "federated": {"accuracy": 90.44, "f1": 85.81, "auc": 99.10},
        "synthetic_balanced": {"accuracy": 98.54, "f1": 97.10, "auc": 99.49},
    },
}


DEFAULT_GENERATOR = DEFAULT_FAMILY
GENERATOR_HELP = "generator family: vae, gan, pgm, diffusion (or a kind such as dp-vae/1)"


def claims_table(title: str, reports: list[Any]) -> Table:
    """One row per fitted generator: rows, the accountant's (ε, δ) and the parameters behind it.

    Each mechanism parameter is its own column (only those some generator has), so no cell
    holds a long "σ=… q=… steps=…" string that would not fit 80 columns.
    """
    params: list[dict[str, str]] = []
    for r in reports:
        c = r.claim
        if c.mechanism == "dp-sgd":
            params.append(
                {"σ": f"{c.noise_multiplier:.3f}", "q": f"{c.sample_rate:.4f}", "steps": str(c.steps)}
            )
        elif c.mechanism == "zcdp":
            params.append({"ρ": f"{c.rho:.4g}", "σ": f"{c.sigma:.3g}", "T": str(c.selections)})
        else:
            params.append({})
    keys = [k for k in ("ρ", "σ", "q", "steps", "T") if any(k in p for p in params)]
    cols: list[Col] = ["class", ("rows", "right"), ("ε", "right"), ("δ", "right"), "mechanism"]
    cols += [(k, "right") for k in keys]
    t = new_table(
        title,
        [*cols, ("seconds", "right")],
        caption="ε, δ: each generator's privacy accountant",
    )
    for r, p in zip(reports, params, strict=True):
        c = r.claim
        t.add_row(
            str(r.class_label or "(all)"),
            str(r.n_rows),
            f"{c.epsilon:.4f}",
            f"{c.delta:.2g}",
            c.mechanism,
            *(p.get(k, "") for k in keys),
            f"{r.seconds:.1f}",
        )
    return t


#: One line per scenario under the results table (the plain names are shared with the PNG).
SCENARIO_LEGEND: dict[str, str] = {
    "local": "the silo's own rows only",
    "federated": "logistic regression, FedAvg over all silos' rows",
    "synthetic": "pool samples only, shifted to the silo's class prior",
    "synthetic_balanced": "as Synthetic, no prior shift: the paper's protocol",
    "local_plus_synthetic": "own rows + the synthetic model's log-odds (stacking)",
    "local_plus_synthetic_rows": "own rows + synthetic rows in the silo's class mix",
    "pooled_real": "all silos' real rows pooled (non-private ceiling)",
}
#: the image experiment's scenarios (a CNN per scenario; fedsynth.evaluation.image_experiment)
IMAGE_LEGEND: dict[str, str] = {
    "local": "a small CNN on the silo's own images",
    "federated": "the CNN, FedAvg over all silos' images (Flower)",
    "synthetic": "the CNN on class-balanced pool samples only",
    "local_plus_synthetic": "own images + synthetic (recipe chosen on own data)",
    "pooled_real": "all silos' real images pooled (non-private ceiling)",
}
PAPER_ROW = "  paper (Table I)"


def _results_table(title: str, res: dict[str, Any], evaluation: str, paper: dict[str, Any] | None) -> Table:
    """Scenario rows × Accuracy / F1 / AUC (mean ± sd over seeds). The paper's numbers, when shown,
    are a dim row under the scenario they belong to: a fourth column would not fit 80 columns."""
    t = new_table(title, ["scenario", *((METRIC_LABELS[m], "right") for m in METRIC_LABELS)])
    for sc in ordered_scenarios(list(res["scenarios"])):
        v = res["scenarios"][sc]
        row = [scenario_label(sc)]
        for m in METRIC_LABELS:
            sd = res["scenarios_sd"][sc][evaluation][m]
            row.append(f"{v[evaluation][m]:.2f}" + (f" ± {sd:.2f}" if res["seeds"] > 1 else ""))
        t.add_row(*row)
        p = paper.get(sc) if paper and evaluation == "local_eval" else None
        if p:
            t.add_row(PAPER_ROW, *(f"{p[m]:.2f}" for m in METRIC_LABELS), style="dim")
    return t


def _legend(scenarios: list[str], paper: bool, images: bool = False) -> list[str]:
    """What each scenario is, one line each; the descriptions are short enough for 80 columns."""
    legend = IMAGE_LEGEND if images else SCENARIO_LEGEND
    rows = [(scenario_label(sc), legend[sc]) for sc in ordered_scenarios(scenarios) if sc in legend]
    if paper:
        rows.append((PAPER_ROW.strip(), "the SGDE paper's Table I, for comparison"))
    w = max((len(name) for name, _ in rows), default=0)
    return [f"{name:<{w}}  {desc}" for name, desc in rows]


def _run_sgde(
    dataset: str,
    silos: int,
    seeds: int,
    epsilon: float,
    rows: int,
    eval_silos: int | None,
    seed0: int = 0,
    overrides: dict[str, Any] | None = None,
    hub: bool = False,
    split: str = "equal",
    generator: str = "vae",
) -> dict[str, Any]:
    import resource

    from fedsynth.data.datasets import load_dataset
    from fedsynth.evaluation.sgde_experiment import SGDEConfig, aggregate, run_seed
    from fedsynth.generators.base import get_family

    quiet()
    family = get_family(generator)
    runs = []
    t_all = time.perf_counter()
    with progress() as prog:
        for k in range(seeds):
            seed = seed0 + k
            bench = load_dataset(dataset, seed=seed)
            gen_cfg = family_config(family, bench.name, overrides)
            cfg = SGDEConfig(
                silos=silos,
                fraction=1.0 / silos,
                epsilon=epsilon,
                synthetic_rows=rows,
                eval_silos=eval_silos,
                generator=family.kind,
                gen_config=gen_cfg,
                split=split,
            )
            cb = StageProgress(prog, f"seed {seed}")

            if hub:
                runs.append(_run_via_hub(bench, cfg, seed, cb))
            else:
                runs.append(run_seed(bench, cfg, seed, progress=cb))
    agg, agg_sd = aggregate(runs)
    return {
        "dataset": dataset,
        "generator": family.kind,
        "silos": silos,
        "epsilon_target": epsilon,
        "epsilon_spent_max": max(r["epsilon_spent_max"] for r in runs),
        "delta": max(r["delta_max"] for r in runs),
        "seeds": seeds,
        "synthetic_rows": rows,
        "scenarios": agg,
        "scenarios_sd": agg_sd,
        "per_seed": runs,
        "timing": {
            "total_s": time.perf_counter() - t_all,
            "per_seed_s": (time.perf_counter() - t_all) / seeds,
            "generators_per_silo_s": sum(r["timing"]["generators_per_silo_s"] for r in runs) / seeds,
        },
        "artifact_bytes_per_silo": sum(r["artifact_bytes_per_silo"] for r in runs) / seeds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": int(os.environ.get("FEDSYNTH_THREADS", "1")),
        },
    }


def family_config(family: Any, dataset: str | None, overrides: dict[str, Any] | None) -> Any:
    """The family's preset for ``dataset`` with ``--set KEY=JSON`` overrides applied."""
    import dataclasses

    cfg = family.default_config(dataset)
    if not overrides:
        return cfg
    known = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown {family.name} setting(s) {bad}; known: {sorted(known)}")
    return dataclasses.replace(cfg, **overrides)


def _run_via_hub(bench: Any, cfg: Any, seed: int, cb: Any) -> dict[str, Any]:
    """The same experiment with every generator pushed to and pulled from a real hub process."""
    from fedsynth.evaluation.exchange import hub_exchange
    from fedsynth.evaluation.sgde_experiment import run_seed
    from fedsynth.generators.base import get_family

    family = get_family(cfg.generator)
    families = {family.kind: family.spec_for(bench.schema, cfg.gen_config).to_dict()}
    # δ cap: the SGDE rule δ ≤ 1/(10·|D_c|) holds for every class big enough to train (≥ min_rows)
    min_rows = int(getattr(cfg.gen_config, "min_rows", 10))
    with hub_exchange(
        bench.schema, families, cfg.silos, max_epsilon=1.5 * cfg.epsilon, max_delta=1.0 / (10 * min_rows)
    ) as ex:
        console.print(f"hub running at {ex.url} (SQLite); {cfg.silos} silos registered")
        res = run_seed(bench, cfg, seed, progress=cb, exchange=ex)
    res["communication"] = {
        # a federation round pushes nothing per silo: its messages are in res["round"]
        "hub_bytes_pushed_per_silo": sum(ex.bytes_pushed) / max(len(ex.bytes_pushed), 1),
        "hub_bytes_pulled_per_silo": sum(ex.bytes_pulled) / max(len(ex.bytes_pulled), 1),
    }
    return res


def _print_result(res: dict[str, Any]) -> None:
    from fedsynth.cli.image_bench import PAPER_IMAGES

    base = res["dataset"].split("_sklearn")[0]
    paper = PAPER_TABLE_I.get(base) or PAPER_IMAGES.get(base)
    for ev, name in (
        ("local_eval", "evaluated on local data (Table I)"),
        ("test_eval", "evaluated on the test split (Table III)"),
    ):
        print_table(_results_table(f"{res['dataset']} — {res['silos']} silos, {name}", res, ev, paper))
    for line in _legend(list(res["scenarios"]), paper is not None, images=base in PAPER_IMAGES):
        out.print(line, highlight=False)
    comm = res["per_seed"][0].get("communication")
    rnd = res["per_seed"][0].get("round")
    if rnd:  # a federation-level family: one round of secure sums instead of per-silo pushes
        out.print(
            f"federation round: {len(rnd['contributors'])} of {rnd['silos']} silos contributed; "
            f"{rnd['bytes_sent_per_silo'] / 1e3:.1f} KB sent, {rnd['bytes_received_per_silo'] / 1e3:.1f} KB "
            f"received per silo; {rnd['seconds']:.1f} s"
        )
    if comm and not rnd:
        out.print(
            f"exchange via hub: {comm['hub_bytes_pushed_per_silo'] / 1e3:.1f} KB pushed and "
            f"{comm['hub_bytes_pulled_per_silo'] / 1e3:.1f} KB pulled per silo"
        )
    # two short lines rather than one that wraps somewhere inside "max ε spent = …"
    family = res.get("generator", "dp-vae/1")
    out.print(f"generator family {family}; privacy: every generator (ε, δ) from its accountant")
    out.print(
        f"max ε spent = {res['epsilon_spent_max']:.4f}, max δ = {res['delta']:.2g}; "
        f"wall time {res['timing']['total_s']:.1f} s"
    )


@app.command()
def demo(
    dataset: Annotated[
        str, typer.Option(help="breast_cancer_sklearn (offline default) or a benchmark name")
    ] = "breast_cancer_sklearn",
    silos: Annotated[int, typer.Option(min=2)] = 20,
    epsilon: Annotated[float, typer.Option()] = 1.0,
    rows: Annotated[int, typer.Option(help="synthetic rows per silo")] = 5000,
    seed: int = 0,
    hub: Annotated[bool, typer.Option("--hub/--no-hub", help="exchange through a real hub process")] = True,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    generator: Annotated[str, typer.Option(help=GENERATOR_HELP)] = DEFAULT_GENERATOR,
) -> None:
    """Run a whole SGDE federation on this machine and print Local / Federated / Synthetic.

    Every silo trains its DP generators, pushes them to a hub process on 127.0.0.1 (SQLite) and
    pulls the pool back over HTTP.
    """
    with user_errors():
        check_epsilon_delta(epsilon, None)
        if json_out:
            refuse_existing(json_out)
        res = _run_sgde(dataset, silos, 1, epsilon, rows, None, seed0=seed, hub=hub, generator=generator)
        _print_result(res)
        if json_out:
            write_json(json_out, res)


@bench_app.command("sgde")
def bench_sgde(
    dataset: Annotated[str, typer.Option()] = "adult",
    silos: Annotated[int, typer.Option(min=2)] = 20,
    seeds: Annotated[int, typer.Option(min=1)] = 3,
    epsilon: Annotated[float | None, typer.Option(help="ε per record (default 1; images 1.5)")] = None,
    rows: Annotated[int, typer.Option(help="synthetic rows per silo")] = 5000,
    eval_silos: Annotated[int | None, typer.Option(help="score only the first k silos")] = None,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    split: Annotated[str, typer.Option(help="equal (paper) or label-skew:BETA (Dirichlet)")] = "equal",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="family config override KEY=JSON, e.g. epochs=20")
    ] = None,
    generator: Annotated[str, typer.Option(help=GENERATOR_HELP)] = DEFAULT_GENERATOR,
    hub: Annotated[bool, typer.Option("--hub/--no-hub", help="exchange through a real hub process")] = False,
    device: Annotated[str, typer.Option(help="images: auto (CUDA when present), cpu or cuda")] = "auto",
    per_class: Annotated[int, typer.Option(min=10, help="images: synthetic images per class")] = 1000,
) -> None:
    """The SGDE paper's experiment (Table I and III layout), mean ± sd over seeds.

    Image datasets (mnist, fashion_mnist) run the image experiment: a small CNN per scenario,
    FedAvg of the CNN through Flower, and a PNG grid of samples per class next to the JSON."""
    from fedsynth.data.images import IMAGE_BENCHMARKS

    with user_errors():
        if epsilon is None:
            epsilon = 1.5 if dataset in IMAGE_BENCHMARKS else 1.0
        check_epsilon_delta(epsilon, None)
        overrides = {}
        for kv in set_ or []:
            k, _, v = kv.partition("=")
            overrides[k] = json.loads(v)
            if isinstance(overrides[k], list):
                overrides[k] = tuple(overrides[k])
        if dataset in IMAGE_BENCHMARKS:
            if hub or split != "equal":
                raise ValueError("image benchmarks run in-process with the paper's equal split")
            if device not in ("auto", "cpu", "cuda"):
                raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
            from fedsynth.cli.image_bench import run_image_bench

            quiet()
            gen = DEFAULT_IMAGE_GENERATOR if generator == DEFAULT_GENERATOR else generator
            # several families (comma-separated) share one run's baselines (Local, FedAvg, pooled)
            families = [g.strip() for g in gen.split(",") if g.strip()]
            results = run_image_bench(
                dataset,
                silos=silos,
                seeds=seeds,
                epsilon=epsilon,
                eval_silos=5 if eval_silos is None else eval_silos,
                generators=families,
                gen_overrides=overrides,
                device=device,
                per_class=per_class,
                grid_dir=json_out.parent if json_out else None,
            )
            for res in results:
                res["split"] = split
                _print_result(res)
                for g in res["sample_grids"]:
                    out.print(f"wrote sample grid {g}")
                if json_out:
                    path = json_out
                    if len(results) > 1:
                        path = json_out.with_name(f"{json_out.stem}_{res['generator_name']}{json_out.suffix}")
                    write_json(path, res)
                    png = sgde_bars(
                        res,
                        path.with_suffix(".png"),
                        f"{dataset}: {silos} silos, ε = {epsilon:g}, {res['generator']}",
                    )
                    out.print(f"wrote {path} and {png}")
            return
        res = _run_sgde(
            dataset,
            silos,
            seeds,
            epsilon,
            rows,
            eval_silos,
            overrides=overrides,
            split=split,
            generator=generator,
            hub=hub,
        )
        res["split"] = split
        _print_result(res)
        if json_out:
            write_json(json_out, res)
            png = sgde_bars(
                res,
                json_out.with_suffix(".png"),
                f"{dataset}: {silos} silos, ε = {epsilon:g}, {res['generator']}, split {split}",
            )
            out.print(f"wrote {json_out} and {png}")


@app.command("train-generators")
def train_generators(
    data: Annotated[Path, typer.Option(help="CSV or Parquet table")],
    target: Annotated[str, typer.Option(help="class column")],
    out_dir: Annotated[Path, typer.Option("--out", help="new folder for the generator set")],
    epsilon: Annotated[float, typer.Option(help="target ε per class generator")] = 1.0,
    delta: Annotated[float | None, typer.Option(help="δ (default 1/(10·|D_c|) per class)")] = None,
    schema_file: Annotated[
        Path | None, typer.Option("--schema", help="declared (public) schema JSON/YAML")
    ] = None,
    dp_schema_epsilon: Annotated[
        float | None,
        typer.Option("--dp-schema", help="estimate the schema under DP with this ε (added to the total)"),
    ] = None,
    categorical: Annotated[
        list[str] | None,
        typer.Option(
            "--categorical",
            help="a numeric column that is categorical (repeat; without --schema). With --dp-schema "
            "every other numeric column is continuous, integer iff its dtype is",
        ),
    ] = None,
    seed: int = 0,
    generator: Annotated[str, typer.Option(help=GENERATOR_HELP)] = DEFAULT_GENERATOR,
) -> None:
    """Train DP generators (default: the default family) on a private table; write only what the
    generators learned (safetensors tensors + JSON cards)."""
    from fedsynth.data.datasets import load_table
    from fedsynth.data.dp_schema import coerce_to_schema, dp_schema
    from fedsynth.data.schema import infer_schema, load_schema
    from fedsynth.generators.base import get_family
    from fedsynth.privacy.target import PrivacyTarget

    quiet(load_torch=False)
    with user_errors():
        check_epsilon_delta(epsilon, delta)
        family = get_family(generator)
        if out_dir.exists() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} exists and is not empty; refusing to overwrite it")
        df = load_table(data)
        if target not in df.columns:
            raise ValueError(f"target column {target!r} not in {data}; columns: {list(df.columns)}")
        if schema_file:
            schema = load_schema(schema_file)
        elif dp_schema_epsilon:
            classes = sorted(df[target].dropna().astype(str).unique().tolist())
            warn("the class labels are taken as public (they define the task)")
            schema = dp_schema(
                df.dropna(),
                target,
                classes,
                epsilon=dp_schema_epsilon,
                delta=1e-6,
                categorical=tuple(categorical or ()),
                seed=seed,
            )
            before = len(df)
            df = coerce_to_schema(df.dropna(), schema)
            out.print(f"DP schema (ε={dp_schema_epsilon}) kept {len(df)}/{before} rows")
        else:
            schema = infer_schema(df, target, categorical=list(categorical or ()))
            warn(
                "no --schema given: column bounds and category lists were INFERRED FROM THE PRIVATE DATA "
                "and will ship with the generators (a privacy leak unless they are public knowledge). "
                "Pass --schema FILE with public bounds, or --dp-schema EPS to estimate them under DP."
            )
        with progress() as prog:
            task = prog.add_task(f"training {family.kind} generators", total=None)
            gs = family.fit(
                df,
                schema,
                PrivacyTarget(epsilon, delta),
                family.default_config(None),
                seed=seed,
                on_fit=lambda r: prog.advance(task),
            )
        for msg in gs.skipped:
            warn(msg)
        gs.with_schema_cost()  # a DP schema's (ε, δ) goes on every card (this silo spent it)
        gs.save(str(out_dir))
        print_table(claims_table(f"{family.kind} generators written to {out_dir}", gs.reports))
        out.print(  # from the cards: what ships is what is reported
            f"silo ε (max over classes{', + DP schema' if gs.schema_cost[0] else ''}): "
            f"{gs.total_epsilon:.4f}, δ: {gs.total_delta:.2g}"
        )


@app.command()
def sample(
    generators: Annotated[list[Path], typer.Option(help="generator-set folder(s); repeat the option")],
    rows: Annotated[int, typer.Option(min=1)],
    out_file: Annotated[Path, typer.Option("--out", help="new CSV file")],
    seed: int = 0,
) -> None:
    """Sample a class-balanced synthetic table from one or more generator sets (families may mix)."""
    from fedsynth.generators.io import read_generator_set
    from fedsynth.generators.pool import GeneratorPool

    quiet(load_torch=False)
    with user_errors():
        refuse_existing(out_file)
        schema, loaded = read_generator_set(generators[0])
        for g in generators[1:]:
            _, more = read_generator_set(g, schema=schema)
            loaded += more
        df = GeneratorPool(schema, loaded).sample(rows, seed=seed)
        write_atomic(out_file, df.to_csv(index=False))
        out.print(f"wrote {len(df)} rows from {len(loaded)} generators to {out_file}")


@data_app.command("verify")
def data_verify() -> None:
    """Check every benchmark file in $FEDSYNTH_DATA against its pinned sha256."""
    from fedsynth.data.files import CHECKSUMS, data_dir, sha256_file

    with user_errors():
        root = data_dir()
        bad = 0
        for rel, digest in CHECKSUMS.items():
            p = root / rel
            status = "missing" if not p.exists() else ("ok" if sha256_file(p) == digest else "MISMATCH")
            bad += status != "ok"
            out.print(f"{status:8s} {rel}")
        if bad:
            raise typer.Exit(code=1)


@data_app.command("fetch")
def data_fetch(
    mirror: Annotated[str, typer.Option(envvar="FEDSYNTH_DATA_MIRROR", help="base URL with the same layout")],
    dest: Annotated[Path | None, typer.Option(help="data directory (default $FEDSYNTH_DATA)")] = None,
) -> None:
    """Download missing benchmark files from a mirror, verifying each sha256."""
    from fedsynth.data.files import CHECKSUMS, fetch

    with user_errors():
        root = dest or Path(os.environ.get("FEDSYNTH_DATA", "datasets"))
        for rel in CHECKSUMS:
            if not (root / rel).exists():
                fetch(rel, mirror, root)
                out.print(f"fetched {rel}")
