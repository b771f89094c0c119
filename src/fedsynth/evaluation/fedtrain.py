"""Federated training of a small classifier over non-IID silos, driven by Flower's strategies.

The model is a parameter list (float32 ``np.ndarray`` s): a ReLU MLP ``d → h → h → C`` on the
public-schema encoding of a table (:class:`~fedsynth.data.encoders.TableEncoder`), or the small
CNN of :mod:`fedsynth.evaluation.cnn` on uint8 images — a model family where drift hurts, unlike
logistic regression. One :class:`SiloTrainer` per silo is a Flower ``NumPyClient``: ``fit`` loads
the global parameters and trains ``local_epochs`` on the silo's rows. What tells the methods apart
lives in the trainer's options, never in the driver loop (:func:`run_rounds`):

* **FedProx** — ``+ μ/2 ‖w − w_g‖²``, μ read from the fit config exactly as Flower's ``FedProx``
  strategy sends it (``proximal_mu``).
* **Distillation on pool rows** (the synthetic regulariser) — ``+ λ · KL(p_T(x_s) ‖ p_w(x_s))``
  over a batch of the silo's class-balanced synthetic rows ``x_s``, the teacher ``T`` being a
  fixed model (e.g. the one trained on pool rows only) or, by default, the round's global model:
  the local model may move on the silo's own classes but must keep answering like the teacher on
  every class, including those the silo lacks (the forgetting that makes label skew hurt).
* **Record-level DP (DP-FedAvg)** — see :class:`DPConfig`.

Aggregation is Flower's (``FedAvg``, ``FedProx``, ``FedAvgM``: :func:`make_strategy`) through its
``aggregate_fit``; the rounds run in-process (clients called directly), as in
:mod:`fedsynth.evaluation.fedavg`. Every round the global model is scored by the caller's
``evaluate`` (the history behind "rounds to 95 %"); the model after the last round is returned
(a fixed number of rounds: no model selection on private validation rows, which DP would forbid).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.client import NumPyClient
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg, FedAvgM, FedProx, Strategy
from torch import nn

from fedsynth.evaluation.cnn import build_cnn
from fedsynth.privacy.clipping import GhostClipper, PerSampleClipper
from fedsynth.privacy.dpsgd import DPSGD, DPSGDAccount

STRATEGIES = ("fedavg", "fedprox", "fedavgm")


@dataclass(frozen=True)
class ModelSpec:
    """``kind="mlp"``: ``input_dim → hidden → hidden → n_classes``; ``kind="cnn"``: the small CNN
    of :mod:`fedsynth.evaluation.cnn` on images of shape ``image`` with ``channels`` and ``hidden``."""

    kind: str
    n_classes: int
    input_dim: int = 0
    hidden: int = 64
    image: tuple[int, int, int] | None = None
    channels: tuple[int, int] = (16, 32)

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "cnn"):
            raise ValueError(f"model kind must be mlp or cnn, got {self.kind!r}")
        if self.kind == "mlp" and self.input_dim < 1:
            raise ValueError("an MLP needs input_dim >= 1")
        if self.kind == "cnn" and self.image is None:
            raise ValueError("a CNN needs the image shape (C, H, W)")
        if self.n_classes < 2:
            raise ValueError("a classifier needs at least 2 classes")


def build_net(spec: ModelSpec) -> nn.Module:
    if spec.kind == "mlp":
        h = spec.hidden
        return nn.Sequential(
            nn.Linear(spec.input_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, spec.n_classes)
        )
    assert spec.image is not None
    net: nn.Module = build_cnn(spec.image, spec.n_classes, spec.channels, spec.hidden)
    return net


def init_params(spec: ModelSpec, seed: int = 0) -> list[np.ndarray]:
    """Fresh parameters (PyTorch's default initialisation), without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(spec)
    return get_params(net)


def get_params(net: nn.Module) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in net.parameters()]


