"""Run a full privacy audit of one generator set and present it (verdict, rich table, JSON, ROC PNG).

Family-agnostic: the claimed (ε, δ) comes from the cards (:func:`~fedsynth.generators.base.set_cost`:
max over disjoint per-class generators, sums otherwise), shadow models and the canary run are
trained by the cards' family with the cards' spec (:mod:`fedsynth.audit.training`), and the
attacks only sample. The canary audit needs the ``LogLikelihood`` capability.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from fedsynth.audit.canary import CanaryAudit, canary_audit, check_canary_support
from fedsynth.audit.membership import MembershipAudit, membership_audit
from fedsynth.audit.training import config_for, spec_of, train_generators, trainer_for
from fedsynth.data.schema import Schema, validate_frame
from fedsynth.generators.base import Generator, set_cost
from fedsynth.privacy.target import default_delta


@dataclass
class AuditReport:
    claimed_epsilon: float | None  # None = trained without DP
    claimed_delta: float
    n_train: int
    n_holdout: int
    membership: MembershipAudit
    canary: CanaryAudit | None
    seconds: float
    notes: list[str] = field(default_factory=list)
    family: str = ""

    def failures(self) -> list[str]:
        out = []
        eps = self.claimed_epsilon if self.claimed_epsilon is not None else math.inf
        d = self.membership.dcr
        if not d.inside_band:
            out.append(f"DCR share {d.share:.3f} above its null band (≤ {d.band[1]:.3f})")
        n = self.membership.n_members
        p = (d.copy_rate_members + d.copy_rate_nonmembers) / 2
        if d.copy_rate_members - d.copy_rate_nonmembers > max(
            3 * math.sqrt(2 * p * (1 - p) / max(n, 1)), 1e-9
        ):
            out.append(
                f"exact copies of members {d.copy_rate_members:.2%} "
                f"vs non-members {d.copy_rate_nonmembers:.2%}"
            )
        for a in self.membership.attacks:
            if a.auc > a.null_band[1]:
                out.append(f"{a.name}: AUC {a.auc:.3f} above the null band (≤ {a.null_band[1]:.3f})")
            if a.eps_lower_bound > eps:
                out.append(f"{a.name}: ε ≥ {a.eps_lower_bound:.2f} exceeds the claimed ε = {eps:.2f}")
        if self.canary is not None:
            lb = self.canary.result.eps_lower_bound
            ce = self.canary.claimed_epsilon if self.canary.claimed_epsilon is not None else math.inf
            if lb > ce:
                out.append(f"canary one-run audit: ε ≥ {lb:.2f} exceeds the training run's ε = {ce:.2f}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self, with_curves: bool = True) -> dict[str, object]:
        return {
            "format": "fedsynth-audit/1",
            "family": self.family,
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_delta": self.claimed_delta,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "membership": self.membership.to_dict(with_curves),
            "canary": self.canary.to_dict() if self.canary else None,
            "passed": bool(self.passed),
            "failures": self.failures(),
            "seconds": self.seconds,
            "notes": self.notes,
        }

    def table(self) -> Table:
        eps = "none (non-private)" if self.claimed_epsilon is None else f"{self.claimed_epsilon:.3g}"
        fam = f" of {self.family}" if self.family else ""
        t = Table(title=f"privacy audit{fam} — claimed ε = {eps}, δ = {self.claimed_delta:.1e}")
        # Eight short columns: with the CLI's compact style they fit 80 columns; no_wrap keeps each
        # value (a null band "0.46–0.54", a verdict) whole.
        for col in ("check", "n", "value", "null 95%", "TPR@1%", "@0.1%", "ε ≥", "ok"):
            t.add_column(col, no_wrap=True, justify="left" if col in ("check", "n", "ok") else "right")
        d = self.membership.dcr
        band = f"{d.band[0]:.2f}–{d.band[1]:.2f}"
        t.add_row("DCR share", str(d.n_synthetic), f"{d.share:.3f}", band, "", "", "", _ok(d.inside_band))
        copies = f"{d.copy_rate_members:.1%}/{d.copy_rate_nonmembers:.1%}"
        t.add_row("copies mem/non", str(d.n_synthetic), copies, "", "", "", "", "")
        ce = self.claimed_epsilon if self.claimed_epsilon is not None else math.inf
        for a in self.membership.attacks:
            ok = a.auc <= a.null_band[1] and a.eps_lower_bound <= ce
            t.add_row(
                a.name, f"{a.n_members}+{a.n_nonmembers}", f"{a.auc:.3f}",
                f"{a.null_band[0]:.2f}–{a.null_band[1]:.2f}", f"{a.tpr_at_1pct:.3f}", f"{a.tpr_at_01pct:.3f}",
                f"{a.eps_lower_bound:.2f}", _ok(ok),
            )  # fmt: skip
        if self.canary is not None:
            r = self.canary.result
            cc = self.canary.claimed_epsilon
            ok = r.eps_lower_bound <= (cc if cc is not None else math.inf)
            t.add_row(
                "canary 1-run",
                f"m={r.m}",
                f"{r.correct}/{r.guesses}",
                "",
                "",
                "",
                f"{r.eps_lower_bound:.2f}",
                _ok(ok),
            )
        return t

    def plot_roc(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
        grid = np.logspace(-4, 0, 200)
        for ax, log in zip(axes, (False, True), strict=True):
            for a in self.membership.attacks:
                f, tp = np.asarray(a.fpr), np.asarray(a.tpr)
                ax.plot(f, tp, label=f"{a.name} (AUC {a.auc:.3f})")
            ax.plot(grid, grid, "k:", lw=1, label="chance")
            if self.claimed_epsilon is not None:
                bound = np.minimum(1, math.exp(self.claimed_epsilon) * grid + self.claimed_delta)
                ax.plot(grid, bound, "r--", lw=1, label=f"DP bound ε={self.claimed_epsilon:.2g}")
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlim(1e-3, 1)
                ax.set_ylim(1e-3, 1)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
        axes[0].legend(fontsize=8, loc="lower right")
        fig.suptitle("membership inference ROC (members vs held-out non-members)")
        fig.tight_layout()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(p)
        return p


def _ok(b: bool) -> str:
    return "[green]pass[/]" if b else "[bold red]FAIL[/]"


def run_audit(
    schema: Schema,
    generators: Sequence[Generator],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    config: Any = None,
    shadows: int = 4,
    canaries: int = 1000,
    n_targets: int = 100,
    max_eval: int = 2000,
    seed: int = 0,
) -> AuditReport:
    """Audit ``generators`` (one silo's set, trained on ``train``) against ``holdout``.

    The claimed (ε, δ) is read from the cards (the set's cost: parallel composition over disjoint
    per-class generators). Shadow generators and the canary run are trained by the production
    path of the cards' family with the same (ε, δ) and the generators' spec (other
    hyper-parameters from ``config``, else the family's default).
    """
    if not generators:
        raise ValueError("no generators to audit")
    t0 = time.perf_counter()
    family = generators[0].card.family
    spec = spec_of(generators, schema)  # one family and one spec (architecture) for the whole set
    if canaries:
        check_canary_support(generators[0])  # before any training
    train = validate_frame(train, schema)
    holdout = validate_frame(holdout, schema)
    eps_c, delta_c = set_cost([g.card for g in generators])
    claimed = None if math.isinf(eps_c) else eps_c
    delta = delta_c if claimed is not None else default_delta(len(train))
    cfg = config_for(generators, config, schema=schema)
    trainer = trainer_for(schema, family, cfg, epsilon=claimed, delta=delta if claimed else None, spec=spec)
    notes = []

    mem = membership_audit(
        schema,
        generators,
        train,
        holdout,
        delta=delta,
        shadow_trainer=trainer if shadows else None,
        n_shadows=shadows,
        n_targets=n_targets,
        max_eval=max_eval,
        seed=seed,
    )
    can = None
    if canaries:
        y = train[schema.target].astype(str)
        cls = str(y.value_counts().index[0])
        can = canary_audit(train, schema, trainer, class_label=cls, m=canaries, seed=seed)
        notes.append(
            f"canary audit retrains the {family} generators with canaries of the largest class "
            f"{cls!r} (production training path, same ε, δ and spec); it audits the training "
            "procedure, not the given weights"
        )
    return AuditReport(
        claimed, delta, len(train), len(holdout), mem, can, time.perf_counter() - t0, notes, family
    )


__all__ = ["AuditReport", "config_for", "run_audit", "train_generators"]
