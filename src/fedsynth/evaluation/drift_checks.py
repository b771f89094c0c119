"""Seeds → the drift benchmark's ``results`` (:func:`aggregate`) and the issue's verdicts on them
(:func:`drift_checks`): gains over FedAvg, the equal-ε comparison with DP-FedAvg, bias widening."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsynth.evaluation.metrics import METRICS


def _nanmean(v: list[Any]) -> float:
    a = np.array([np.nan if x is None else x for x in v], dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _nansd(v: list[Any]) -> float:
    a = np.array([np.nan if x is None else x for x in v], dtype=float)
    a = a[np.isfinite(a)]
    return float(a.std(ddof=1)) if len(a) > 1 else 0.0


def aggregate(runs: list[dict[str, Any]], split: str, param: float) -> list[dict[str, Any]]:
    """Mean (and sd) over seeds per (method, generator): the ``results`` entries of the JSON."""
    if not runs:
        raise ValueError("no runs to aggregate")
    keys = [(e["method"], e["generator"]) for e in runs[0]["entries"]]
    out = []
    for method, gen in keys:
        es = [e for r in runs for e in r["entries"] if (e["method"], e["generator"]) == (method, gen)]
        hist = None
        if es[0]["history"]:
            hist = {
                k: [float(np.nanmean(col)) for col in zip(*[e["history"][k] for e in es], strict=True)]
                for k in es[0]["history"]
            }
        fair = None
        if es[0]["fairness"]:
            fair = {
                a: {k: _nanmean([e["fairness"][a][k] for e in es]) for k in es[0]["fairness"][a]}
                for a in es[0]["fairness"]
            }
        eps = [e["epsilon"] for e in es]
        entry: dict[str, Any] = {
            "method": method,
            "generator": gen,
            "split": split,
            "beta": float(param),
            "epsilon": None if any(v is None for v in eps) else float(max(eps)),
            "private": not any(v is None for v in eps),
            "seeds": len(es),
            "global": {m: _nanmean([e["global"][m] for e in es]) for m in METRICS},
            "global_sd": {m: _nansd([e["global"][m] for e in es]) for m in METRICS},
            "per_silo": {
                k: _nanmean([e["per_silo"][k] for e in es]) for k in ("mean_accuracy", "worst_accuracy")
            },
            "per_silo_sd": {
                k: _nansd([e["per_silo"][k] for e in es]) for k in ("mean_accuracy", "worst_accuracy")
            },
            "rounds_to_95": _nanmean([e["rounds_to_95"] for e in es]) if es[0]["history"] else None,
            "rounds_to_95_auc": _nanmean([e["rounds_to_95_auc"] for e in es]) if es[0]["history"] else None,
            "bytes_per_silo": _nanmean([e["bytes_per_silo"] for e in es]),
            "fairness": fair,
            "history": hist,
        }
        if "dp_accounts" in es[0]:
            entry["dp_accounts"] = [e["dp_accounts"] for e in es]
        if "fallbacks" in es[0]:
            entry["fallbacks"] = int(sum(e["fallbacks"] for e in es))
            entry["pool_missing_classes"] = sorted({c for e in es for c in e["pool_missing_classes"]})
        out.append(entry)
    return out


def _label(e: dict[str, Any]) -> str:
    return e["method"] if e.get("generator") is None else f"{e['method']} ({e['generator']})"


def drift_checks(results: list[dict[str, Any]], headline: str = "auc") -> list[dict[str, Any]]:
    """The issue's targets per (split, β), computed from aggregated ``results``:

    * ``gain`` — the best of ``fedavg+synthetic`` / ``personalised`` against plain ``fedavg``:
      points of the ``headline`` metric (AUC for tables, accuracy for images) and of worst-silo
      accuracy; ``met`` when one method gains ≥ 2 and ≥ 5. ``rounds_ratio`` is
      ``fedavg+synthetic``'s rounds to 95 % over FedAvg's (accuracy and AUC; target ≤ 0.5).
    * ``equal_epsilon`` — the best private generator-based method (finite ε: ``synthetic``,
      ``synthetic+finetune``) against ``dp-fedavg`` at the same ε: which wins, by how much.
    * ``bias`` — per method and attribute, its TPR gap minus real-data FedAvg's and minus the
      pooled real model's (points; ``flag`` when > 2 over FedAvg)."""
    out = []
    for split, beta in dict.fromkeys((e["split"], e["beta"]) for e in results):
        es = [e for e in results if (e["split"], e["beta"]) == (split, beta)]
        by = {_label(e): e for e in es}
        row: dict[str, Any] = {"split": split, "beta": beta, "headline": headline}
        fed = by.get("fedavg")
        if fed is not None:
            gains = []
            for e in es:
                if e["method"] in ("fedavg+synthetic", "personalised"):
                    g = e["global"][headline] - fed["global"][headline]
                    w = e["per_silo"]["worst_accuracy"] - fed["per_silo"]["worst_accuracy"]
                    gains.append(
                        {"method": _label(e), "headline_gain": g, "worst_gain": w, "met": g >= 2 and w >= 5}
                    )
                if e["method"] == "fedavg+synthetic":
                    for k, r in (("accuracy", "rounds_to_95"), ("auc", "rounds_to_95_auc")):
                        if fed.get(r) and e.get(r) is not None:
                            gains[-1][f"rounds_ratio_{k}"] = e[r] / fed[r]
            row["gain"] = gains
            row["gain_met"] = any(g["met"] for g in gains)
        dp = by.get("dp-fedavg")
        private = [e for e in es if e.get("generator") is not None and e["epsilon"] is not None]
        if dp is not None and private:
            best = max(private, key=lambda e: e["global"][headline])
            d = best["global"][headline] - dp["global"][headline]
            row["equal_epsilon"] = {
                "generator_method": _label(best),
                "generator_value": best["global"][headline],
                "generator_worst": best["per_silo"]["worst_accuracy"],
                "dp_fedavg_value": dp["global"][headline],
                "dp_fedavg_worst": dp["per_silo"]["worst_accuracy"],
                "epsilon": max(best["epsilon"], dp["epsilon"]),
                "winner": "generators" if d > 0 else "dp-fedavg",
                "margin": d,
            }
        refs = {k: by[k]["fairness"] for k in ("fedavg", "pooled") if k in by and by[k].get("fairness")}
        if refs:
            bias = []
            for e in es:
                if not e.get("fairness") or e["method"] in refs:
                    continue
                item: dict[str, Any] = {"method": _label(e)}
                for attr, gaps in e["fairness"].items():
                    for ref, rf in refs.items():
                        item[f"{attr}_vs_{ref}"] = gaps["tpr_gap"] - rf[attr]["tpr_gap"]
                item["flag"] = any(item.get(f"{a}_vs_fedavg", 0) > 2 for a in e["fairness"])
                bias.append(item)
            row["bias"] = bias
        out.append(row)
    return out


__all__ = ["aggregate", "drift_checks"]
