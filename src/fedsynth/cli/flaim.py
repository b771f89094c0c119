"""``fedsynth flaim run`` and ``fedsynth bench flaim``: thin wrappers around :mod:`fedsynth.flaim.runner`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.table import Table

from fedsynth.cli.app import bench_app, flaim_app
from fedsynth.cli.common import console, user_errors, write_atomic, write_json
from fedsynth.cli.tables import new_table, out, print_table

METHOD_HELP = (
    "aim | aim-adaptive | distaim | naive | aug-oracle | aug-private | flaim-sa | flaim-ta | flaim-da (ours)"
)
POOL_HELP = "flaim-da: cells of the public candidate pool each client uploads once (≈ 8 bytes each)"


def _load(dataset: str | None, data: Path | None, domain: Path | None, target: str | None, seed: int) -> Any:
    from fedsynth.flaim.data import load_flaim_data

    if (dataset is None) == (data is None):
        raise ValueError("give exactly one of --dataset NAME or --data FILE")
    return load_flaim_data(dataset, data, domain_json=domain, target=target, seed=seed)


def _check_common(epsilon: float, method: str) -> None:
    from fedsynth.flaim.runner import ALL_METHODS

    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    from fedsynth.privacy.target import check_epsilon_delta

    check_epsilon_delta(epsilon, None)


SECURE_HELP = "secagg (in-process SecAgg+) | he (BFV homomorphic encryption, two servers) | plain"


@flaim_app.command("run")
def run_cmd(
    method: str = typer.Option(..., "--method", help=METHOD_HELP),
    epsilon: float = typer.Option(..., "--epsilon", help="total (ε, δ)-DP budget ε"),
    dataset: str | None = typer.Option(None, "--dataset", help="adult | marketing | census"),
    data: Path | None = typer.Option(None, "--data", help="a CSV file (raw, or integer codes with --domain)"),
    domain: Path | None = typer.Option(None, "--domain", help="Private-PGM domain JSON for a pre-binned CSV"),
    target: str | None = typer.Option(None, "--target", help="target column for --data (default: last)"),
    delta: float = typer.Option(1e-5, "--delta"),
    clients: int = typer.Option(100, "--clients", help="K"),
    participation: float = typer.Option(0.1, "--participation", help="p, per round"),
    rounds: int = typer.Option(10, "--rounds", help="T"),
    split: str = typer.Option("cluster", "--split", help="iid | label-skew:BETA | cluster"),
    seed: int = typer.Option(0, "--seed"),
    rows: int | None = typer.Option(None, "--rows", help="synthetic rows (default: training size)"),
    top: int = typer.Option(1, "--top", help="flaim-sa: marginals measured per round"),
    pool_cells: int = typer.Option(6500, "--pool-cells", help=POOL_HELP),
    secure: str = typer.Option("secagg", "--secure-sum", help=SECURE_HELP),
    out_path: Path = typer.Option(..., "--out", help="synthetic CSV to write"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Run one AIM / FLAIM method and write the synthetic table (written atomically at the end)."""
    with user_errors():
        _check_common(epsilon, method)
        secure_sum = _secure_sum(secure)
        if out_path.exists() and not overwrite:
            raise FileExistsError(f"{out_path} exists; pass --overwrite or choose another path")
        if rows is not None and rows < 1:
            raise ValueError("--rows must be >= 1")
        from fedsynth.flaim.runner import run

        d = _load(dataset, data, domain, target, seed)
        r = run(
            d,
            method,
            epsilon=epsilon,
            delta=delta,
            clients=clients,
            participation=participation,
            rounds=rounds,
            split=split,
            seed=seed,
            rows=rows,
            top=top,
            pool_cells=pool_cells,
            secure_sum=secure_sum,
        )
        df = d.domain.decode(r.synthetic)
        write_atomic(out_path, df.to_csv(index=False))
        m = r.metrics
        out.print(
            f"{method} on {d.name}: ε={epsilon} (ρ used {r.rho_used:.5f} of {r.rho:.5f}), "
            f"L1={m['l1']:.3f} NLL={m['nll']:.2f} AUC={m['auc']:.3f}, {r.seconds:.1f}s, "
            f"peak RSS {m['peak_rss_mb']:.0f} MB"
        )
        if method not in ("aim", "aim-adaptive"):
            out.print(
                f"per participating client: sent {r.client_bytes_sent / 1e3:.2f} KB, "
                f"received {r.client_bytes_received / 1e3:.2f} KB ({r.participants} clients took part)"
            )
        out.print(f"wrote {len(df)} rows to {out_path}")


