"""One FLAIM run end to end: data → federation → method → model → synthetic data → metrics.

Federation: the training codes are split over K clients (iid, label-skew:β, cluster; seeded and
cached by :mod:`fedsynth.data.partition`); a split that leaves a client empty is refused. Each round
every client participates independently with probability p (Poisson sampling); a round with fewer
than two participants is topped up at random to two, because a secure sum over one client would
reveal its vector. Every client→server vector goes through ``secure_sum`` (SecAgg+ in-process by
default), and per-client bytes come from its messages plus the broadcast plan arrays.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsynth.data import partition
from fedsynth.flaim import aim
from fedsynth.flaim.domain import FlaimDomain, discretise, load_prebinned
from fedsynth.flaim.methods import METHODS, Context, default_alpha, make_method
from fedsynth.flaim.metrics import gbdt_auc, nll, workload_l1
from fedsynth.flaim.model import PGM
from fedsynth.flaim.workload import Clique, downward_closure, make_workload
from fedsynth.secagg.secure_sum import SecureSum, SumResult, plain_sum

CENTRAL = ("aim", "aim-adaptive")
ALL_METHODS = CENTRAL + METHODS


def default_secure_sum() -> SecureSum:
    try:
        from fedsynth.secagg.secure_sum import SecAggPlusSum

        return SecAggPlusSum()
    except ImportError:  # pragma: no cover - only while the SecAgg+ implementation is absent
        return plain_sum


@dataclass
class FlaimData:
    name: str
    domain: FlaimDomain
    train: np.ndarray
    test: np.ndarray

    @property
    def target_index(self) -> int:
        assert self.domain.target is not None
        return self.domain.attrs.index(self.domain.target)


def _split_train_test(codes: np.ndarray, seed: int, test_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(len(codes))
    k = round(len(codes) * test_frac)
    return codes[np.sort(perm[k:])], codes[np.sort(perm[:k])]


def load_flaim_data(
    name: str | None = None,
    path: str | Path | None = None,
    *,
    domain_json: str | Path | None = None,
    target: str | None = None,
    seed: int = 0,
) -> FlaimData:
    """``adult`` = Private-PGM's pre-binned Adult; ``marketing``/``census`` are discretised raw CSVs."""
    import pandas as pd

    from fedsynth.data.datasets import DatasetError, dataset_path
    from fedsynth.data.schema import infer_schema

    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"data file {p} does not exist")
        if domain_json is not None:
            codes, dom = load_prebinned(p, domain_json, target)
        else:
            codes, dom = discretise(pd.read_csv(p), target=target)
        label = p.stem
    elif name == "adult":
        codes, dom = load_prebinned(
            dataset_path("adult/adult_private_pgm.csv.gz"),
            dataset_path("adult/adult_private_pgm-domain.json"),
            "income>50K",
        )
        label = name
    elif name in ("marketing", "census"):
        rel = f"{name}/{name}.csv.gz"
        # Literal categories such as "NA" / "Not in universe" are values here, not missing data.
        df = pd.read_csv(dataset_path(rel), keep_default_na=False, na_values=[""])
        tgt = "y" if name == "marketing" else "income"
        if name == "census":
            df = df.drop(columns=["instance weight"])  # survey weight: not a feature (UCI notes)
        for c in df.columns:  # pandas 3 string dtype → plain strings for the schema
            if not pd.api.types.is_numeric_dtype(df[c]):
                df[c] = df[c].astype(str)
        # The whole published file defines the public domain (as in fedsynth.data.datasets).
        schema = infer_schema(df, tgt, max_categories=100).with_source("declared")
        codes, dom = discretise(df, schema)
        label = name
    else:
        raise DatasetError(f"unknown FLAIM dataset {name!r}; use adult, marketing, census or --data FILE")
    train, test = _split_train_test(codes, seed)
    return FlaimData(label, dom, train, test)


def draw_participants(rng: np.random.Generator, clients: int, participation: float) -> list[int]:
    """Poisson participation: each client independently with probability p; topped up to two at
    random, because a secure sum over a single client would reveal its vector."""
    participants = [int(k) for k in np.flatnonzero(rng.random(clients) < participation)]
    while len(participants) < min(2, clients):
        extra = int(rng.integers(clients))
        if extra not in participants:
            participants.append(extra)
    return sorted(participants)


def make_clients(data: FlaimData, clients: int, split: str, seed: int) -> list[np.ndarray]:
    n = len(data.train)
    if clients > n:
        raise partition.PartitionError(f"{clients} clients but only {n} training rows; use fewer clients")
    kind, beta = partition.parse_split(split)
    if kind == "iid":
        parts = partition.iid(n, clients, seed)
    elif kind == "label-skew":
        assert beta is not None
        parts = partition.dirichlet_label_skew(data.train[:, data.target_index], clients, beta, seed)
    elif kind == "cluster":
        parts = partition.cluster(data.train, clients, seed)
    else:
        raise partition.PartitionError(
            f"split {split!r} is not supported for FLAIM; use iid, label-skew:B, cluster"
        )
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise partition.PartitionError(
            f"split {split!r} leaves clients {empty[:10]} empty; use fewer clients"
        )
    return parts


