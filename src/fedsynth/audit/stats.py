"""Statistics for empirical privacy audits: null bands, exact binomial intervals, ε lower bounds.

Every bound here is a one-sided 95 % statement by default and every search over thresholds is
Bonferroni-corrected, so an audit that reports "ε ≥ x" is a claim one can hold it to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binom, norm
from sklearn.metrics import roc_auc_score, roc_curve


def auc_null_band(n_pos: int, n_neg: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided band for the AUC of a score that carries no information (Mann–Whitney null).

    Var(AUC) = (n₊ + n₋ + 1) / (12 n₊ n₋); e.g. ±0.036 for 500 + 500 (design.md §3).
    """
    if n_pos < 1 or n_neg < 1:
        raise ValueError("need at least one member and one non-member")
    half = norm.ppf(0.5 + level / 2) * math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    return 0.5 - half, 0.5 + half


def share_band(n: int, level: float = 0.95, p: float = 0.5) -> tuple[float, float]:
    """Normal-approximation band for a share whose null value is ``p`` (e.g. the DCR share)."""
    half = norm.ppf(0.5 + level / 2) * math.sqrt(p * (1 - p) / max(n, 1))
    return p - half, p + half


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 − α) interval for a binomial proportion (each side α/2)."""
    if n == 0:
        return 0.0, 1.0
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Largest TPR reachable with FPR ≤ ``fpr`` (higher score = more likely a member)."""
    f, t, _ = roc_curve(labels, scores)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def eps_from_rates(tpr: float, fpr: float, delta: float) -> float:
    """ε implied by one operating point: any (ε, δ)-DP mechanism has TPR ≤ e^ε·FPR + δ (and the
    same for the complementary test). 0 when the point is consistent with ε = 0."""
    cands = [0.0]
    if tpr - delta > 0 and fpr > 0:
        cands.append(math.log((tpr - delta) / fpr))
    if (1 - fpr) - delta > 0 and (1 - tpr) > 0:
        cands.append(math.log((1 - fpr - delta) / (1 - tpr)))
    return max(cands)


def eps_lower_bound(
    labels: np.ndarray,
    scores: np.ndarray,
    delta: float,
    *,
    fpr_targets: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5),
    alpha: float = 0.05,
) -> float:
    """A (1 − α)-confidence lower bound on ε from a membership attack's ROC.

    At each target FPR the threshold is fixed from the scores; TPR is replaced by its
    Clopper–Pearson lower limit and FPR by its upper limit (both one-sided), Bonferroni-corrected
    over the 2·len(fpr_targets) tests made. Thresholds are chosen on the same data, so this is the
    usual (slightly optimistic) audit practice; with few targets it is conservative.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    pos, neg = scores[labels], scores[~labels]
    n1, n0 = len(pos), len(neg)
    a = 2 * alpha / (2 * len(fpr_targets))  # clopper_pearson splits α in two: one side each
    best = 0.0
    neg_sorted = np.sort(neg)[::-1]
    for target in fpr_targets:
        k = math.floor(target * n0)
        thr = neg_sorted[k] if k < n0 else -np.inf  # predict member when score > thr
        fp = int((neg > thr).sum())
        tp = int((pos > thr).sum())
        tpr_lo = clopper_pearson(tp, n1, a)[0]
        fpr_hi = clopper_pearson(fp, n0, a)[1]
        cand = [0.0]
        if tpr_lo - delta > 0 and fpr_hi > 0:
            cand.append(math.log((tpr_lo - delta) / fpr_hi))
        # Complementary test: TNR ≤ e^ε·FNR + δ, with TNR ≥ 1 − fpr_hi and FNR ≤ 1 − tpr_lo.
        if 1 - fpr_hi - delta > 0 and 1 - tpr_lo > 0:
            cand.append(math.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
        best = max(best, *cand)
    return best


@dataclass(frozen=True)
class AttackResult:
    """One membership attack's outcome (higher score = "member")."""

    name: str
    n_members: int
    n_nonmembers: int
    auc: float
    null_band: tuple[float, float]
    tpr_at_1pct: float
    tpr_at_01pct: float
    eps_lower_bound: float
    fpr: list[float]
    tpr: list[float]

    @property
    def inside_null_band(self) -> bool:
        return self.null_band[0] <= self.auc <= self.null_band[1]

    def to_dict(self, with_curve: bool = False) -> dict[str, object]:
        d: dict[str, object] = {
            "name": self.name,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "auc": self.auc,
            "null_band": list(self.null_band),
            "inside_null_band": bool(self.inside_null_band),
            "tpr_at_1pct_fpr": self.tpr_at_1pct,
            "tpr_at_0.1pct_fpr": self.tpr_at_01pct,
            "eps_lower_bound": self.eps_lower_bound,
        }
        if with_curve:
            d["roc"] = {"fpr": self.fpr, "tpr": self.tpr}
        return d