def set_params(net: nn.Module, params: list[np.ndarray]) -> None:
    ps = list(net.parameters())
    if len(ps) != len(params):
        raise ValueError(f"the model has {len(ps)} parameter tensors, got {len(params)}")
    with torch.no_grad():
        for p, v in zip(ps, params, strict=True):
            if tuple(p.shape) != tuple(np.shape(v)):
                raise ValueError(f"parameter shape {np.shape(v)} where {tuple(p.shape)} is expected")
            p.copy_(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)))


def as_input(x: np.ndarray) -> torch.Tensor:
    """uint8 images → float in [0, 1]; encoded tables → float32."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.float().div_(255.0) if x.dtype == np.uint8 else t.float()


def predict_proba(spec: ModelSpec, params: list[np.ndarray], x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` (float64)."""
    net = build_net(spec)
    set_params(net, params)
    net.eval()
    out = [np.zeros((0, spec.n_classes))]
    with torch.no_grad():
        for k in range(0, len(x), batch):
            out.append(torch.softmax(net(as_input(x[k : k + batch])), dim=1).double().numpy())
    return np.concatenate(out)


@dataclass(frozen=True)
class LocalConfig:
    """A silo's optimiser: Adam (state reset every round), mini-batches of ``batch_size``."""

    lr: float = 1e-3
    batch_size: int = 64
    local_epochs: int = 1
    weight_decay: float = 0.0


@dataclass(frozen=True)
class DPConfig:
    """Record-level DP for one silo over a whole federated run (DP-FedAvg with DP-SGD clients).

    Privacy argument. A record lives in one silo and influences only that silo's updates. Each
    round the silo runs ``local_epochs · ⌈n/B⌉`` steps of DP-SGD: Poisson batches with rate
    q = B/n, every record's gradient clipped to ``max_grad_norm`` = C, N(0, σ²C²) added to the
    sum. The global parameters a silo starts a round from are post-processing of earlier DP
    releases, so the silo's whole update sequence is an adaptive composition of T = R · steps
    subsampled Gaussian mechanisms: σ is calibrated once, before the first round, for (ε, δ) over
    all T steps (:class:`~fedsynth.privacy.dpsgd.DPSGD`, the same accountant as the generators), and
    the ε reported is that one accountant's answer for the steps that ran. Silos are disjoint, so
    the federation's per-record ε is the largest silo's. Two details keep the server side honest:
    the server weights updates uniformly (FedAvg's example counts would release each silo's exact
    size, which one record changes), and the run has a fixed number of rounds (no early stopping
    on private validation rows). q = B/n uses the silo's size, as Opacus does."""

    epsilon: float
    delta: float
    rounds: int
    max_grad_norm: float = 1.0
    accountant: str = "rdp"