def _secure_sum(kind: str) -> Any:
    from fedsynth.secagg.secure_sum import plain_sum

    if kind == "plain":
        return plain_sum
    if kind == "secagg":
        from fedsynth.secagg.secure_sum import SecAggPlusSum

        return SecAggPlusSum()
    if kind == "he":
        from fedsynth.secagg.he_sum import HESum

        return HESum()
    raise ValueError(f"--secure-sum must be secagg, he or plain, got {kind!r}")


def _fmt(vals: list[float], digits: int = 3) -> str:
    v = np.asarray(vals, dtype=float)
    if len(v) == 0 or np.all(np.isnan(v)):
        return "–"
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v):.{digits}f}"


@bench_app.command("flaim")
def bench_cmd(
    dataset: str = typer.Option("adult", "--dataset"),
    methods: list[str] = typer.Option(
        ["aim", "distaim", "naive", "aug-oracle", "aug-private", "flaim-sa", "flaim-da"],
        "--methods",
        help=METHOD_HELP,
    ),
    epsilons: list[float] = typer.Option([1.0, 3.0], "--epsilons"),
    seeds: int = typer.Option(3, "--seeds", help="number of seeds (first-seed .. first-seed+S-1)"),
    first_seed: int = typer.Option(0, "--first-seed"),
    clients: int = typer.Option(100, "--clients"),
    participation: float = typer.Option(0.1, "--participation"),
    rounds: int = typer.Option(10, "--rounds"),
    split: str = typer.Option("cluster", "--split"),
    delta: float = typer.Option(1e-5, "--delta"),
    top: int = typer.Option(1, "--top"),
    pool_cells: int = typer.Option(6500, "--pool-cells", help=POOL_HELP),
    secure: str = typer.Option("secagg", "--secure-sum", help=SECURE_HELP),
    data_seed: int | None = typer.Option(
        None, "--data-seed", help="fix the train/test split and client partition (default: each run's seed)"
    ),
    json_path: Path | None = typer.Option(None, "--json", help="write results JSON here"),
    plot: Path | None = typer.Option(None, "--plot", help="folder for PNGs (utility vs ε, vs rounds)"),
    rounds_sweep: list[int] = typer.Option(
        [], "--rounds-sweep", help="extra T values for the vs-rounds plot"
    ),
) -> None:
    """Benchmark AIM and the FLAIM variants; one row per (method, ε), mean ± sd over seeds."""
    with user_errors():
        for mth in methods:
            for e in epsilons:
                _check_common(e, mth)
        if seeds < 1:
            raise ValueError("--seeds must be >= 1")
        from fedsynth.flaim.data import load_flaim_data
        from fedsynth.flaim.runner import run

        results: list[dict[str, Any]] = []
        sweep = [(rounds, e) for e in epsilons] + [(t, epsilons[0]) for t in rounds_sweep if t != rounds]
        for seed in range(first_seed, first_seed + seeds):
            d = load_flaim_data(dataset, seed=seed if data_seed is None else data_seed)
            for mth in methods:
                for T, e in sweep:
                    t0 = time.perf_counter()
                    r = run(
                        d,
                        mth,
                        epsilon=e,
                        delta=delta,
                        clients=clients,
                        participation=participation,
                        rounds=T,
                        split=split,
                        seed=seed,
                        top=top,
                        pool_cells=pool_cells,
                        split_seed=data_seed,
                        secure_sum=_secure_sum(secure),
                    )
                    row = {
                        "method": mth,
                        "epsilon": e,
                        "rounds": T,
                        "seed": seed,
                        **r.metrics,
                        "client_bytes_sent": r.client_bytes_sent,
                        "client_bytes_received": r.client_bytes_received,
                        "seconds": r.seconds,
                        "wall_seconds": time.perf_counter() - t0,
                        "rho_used": r.rho_used,
                        "rho": r.rho,
                    }
                    results.append(row)
                    if json_path is not None:  # keep partial results if a long benchmark is stopped
                        write_json(
                            json_path,
                            _doc(
                                dataset,
                                split,
                                clients,
                                participation,
                                rounds,
                                delta,
                                secure,
                                data_seed,
                                results,
                            ),
                        )
                    console.print(
                        f"[dim]{mth} ε={e} T={T} seed={seed}: L1={row['l1']:.3f} "
                        f"AUC={row['auc']:.3f} {row['seconds']:.1f}s[/]"
                    )
        _print_table(results, rounds)
        doc = _doc(dataset, split, clients, participation, rounds, delta, secure, data_seed, results)
        if json_path is not None:
            write_json(json_path, doc)
        if plot is not None:
            _plots(results, plot, rounds, dataset)