@dataclass
class RunResult:
    method: str
    epsilon: float
    model: PGM
    synthetic: np.ndarray
    seconds: float
    rho_used: float
    rho: float
    selected: list[Clique]
    client_bytes_sent: float = 0.0  # mean over participating clients
    client_bytes_received: float = 0.0
    participants: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def run(
    data: FlaimData,
    method: str,
    *,
    epsilon: float,
    delta: float = 1e-5,
    clients: int = 100,
    participation: float = 0.1,
    rounds: int = 10,
    split: str = "cluster",
    seed: int = 0,
    workload: str = "3way-64",
    alpha: float | None = None,
    rows: int | None = None,
    secure_sum: SecureSum | None = None,
    top: int = 1,
    select_rounds: int | None = None,
    oneway_weight: float = 2.0,
    marginals: int | None = None,
    preview_share: float = 0.3,
    vote_on: str = "workload",
    pool_cells: int = 6500,
    split_seed: int | None = None,
    max_model_mb: float = 80.0,
    evaluate: bool = True,
) -> RunResult:
    """Run one method and (optionally) evaluate it.

    ``seed`` drives the workload draw, client sampling and all mechanisms; ``split_seed`` (default:
    ``seed``) the client partition, so benchmarks can reuse one cached cluster split across seeds.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    if not (epsilon > 0):
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    t0 = time.perf_counter()
    if alpha is None:  # AIM's 0.9 unless the method has its own default (flaim-ta)
        alpha = default_alpha(method)
    sizes = data.domain.sizes
    wl = make_workload(data.domain.attrs, workload, target=data.domain.target, seed=seed)
    sent: dict[int, int] = defaultdict(int)
    recv: dict[int, int] = defaultdict(int)
    if method in CENTRAL:
        res = aim.run_aim(
            data.train,
            sizes,
            wl,
            epsilon=epsilon,
            delta=delta,
            alpha=alpha,
            seed=seed,
            rounds=None if method == "aim-adaptive" else rounds,
            max_model_mb=max_model_mb,
        )
        model, budget, selected = res.model, res.budget, res.selected
    else:
        parts = make_clients(data, clients, split, seed if split_seed is None else split_seed)
        client_codes = [data.train[p] for p in parts]
        ctx = Context(
            sizes,
            wl,
            epsilon,
            delta,
            rounds,
            participation,
            alpha=alpha,
            seed=seed,
            client_seed=seed,  # one-process simulation: reproducible; deployments leave it None
            server_seed=seed,
            top=top,
            select_rounds=select_rounds,
            oneway_weight=oneway_weight,
            marginals=marginals,
            preview_share=preview_share,
            vote_on=vote_on,
            pool_cells=pool_cells,
            max_model_mb=max_model_mb,
            global_codes=data.train if method == "aug-oracle" else None,
        )
        m = make_method(method, ctx)
        ssum = secure_sum or default_secure_sum()
        state = m.init_state()
        rng = np.random.default_rng(seed + 7)
        participants: list[int] = []
        cur_round = 0
        while True:
            nxt_round = m.upcoming_round(state)
            if nxt_round is not None and nxt_round != cur_round:  # Poisson participation, once per round
                cur_round = nxt_round
                participants = draw_participants(rng, clients, participation)
            plan = m.plan(state, participants)
            if plan is None:
                break
            bcast = sum(int(a.nbytes) for a in plan["arrays"].values())
            # a plan may name the subset of participants that take part in this step ("senders")
            senders = plan.get("senders", participants)
            vectors = {k: m.client_step(k, client_codes[k], plan) for k in senders}
            sums: dict[str, np.ndarray] = {}
            for key in sorted({key for v in vectors.values() for key in v}):
                r: SumResult = ssum({k: v[key] for k, v in vectors.items()})
                sums[key] = r.total
                for k, b in r.bytes_sent.items():
                    sent[k] += b
                for k, b in r.bytes_received.items():
                    recv[k] += b
            for k in senders:
                recv[k] += bcast
            state = m.server_step(state, plan, sums)
        model = m.finish(state)
        budget, selected = state.budget, state.selected
    assert budget is not None
    n_rows = rows if rows is not None else len(data.train)
    synth = model.synthetic(n_rows, seed)
    out = RunResult(
        method,
        epsilon,
        model,
        synth,
        0.0,
        budget.used,
        budget.rho,
        selected,
        float(np.mean(list(sent.values()))) if sent else 0.0,
        float(np.mean(list(recv.values()))) if recv else 0.0,
        len(sent),
    )
    out.seconds = time.perf_counter() - t0
    if evaluate:
        out.metrics = {
            "l1": workload_l1(data.train, synth, sizes, downward_closure(wl, data.domain.attrs)),
            "nll": nll(model, data.test),
            "auc": gbdt_auc(synth, data.test, data.target_index, seed)
            if data.domain.target
            else float("nan"),
        }
    out.metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out