class SiloTrainer(NumPyClient):
    """One silo's training (a Flower ``NumPyClient``). ``synthetic`` rows feed the distillation
    regulariser when ``distill_weight > 0``; ``dp`` makes every step DP-SGD."""

    def __init__(
        self,
        spec: ModelSpec,
        x: np.ndarray,
        y: np.ndarray,
        cfg: LocalConfig | None = None,
        *,
        seed: int = 0,
        synthetic: tuple[np.ndarray, np.ndarray] | None = None,
        distill_weight: float = 0.0,
        teacher: list[np.ndarray] | None = None,
        dp: DPConfig | None = None,
    ) -> None:
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"{len(x)} rows and {len(y)} labels: need the same, non-zero number")
        if distill_weight > 0 and (synthetic is None or len(synthetic[0]) == 0):
            raise ValueError("the distillation regulariser needs synthetic rows")
        if dp is not None and distill_weight > 0:
            raise ValueError("DP training with a distillation term is not supported")
        self.spec, self.cfg = spec, cfg or LocalConfig()
        self.x, self.y = as_input(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.xs = as_input(synthetic[0]) if synthetic is not None and distill_weight > 0 else None
        self.distill_weight, self.dp_cfg, self.teacher = distill_weight, dp, teacher
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.net = build_net(spec)
        self._dp: DPSGD | None = None
        self._clipper: GhostClipper | PerSampleClipper | None = None

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def steps_per_round(self) -> int:
        return self.cfg.local_epochs * max(1, -(-self.n // self.cfg.batch_size))

    def account(self) -> DPSGDAccount | None:
        """The accountant's answer for every DP step this silo took (None without DP or before any)."""
        return self._dp.account() if self._dp is not None else None

    # -- Flower client -------------------------------------------------------------------------
    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        mu = float(config.get("proximal_mu", 0.0))
        new = self.train(parameters, mu=mu)
        # DP: uniform weights (the exact example count is private); otherwise FedAvg's weighting
        return new, (1 if self.dp_cfg is not None else self.n), {}

    # -- training ------------------------------------------------------------------------------
    def train(
        self, params: list[np.ndarray], *, epochs: int | None = None, mu: float = 0.0
    ) -> list[np.ndarray]:
        """From ``params``: ``epochs`` (default ``local_epochs``) of local training; the new parameters."""
        set_params(self.net, params)
        self.net.train()
        if self.dp_cfg is not None:
            if epochs is not None:
                raise ValueError("a DP trainer runs the planned local epochs only (its σ covers those)")
            self._dp_round()
        else:
            self._plain(params, epochs or self.cfg.local_epochs, mu)
        return get_params(self.net)

    def _plain(self, params: list[np.ndarray], epochs: int, mu: float) -> None:
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        anchor = [torch.from_numpy(np.asarray(p, dtype=np.float32)) for p in params] if mu > 0 else None
        teacher = None
        if self.xs is not None:  # the teacher's answers on the pool rows, fixed for the round
            t_net = self.net
            if self.teacher is not None:
                t_net = build_net(self.spec)
                set_params(t_net, self.teacher)
            with torch.no_grad():
                t_net.eval()
                teacher = torch.log_softmax(t_net(self.xs), dim=1)
            self.net.train()
        bs = max(1, min(self.cfg.batch_size, self.n))
        for _ in range(epochs):
            perm = torch.randperm(self.n, generator=self.gen)
            for k in range(0, self.n, bs):
                idx = perm[k : k + bs]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(self.net(self.x[idx]), self.y[idx])
                if anchor is not None:
                    prox = sum(
                        ((p - a) ** 2).sum() for p, a in zip(self.net.parameters(), anchor, strict=True)
                    )
                    loss = loss + 0.5 * mu * prox
                if teacher is not None and self.xs is not None:
                    j = torch.randint(len(self.xs), (len(idx),), generator=self.gen)
                    student = torch.log_softmax(self.net(self.xs[j]), dim=1)
                    kl = F.kl_div(student, teacher[j], log_target=True, reduction="batchmean")
                    loss = loss + self.distill_weight * kl
                loss.backward()
                opt.step()

    def _dp_round(self) -> None:
        assert self.dp_cfg is not None
        cfg = self.dp_cfg
        q = min(1.0, self.cfg.batch_size / self.n)
        if self._dp is None:  # one privacy engine for the whole run: σ for every step of R rounds
            self._clipper = (
                GhostClipper(self.net, cfg.max_grad_norm)
                if self.spec.kind == "mlp"
                else PerSampleClipper(self.net, cfg.max_grad_norm)
            )
            self._dp = DPSGD(
                torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr),
                epsilon=cfg.epsilon,
                delta=cfg.delta,
                sample_rate=q,
                steps=cfg.rounds * self.steps_per_round,
                max_grad_norm=cfg.max_grad_norm,
                expected_batch_size=max(1, round(q * self.n)),
                generator=self.gen,
                accountant=cfg.accountant,
            )
        run, clipper = self._dp, self._clipper
        assert clipper is not None
        taken = sum(h[2] for h in run.accountant.history)
        if taken + self.steps_per_round > run.steps:
            raise RuntimeError(f"a DP silo planned {cfg.rounds} rounds; its noise does not cover another")
        run.optimizer.original_optimizer.state.clear()  # Adam restarts each round, as without DP
        for _ in range(self.steps_per_round):
            idx = run.poisson_batch(self.rng, self.n)
            run.optimizer.zero_grad(set_to_none=True)
            if len(idx) == 0:
                run.empty_step(self.net.parameters())
                continue
            t = torch.from_numpy(idx)
            loss_vec = F.cross_entropy(self.net(self.x[t]), self.y[t], reduction="none")
            clipper.clip_and_sum(loss_vec)
            run.optimizer.step()


def train_model(
    spec: ModelSpec,
    x: np.ndarray,
    y: np.ndarray,
    cfg: LocalConfig | None = None,
    *,
    epochs: int,
    seed: int = 0,
    init: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Non-federated training (a silo alone, the synthetic-only model, a fine-tune from ``init``)."""
    t = SiloTrainer(spec, x, y, cfg, seed=seed)
    return t.train(init if init is not None else init_params(spec, seed), epochs=epochs)


def make_strategy(
    name: str, init: list[np.ndarray], *, proximal_mu: float = 0.01, server_momentum: float = 0.9
) -> Strategy:
    """Flower's strategy by name (:data:`STRATEGIES`). FedAvgM is Hsu et al.'s server momentum,
    introduced for exactly this Dirichlet label skew."""
    kw: dict[str, Any] = {
        "initial_parameters": ndarrays_to_parameters(init),
        "min_fit_clients": 1,
        "min_evaluate_clients": 1,
        "min_available_clients": 1,
        "fit_metrics_aggregation_fn": lambda _metrics: {},  # the silos report no fit metrics
    }
    if name == "fedavg":
        return FedAvg(**kw)
    if name == "fedprox":
        return FedProx(proximal_mu=proximal_mu, **kw)
    if name == "fedavgm":
        return FedAvgM(server_learning_rate=1.0, server_momentum=server_momentum, **kw)
    raise ValueError(f"unknown strategy {name!r}; use one of {STRATEGIES}")


@dataclass
class FedRun:
    params: list[np.ndarray]
    rounds: int
    history: dict[str, list[float]] = field(default_factory=dict)  # the evaluate() metrics per round
    bytes_per_silo: int = 0  # global model down + update up, every round (float32)
    seconds: float = 0.0


def run_rounds(
    trainers: list[SiloTrainer],
    strategy: Strategy,
    init: list[np.ndarray],
    rounds: int,
    *,
    evaluate: Callable[[list[np.ndarray]], dict[str, float]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> FedRun:
    """``rounds`` rounds: every trainer fits from the global parameters, ``strategy`` aggregates."""
    if rounds < 1:
        raise ValueError("need at least one round")
    t0 = time.perf_counter()
    params = [p.copy() for p in init]
    mu = float(getattr(strategy, "proximal_mu", 0.0))
    history: dict[str, list[float]] = {}
    for rnd in range(1, rounds + 1):
        results = []
        for t in trainers:
            new, n, metrics = t.fit(params, {"server_round": rnd, "proximal_mu": mu})
            results.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(new), n, metrics)))
        agg, _ = strategy.aggregate_fit(rnd, results, [])  # type: ignore[arg-type]
        if agg is None:
            raise RuntimeError(f"the strategy aggregated nothing in round {rnd}")
        params = [np.asarray(p, dtype=np.float32) for p in parameters_to_ndarrays(agg)]
        if evaluate is not None:
            for k, v in evaluate(params).items():
                history.setdefault(k, []).append(float(v))
        if progress:
            progress(rnd)
    nbytes = sum(p.nbytes for p in init)
    return FedRun(params, rounds, history, 2 * nbytes * rounds, time.perf_counter() - t0)


def rounds_to(history: list[float], frac: float = 0.95) -> int | None:
    """The first round (1-based) whose value reaches ``frac`` × the final round's value."""
    if not history or not np.isfinite(history[-1]):
        return None
    goal = frac * history[-1]
    return next(i + 1 for i, v in enumerate(history) if np.isfinite(v) and v >= goal)


__all__ = [
    "STRATEGIES",
    "DPConfig",
    "FedRun",
    "LocalConfig",
    "ModelSpec",
    "SiloTrainer",
    "as_input",
    "build_net",
    "init_params",
    "make_strategy",
    "predict_proba",
    "rounds_to",
    "run_rounds",
    "train_model",
]