def _doc(
    dataset: str,
    split: str,
    clients: int,
    participation: float,
    rounds: int,
    delta: float,
    secure: str,
    data_seed: int | None,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "split": split,
        "clients": clients,
        "participation": participation,
        "rounds": rounds,
        "delta": delta,
        "secure_sum": secure,
        "data_seed": data_seed,
        "results": results,
    }


def _tables(results: list[dict[str, Any]], rounds: int) -> list[Table]:
    """Utility and cost, one row per (method, ε) each: nine "mean ± sd" columns in one table would
    not fit 80 columns."""
    keys = sorted(
        {(r["method"], r["epsilon"]) for r in results if r["rounds"] == rounds}, key=lambda k: (k[1], k[0])
    )
    seeds = len({r["seed"] for r in results})
    over = f"mean ± sd over {seeds} seed{'s' if seeds != 1 else ''}"
    util = new_table(
        f"FLAIM benchmark: utility ({over}, T = {rounds})",
        ["method", ("ε", "right"), ("L1", "right"), ("NLL", "right"), ("AUC", "right")],
        caption="L1, NLL: lower is better; AUC: GBDT trained on synthetic rows",
    )
    cost = new_table(
        f"FLAIM benchmark: cost per participating client ({over})",
        ["method", ("ε", "right"), ("KB sent", "right"), ("KB recv", "right"), ("seconds", "right"),
         ("peak RSS MB", "right")],
    )  # fmt: skip
    for mth, e in keys:
        rs = [r for r in results if r["method"] == mth and r["epsilon"] == e and r["rounds"] == rounds]

        def col(k: str, rs: list[dict[str, Any]] = rs) -> list[float]:
            return [r[k] for r in rs]

        util.add_row(mth, f"{e:g}", _fmt(col("l1")), _fmt(col("nll"), 2), _fmt(col("auc")))
        cost.add_row(
            mth,
            f"{e:g}",
            _fmt([x / 1e3 for x in col("client_bytes_sent")], 2),
            _fmt([x / 1e3 for x in col("client_bytes_received")], 2),
            _fmt(col("seconds"), 1),
            f"{max(col('peak_rss_mb')):.0f}",
        )
    return [util, cost]


def _print_table(results: list[dict[str, Any]], rounds: int) -> None:
    for t in _tables(results, rounds):
        print_table(t)


def _plots(results: list[dict[str, Any]], folder: Path, rounds: int, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    methods = sorted({r["method"] for r in results})
    for xkey, fname in (("epsilon", "utility_vs_epsilon.png"), ("rounds", "utility_vs_rounds.png")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for mth in methods:
            rs = [r for r in results if r["method"] == mth and (xkey == "rounds" or r["rounds"] == rounds)]
            xs = sorted({r[xkey] for r in rs})
            if len(xs) < 1:
                continue
            for ax, metric in zip(axes, ("l1", "auc"), strict=True):
                ys = [np.nanmean([r[metric] for r in rs if r[xkey] == x]) for x in xs]
                ax.plot(xs, ys, marker="o", label=mth)
                ax.set_xlabel("ε" if xkey == "epsilon" else "rounds T")
                ax.set_ylabel("workload L1" if metric == "l1" else "GBDT AUC")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{dataset}: utility vs {'ε' if xkey == 'epsilon' else 'rounds'}")
        fig.tight_layout()
        tmp = folder / f".{fname}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(folder / fname)
