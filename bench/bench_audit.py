"""Benchmark: empirical privacy of SGDE generators and pull-time poisoning detection on Adult.

Part A — privacy (20 equal silos of the official Adult training split, ε = 1):
  for each audited silo, train its DP generator set, then audit it against an equal-size holdout
  drawn from the other silos (``fedsynth.audit.run_audit``: DCR share, copies, DOMIAS k-NN/KDE,
  shadow-model attack on outliers, one-run canary audit). Control: the same pipeline WITHOUT DP on
  a small silo (1 % of the data, many steps) so it memorises.
Part B — timing of ``fedsynth audit --dataset adult --silo 0`` end to end (train + full audit).
Part C — poisoning: 10 silos push generators, 2 of them malicious (chosen at random per seed);
  a further silo screens the pool with its own data (``screen_pool``). Per attack: detection TPR /
  FPR over all seeds, downstream accuracy of the Synthetic scenario (logistic regression on
  class-balanced pool samples, scored on the Adult test split) for the clean pool, the poisoned
  pool and the screened pool, and backdoor success (test rows of the other class stamped with
  the trigger, classified as the backdoor's class).

    FEDSYNTH_DATA=/work/shared/datasets nice -n 10 python bench/bench_audit.py --out out/bench_audit.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fedsynth.audit import attacks
from fedsynth.audit.poison import screen_pool
from fedsynth.audit.report import run_audit, train_generators
from fedsynth.data.datasets import load_dataset
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.partition import equal_shares
from fedsynth.data.schema import Schema
from fedsynth.generators.base import Generator
from fedsynth.generators.pool import GeneratorPool
from fedsynth.generators.vae.train import VAEConfig, preset_for

console = Console(width=130)


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Part A: privacy audits
# --------------------------------------------------------------------------------------------
def privacy_part(full: pd.DataFrame, schema: Schema, args: argparse.Namespace) -> dict[str, Any]:
    parts = equal_shares(len(full), 20, seed=0)
    rows = []
    cfg = preset_for("adult")  # the configuration the project ships for Adult
    for silo in range(args.audit_silos):
        train = full.iloc[parts[silo]].reset_index(drop=True)
        holdout = full.drop(index=parts[silo]).sample(n=len(train), random_state=silo).reset_index(drop=True)
        t0 = time.perf_counter()
        gens = train_generators(train, schema, cfg, epsilon=args.epsilon, delta=None, seed=silo)
        rep = run_audit(
            schema, gens, train, holdout, config=cfg, shadows=args.shadows, canaries=args.canaries, seed=silo
        )
        row = {"silo": silo, "kind": f"DP ε={args.epsilon}", "audit_seconds": rep.seconds, **_summary(rep)}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        console.print(f"  silo {silo}: {_line(rows[-1])}")
    # Non-private control: a small silo (1 % of the data), a roomy decoder, many steps, no DP.
    small = equal_shares(len(full), 100, seed=1)[0]
    train = full.iloc[small].reset_index(drop=True)
    holdout = full.drop(index=small).sample(n=len(train), random_state=123).reset_index(drop=True)
    ccfg = VAEConfig(**{**preset_for("adult").__dict__, "hidden": (96, 96), "latent_dim": 8, "beta": 0.1,
                        "epochs": 10**5, "batch_size": 32, "lr": 3e-3, "max_steps": args.control_steps,
                        "min_steps": args.control_steps})  # fmt: skip
    t0 = time.perf_counter()
    gens = train_generators(train, schema, ccfg, epsilon=None, delta=None, seed=7)
    rep = run_audit(schema, gens, train, holdout, config=ccfg, shadows=args.shadows, canaries=args.canaries,
                    seed=7)  # fmt: skip
    control = {"silo": "1% share", "kind": "non-private control", **_summary(rep),
               "seconds": time.perf_counter() - t0}  # fmt: skip
    console.print(f"  control: {_line(control)}")
    return {"silos": rows, "control": control}


def _summary(rep: Any) -> dict[str, Any]:
    d = rep.to_dict(with_curves=False)
    m = d["membership"]
    keys = ("auc", "null_band", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "eps_lower_bound", "n_members")
    ckeys = ("m", "guesses", "correct", "eps_lower_bound", "claimed_epsilon")
    return {
        "claimed_epsilon": d["claimed_epsilon"],
        "n_members": m["n_members"],
        "n_nonmembers": m["n_nonmembers"],
        "dcr_share": m["dcr"]["share"],
        "dcr_band": m["dcr"]["band"],
        "copies": [m["dcr"]["copy_rate_members"], m["dcr"]["copy_rate_nonmembers"]],
        "attacks": {a["name"]: {k: a[k] for k in keys} for a in m["attacks"]},
        "canary": d["canary"] and {k: d["canary"][k] for k in ckeys},
        "passed": d["passed"],
        "failures": d["failures"],
    }


def _line(r: dict[str, Any]) -> str:
    att = ", ".join(f"{k} AUC {v['auc']:.3f} ε≥{v['eps_lower_bound']:.2f}" for k, v in r["attacks"].items())
    can = r["canary"]
    c = f"; canary {can['correct']}/{can['guesses']} ε≥{can['eps_lower_bound']:.2f}" if can else ""
    return f"DCR {r['dcr_share']:.3f}; {att}{c}; {'PASS' if r['passed'] else 'FAIL'} ({r['seconds']:.0f} s)"


# --------------------------------------------------------------------------------------------
# Part B: CLI timing
# --------------------------------------------------------------------------------------------
def cli_timing() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        cmd = [
            str(Path(sys.executable).parent / "fedsynth"),
            "audit",
            "--dataset",
            "adult",
            "--silo",
            "0",
            "--json",
            f"{d}/a.json",
            "--plot",
            f"{d}/a.png",
        ]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "130"})
        sec = time.perf_counter() - t0
        rep = json.loads(Path(f"{d}/a.json").read_text()) if Path(f"{d}/a.json").exists() else None
    return {"command": "fedsynth audit --dataset adult --silo 0 --json a.json --plot a.png", "seconds": sec,
            "exit_code": p.returncode, "passed": rep and rep["passed"]}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Part C: poisoning
# --------------------------------------------------------------------------------------------
class Downstream:
    """Synthetic scenario: logistic regression on pool samples, scored on the real test split."""

    def __init__(self, schema: Schema, test: pd.DataFrame, positive: str) -> None:
        self.schema, self.enc = schema, TableEncoder(schema)
        self.test = test
        self.y_test = (test[schema.target].astype(str) == positive).to_numpy()
        self.positive = positive

    def fit(self, gens: list[Generator], n: int, seed: int) -> tuple[LogisticRegression, StandardScaler]:
        df = GeneratorPool(self.schema, gens).sample(n, seed=seed)
        x = self.enc.transform(df)
        sc = StandardScaler().fit(x)
        y = (df[self.schema.target].astype(str) == self.positive).to_numpy()
        return LogisticRegression(max_iter=2000).fit(sc.transform(x), y), sc

    def accuracy(self, model: tuple[LogisticRegression, StandardScaler]) -> float:
        clf, sc = model
        return float((clf.predict(sc.transform(self.enc.transform(self.test))) == self.y_test).mean())

    def backdoor_success(
        self, model: tuple[LogisticRegression, StandardScaler], trigger: dict[str, str]
    ) -> float:
        clf, sc = model
        others = self.test[~self.y_test]
        stamped = attacks.stamp(others, trigger)
        return float(clf.predict(sc.transform(self.enc.transform(stamped))).mean())


def poison_part(bench: Any, args: argparse.Namespace) -> dict[str, Any]:
    full, schema = bench.train, bench.schema
    parts = equal_shares(len(full), 20, seed=0)
    cfg = VAEConfig(**{**preset_for("adult").__dict__, "epochs": 10, "max_steps": 300})
    down = Downstream(schema, bench.test, bench.positive)
    val = full.iloc[parts[10]].reset_index(drop=True)  # the pulling silo's private validation rows
    trigger = attacks.default_trigger(schema, val)
    target = bench.positive  # the backdoor teaches "trigger ⇒ >50K"
    other = next(c for c in schema.classes if c != target)
    res: dict[str, Any] = {"trigger": trigger, "per_seed": []}
    tally = {a: {"tp": 0, "pos": 0, "fp": 0, "neg": 0} for a in attacks.ATTACKS}
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        sets = [train_generators(full.iloc[parts[i]], schema, cfg, epsilon=args.epsilon, delta=None,
                                 seed=1000 * seed + i) for i in range(10)]  # fmt: skip
        rng = np.random.default_rng(seed)
        bad_silos = set(rng.choice(10, 2, replace=False).tolist())
        clean = [g for s in sets for g in s]
        clean_model = down.fit(clean, args.rows, seed)
        row: dict[str, Any] = {"seed": seed, "malicious": sorted(bad_silos)}
        row["clean_acc"] = down.accuracy(clean_model)
        row["clean_backdoor"] = down.backdoor_success(clean_model, trigger)
        clean_screen = screen_pool(clean, schema, val, seed=seed)
        row["clean_pool_flagged"] = len(clean_screen.flagged)
        for attack in attacks.ATTACKS:
            gens, bad = [], []
            for i, s in enumerate(sets):
                for g in s:
                    if i not in bad_silos:
                        gens.append(g)
                        bad.append(False)
                        continue
                    if attack == "label_flip":
                        g2 = attacks.label_flip(g, target if g.card.class_label == other else other)
                    elif attack == "noise":
                        g2 = attacks.noise_decoder(g, seed=seed * 10 + i)
                    elif attack == "permuted":
                        g2 = attacks.permuted_columns(g, seed=seed * 10 + i)
                    elif g.card.class_label == target:
                        g2 = attacks.backdoor(g, schema, trigger, rate=args.trigger_rate, seed=seed * 10 + i)
                    else:  # the malicious silo's other generator stays honest
                        gens.append(g)
                        bad.append(False)
                        continue
                    gens.append(g2)
                    bad.append(True)
            scr = screen_pool(gens, schema, val, seed=seed)
            fl = np.array(scr.generator_flags)
            b = np.array(bad)
            t = tally[attack]
            t["tp"] += int(fl[b].sum())
            t["pos"] += int(b.sum())
            t["fp"] += int(fl[~b].sum())
            t["neg"] += int((~b).sum())
            poisoned = down.fit(gens, args.rows, seed)
            screened = down.fit(scr.kept, args.rows, seed)
            row[attack] = {
                "tp": int(fl[b].sum()), "pos": int(b.sum()), "fp": int(fl[~b].sum()), "neg": int((~b).sum()),
                "acc_poisoned": down.accuracy(poisoned), "acc_screened": down.accuracy(screened),
                "backdoor_poisoned": down.backdoor_success(poisoned, trigger),
                "backdoor_screened": down.backdoor_success(screened, trigger),
            }  # fmt: skip
        row["seconds"] = time.perf_counter() - t0
        res["per_seed"].append(row)
        console.print(
            f"  seed {seed}: clean acc {row['clean_acc']:.3f}, clean-pool flags {row['clean_pool_flagged']}; "
            + "; ".join(f"{a} {row[a]['tp']}/{row[a]['pos']} fp {row[a]['fp']}" for a in attacks.ATTACKS)
            + f" ({row['seconds']:.0f} s)"
        )
    ps = res["per_seed"]
    res["summary"] = {
        a: {
            "tpr": tally[a]["tp"] / tally[a]["pos"], "fpr": tally[a]["fp"] / tally[a]["neg"],
            "acc_clean": float(np.mean([r["clean_acc"] for r in ps])),
            "acc_poisoned": float(np.mean([r[a]["acc_poisoned"] for r in ps])),
            "acc_screened": float(np.mean([r[a]["acc_screened"] for r in ps])),
            "backdoor_clean": float(np.mean([r["clean_backdoor"] for r in ps])),
            "backdoor_poisoned": float(np.mean([r[a]["backdoor_poisoned"] for r in ps])),
            "backdoor_screened": float(np.mean([r[a]["backdoor_screened"] for r in ps])),
        }
        for a in attacks.ATTACKS
    }  # fmt: skip
    res["clean_pool_fpr"] = sum(r["clean_pool_flagged"] for r in ps) / (len(ps) * 20)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--audit-silos", type=int, default=5, help="silos given the full audit (of 20)")
    ap.add_argument("--shadows", type=int, default=4)
    ap.add_argument("--canaries", type=int, default=1000)
    ap.add_argument("--control-steps", type=int, default=1200)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rows", type=int, default=10000, help="synthetic rows for the downstream classifier")
    ap.add_argument("--trigger-rate", type=float, default=0.08)
    ap.add_argument("--skip", nargs="*", default=[], choices=["privacy", "cli", "poison"])
    ap.add_argument("--out", type=Path, default=Path("out/bench_audit.json"))
    args = ap.parse_args()
    _quiet()
    bench = load_dataset("adult")
    t_all = time.perf_counter()
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "torch": torch.__version__}  # fmt: skip
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine}
    if "privacy" not in args.skip:
        console.print("[bold]A. privacy audits (Adult, 20 silos)[/]")
        out["privacy"] = privacy_part(bench.train, bench.schema, args)
    if "cli" not in args.skip:
        console.print("[bold]B. fedsynth audit --dataset adult --silo 0 (end to end)[/]")
        out["cli"] = cli_timing()
        console.print(f"  {out['cli']['seconds']:.0f} s, exit code {out['cli']['exit_code']}")
    if "poison" not in args.skip:
        console.print("[bold]C. poisoning (10 silos, 2 malicious)[/]")
        out["poison"] = poison_part(bench, args)
    out["seconds"] = time.perf_counter() - t_all
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    print_tables(out)
    console.print(f"results written to {args.out} ({out['seconds']:.0f} s)")


def print_tables(out: dict[str, Any]) -> None:
    if "privacy" in out:
        t = Table(title="A. membership audits (members vs equal-size holdout)")
        for c in (
            "silo",
            "generators",
            "n/side",
            "DCR share (band)",
            "DOMIAS-kNN AUC (band)",
            "DOMIAS-KDE AUC",
            "shadow AUC (n)",
            "TPR@1%",
            "max ε≥ (MIA)",
            "canary ε≥",
            "claimed ε",
            "verdict",
        ):
            t.add_column(c)
        for r in [*out["privacy"]["silos"], out["privacy"]["control"]]:
            a = r["attacks"]
            knn, kde = a["domias-knn"], a["domias-kde"]
            sh = a.get("shadow-outliers")
            t.add_row(
                str(r["silo"]), r["kind"], str(r["n_members"]),
                f"{r['dcr_share']:.3f} ({r['dcr_band'][0]:.2f}–{r['dcr_band'][1]:.2f})",
                f"{knn['auc']:.3f} ({knn['null_band'][0]:.3f}–{knn['null_band'][1]:.3f})",
                f"{kde['auc']:.3f}",
                f"{sh['auc']:.3f} ({sh['n_members']})" if sh else "-",
                f"{max(v['tpr_at_1pct_fpr'] for v in a.values()):.3f}",
                f"{max(v['eps_lower_bound'] for v in a.values()):.2f}",
                f"{r['canary']['eps_lower_bound']:.2f}" if r["canary"] else "-",
                "none" if r["claimed_epsilon"] is None else f"{r['claimed_epsilon']:.2f}",
                "PASS" if r["passed"] else "FAIL",
            )  # fmt: skip
        console.print(t)
    if "poison" in out:
        n_seeds = len(out["poison"]["per_seed"])
        t = Table(title=f"C. poisoned-generator screening (2 of 10 silos malicious, {n_seeds} seeds)")
        for c in (
            "attack",
            "TPR",
            "FPR",
            "acc clean",
            "acc poisoned",
            "acc screened",
            "backdoor clean",
            "backdoor poisoned",
            "backdoor screened",
        ):
            t.add_column(c)
        for a, s in out["poison"]["summary"].items():
            t.add_row(a, f"{s['tpr']:.3f}", f"{s['fpr']:.3f}", f"{100 * s['acc_clean']:.2f}",
                      f"{100 * s['acc_poisoned']:.2f}", f"{100 * s['acc_screened']:.2f}",
                      f"{100 * s['backdoor_clean']:.1f}", f"{100 * s['backdoor_poisoned']:.1f}",
                      f"{100 * s['backdoor_screened']:.1f}")  # fmt: skip
        console.print(t)
        console.print(
            f"clean pools: {100 * out['poison']['clean_pool_fpr']:.1f} % of honest generators flagged"
        )


if __name__ == "__main__":
    main()