def evaluate_attack(
    name: str, member_scores: np.ndarray, nonmember_scores: np.ndarray, delta: float
) -> AttackResult:
    ms, ns = np.asarray(member_scores, dtype=float), np.asarray(nonmember_scores, dtype=float)
    if len(ms) == 0 or len(ns) == 0:
        raise ValueError(f"attack {name!r}: need scores for members and non-members")
    labels = np.r_[np.ones(len(ms)), np.zeros(len(ns))]
    scores = np.r_[ms, ns]
    f, t, _ = roc_curve(labels, scores)
    # Thin the curve for JSON/plots (keep its shape, not thousands of points).
    keep = np.unique(np.r_[0, np.linspace(0, len(f) - 1, min(len(f), 400)).astype(int), len(f) - 1])
    return AttackResult(
        name=name,
        n_members=len(ms),
        n_nonmembers=len(ns),
        auc=float(roc_auc_score(labels, scores)),
        null_band=auc_null_band(len(ms), len(ns)),
        tpr_at_1pct=tpr_at_fpr(labels, scores, 0.01),
        tpr_at_01pct=tpr_at_fpr(labels, scores, 0.001),
        eps_lower_bound=eps_lower_bound(labels, scores, delta),
        fpr=[float(v) for v in f[keep]],
        tpr=[float(v) for v in t[keep]],
    )


# --------------------------------------------------------------------------------------------
# One-run audit (Steinke, Nasr & Jagielski 2023)
# --------------------------------------------------------------------------------------------
def one_run_eps_lower_bound(r: int, v: int, alpha: float = 0.05) -> float:
    """Largest ε rejected by "P[Binomial(r, e^ε/(1+e^ε)) ≥ v] < α": with r guesses of which v are
    right, ε ≥ this at confidence 1 − α (design.md §3: 100/100 → 3.49, 90/100 → 1.63).

    (The paper's full bound also carries δ; with δ ≪ 1/m the difference is negligible.)"""
    if not 0 <= v <= r:
        raise ValueError(f"need 0 <= correct <= guesses, got {v}/{r}")
    if r == 0 or binom.sf(v - 1, r, 0.5) >= alpha:
        return 0.0  # not even ε = 0 is rejected

    def p_value(eps: float) -> float:
        p = 1.0 / (1.0 + math.exp(-eps))
        return float(binom.sf(v - 1, r, p))  # P[X ≥ v], increasing in ε

    lo, hi = 0.0, 60.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(mid) < alpha else (lo, mid)
    return lo


@dataclass(frozen=True)
class OneRunResult:
    m: int  # canaries
    guesses: int  # r: canaries not abstained on
    correct: int  # v
    k_in: int  # top-k guessed "in"
    k_out: int  # bottom-k guessed "out"
    eps_lower_bound: float
    alpha: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    k_grid: tuple[int, ...] | None = None,
    alpha: float = 0.05,
) -> OneRunResult:
    """Guess "in" for the k highest-scoring canaries, "out" for the k lowest, abstain otherwise.

    The number of guesses is picked from ``k_grid`` (default: 1 %…50 % of m per side); the
    confidence level is Bonferroni-corrected over the grid so picking the best k stays valid.
    """
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included).astype(bool)
    m = len(s)
    if m != len(inc) or m < 2:
        raise ValueError("need one inclusion bit per canary and at least two canaries")
    if k_grid is None:
        k_grid = tuple(sorted({max(1, int(m * f)) for f in (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5)}))
    order = np.argsort(-s, kind="stable")
    a = alpha / len(k_grid)
    best = OneRunResult(m, 0, 0, 0, 0, 0.0, alpha)
    for k in k_grid:
        k = min(k, m // 2)
        top, bottom = order[:k], order[m - k :]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        eps = one_run_eps_lower_bound(2 * k, v, a)
        if eps > best.eps_lower_bound or best.guesses == 0:
            best = OneRunResult(m, 2 * k, v, k, k, eps, alpha)
    return best


__all__ = [
    "AttackResult",
    "OneRunResult",
    "auc_null_band",
    "clopper_pearson",
    "eps_from_rates",
    "eps_lower_bound",
    "evaluate_attack",
    "one_run_audit",
    "one_run_eps_lower_bound",
    "share_band",
    "tpr_at_fpr",
]
