"""A small CNN classifier for the image SGDE experiment, and FedAvg of it through Flower.

The SGDE paper classifies images with the first 8 layers of an ImageNet-pretrained VGG16 plus a
256-unit head. No pretrained weights can be downloaded here (and a VGG16 would not train in the
benchmark's CPU budget), so every scenario uses the same small CNN trained from scratch:

    conv3×3(c1)-ReLU-maxpool2 → conv3×3(c2)-ReLU-maxpool2 → Linear(hidden)-ReLU → Linear(classes)

Inputs are uint8 ``(N, C, H, W)`` images scaled to [0, 1]; training is AdamW on the cross-entropy.
The architecture is read back from the parameter shapes, so a parameter list (plain
``np.ndarray`` s, float32, in :data:`PARAM_NAMES` order) is the whole model: it is what
:func:`train_cnn` returns, what :func:`predict_proba_cnn` takes, and what FedAvg ships.

Training is deterministic given the seed on CPU (initialisation and shuffling draw from their own
generator inside :func:`torch.random.fork_rng`, so the global torch stream is left untouched).

:func:`run_cnn_fedavg` is the image *Federated* scenario: one Flower ``NumPyClient`` per silo
(``fit`` = local epochs from the global parameters; ``evaluate`` on the silo's held-out 10 %),
Flower's ``FedAvg`` strategy aggregating example-weighted, rounds driven in-process as in
:mod:`fedsynth.evaluation.fedavg`, early stopping on the mean of (accuracy, F1, AUC) across silos
with ``patience``, at most ``max_rounds`` rounds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.client import NumPyClient
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

from fedsynth.evaluation.metrics import score

#: the order of the tensors in a parameter list
PARAM_NAMES = ("conv1.w", "conv1.b", "conv2.w", "conv2.b", "fc1.w", "fc1.b", "fc2.w", "fc2.b")


@dataclass
class CNNConfig:
    """Training of :func:`train_cnn`. Defaults: tuned for MNIST-sized images on 2 CPU cores."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    channels: tuple[int, int] = (16, 32)
    hidden: int = 128
    device: str = "auto"  # "auto": CUDA if available, else CPU; or "cpu", "cuda", "cuda:1", ...
    # torch intra-op threads while training (restored afterwards); None: leave torch's setting
    # (the CLI sets it from FEDSYNTH_THREADS)
    threads: int | None = None
    predict_batch: int = 4096


def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_x(x: np.ndarray) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise ValueError("images must be a uint8 numpy array")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    if x.shape[2] < 4 or x.shape[3] < 4:
        raise ValueError(f"images must be at least 4×4 (two 2× poolings), got {x.shape[2:]}")
    return x


def _flat(h: int, w: int, c2: int) -> int:
    return c2 * (h // 4) * (w // 4)


def init_params(
    shape: tuple[int, int, int], n_classes: int, cfg: CNNConfig | None = None, seed: int = 0
) -> list[np.ndarray]:
    """Freshly initialised parameters (PyTorch's default initialisation) for ``(C, H, W)`` images."""
    import torch

    cfg = cfg or CNNConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_cnn(shape, n_classes, cfg.channels, cfg.hidden)
    return [p.detach().numpy().copy() for p in net.parameters()]


def build_cnn(shape: tuple[int, int, int], n_classes: int, channels: tuple[int, int], hidden: int) -> Any:
    from torch import nn

    c, h, w = shape
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(_flat(h, w, c2), hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


def _net_from(params: list[np.ndarray], shape: tuple[int, int, int]) -> Any:
    """The network whose parameters are ``params`` (architecture read from their shapes)."""
    import torch

    if len(params) != len(PARAM_NAMES):
        raise ValueError(f"a CNN has {len(PARAM_NAMES)} parameter tensors, got {len(params)}")
    c1, c_in = params[0].shape[:2]
    c2 = params[2].shape[0]
    hidden, flat = params[4].shape
    n_classes = params[6].shape[0]
    if c_in != shape[0] or flat != _flat(shape[1], shape[2], c2):
        raise ValueError(f"parameters do not fit images of shape {shape}")
    net = build_cnn(shape, n_classes, (c1, c2), hidden)
    with torch.no_grad():
        for p, v in zip(net.parameters(), params, strict=True):
            if tuple(p.shape) != tuple(v.shape):
                raise ValueError(f"parameter shape {v.shape} where {tuple(p.shape)} is expected")
            p.copy_(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)))
    return net


def _as_float(x: np.ndarray, device: Any) -> Any:
    import torch

    return torch.from_numpy(np.require(x, requirements=["C", "W"])).to(device).float().div_(255.0)


def train_cnn(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    cfg: CNNConfig | None = None,
    seed: int = 0,
    init: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Train the CNN on uint8 images ``x`` with integer labels ``y`` in ``0..n_classes-1``;
    from ``init`` (a parameter list, e.g. FedAvg's global model or a model to fine-tune) or from a
    fresh initialisation. Returns the parameter list (float32 arrays)."""
    import torch
    from torch.nn import functional as F

    cfg = cfg or CNNConfig()
    x = _check_x(x)
    y = np.asarray(y, dtype=np.int64)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{len(x)} images and {len(y)} labels: need the same, non-zero number")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be in 0..{n_classes - 1}")
    shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    dev = resolve_device(cfg.device)
    with _threads(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = (
            build_cnn(shape, n_classes, cfg.channels, cfg.hidden) if init is None else _net_from(init, shape)
        )
        net = net.to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        xt, yt = _as_float(x, dev), torch.from_numpy(y).to(dev)
        gen = torch.Generator().manual_seed(seed)
        n, bs = len(x), max(1, min(cfg.batch_size, len(x)))
        net.train()
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen).to(dev)
            for k in range(0, n, bs):
                idx = perm[k : k + bs]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
    return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in net.parameters()]


def predict_proba_cnn(
    params: list[np.ndarray], x: np.ndarray, *, device: str = "cpu", batch: int = 4096
) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` of the CNN ``params`` on uint8 images ``x``."""
    import torch

    x = _check_x(x)
    shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    dev = resolve_device(device)
    net = _net_from(params, shape).to(dev).eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(x), batch):
            out.append(torch.softmax(net(_as_float(x[k : k + batch], dev)), dim=1).cpu().numpy())
    if not out:
        return np.zeros((0, params[6].shape[0]))
    return np.concatenate(out).astype(np.float64)


def score_cnn(
    params: list[np.ndarray], x: np.ndarray, y: np.ndarray, n_classes: int, *, device: str = "cpu"
) -> dict[str, float]:
    """accuracy / F1 / AUC (percent, :func:`fedsynth.evaluation.metrics.score`) on integer labels."""
    classes = [str(i) for i in range(n_classes)]
    p = predict_proba_cnn(params, x, device=device)
    return score(np.asarray(y).astype(str), p, classes, positive="1" if n_classes == 2 else None)


def criterion(m: dict[str, float]) -> float:
    """The early-stopping and selection criterion: mean of (accuracy, F1, AUC), NaNs ignored."""
    v = [m[k] for k in ("accuracy", "f1", "auc") if np.isfinite(m[k])]
    return float(np.mean(v)) if v else float("nan")


class CNNClient(NumPyClient):
    """One silo: ``fit`` trains local epochs from the global parameters on 90 % of its images,
    ``evaluate`` scores the global model on the held-out 10 %."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        cfg: CNNConfig,
        *,
        seed: int = 0,
        val_frac: float = 0.1,
    ) -> None:
        x = _check_x(x)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x))
        k = max(1, round(val_frac * len(x))) if len(x) >= 10 else 0
        self.x_val, self.y_val = x[perm[:k]], np.asarray(y)[perm[:k]]
        self.x, self.y = x[perm[k:]], np.asarray(y)[perm[k:]]
        self.n_classes, self.cfg, self.seed = n_classes, cfg, seed

    def fit(self, parameters, config):
        rnd = int(config.get("server_round", 0))
        new = train_cnn(
            self.x, self.y, self.n_classes, self.cfg, seed=self.seed * 7919 + rnd, init=parameters
        )
        return new, len(self.x), {}

    def evaluate(self, parameters, config):
        if len(self.x_val) == 0:
            return 0.0, 0, {}
        p = predict_proba_cnn(parameters, self.x_val, device=self.cfg.device)
        loss = float(-np.log(np.maximum(p[np.arange(len(p)), self.y_val], 1e-12)).mean())
        classes = [str(i) for i in range(self.n_classes)]
        pos = "1" if self.n_classes == 2 else None
        m = score(self.y_val.astype(str), p, classes, positive=pos)
        return loss, len(self.x_val), {k: float(v) for k, v in m.items()}


@dataclass
class CNNFedAvgResult:
    params: list[np.ndarray]
    rounds: int
    best_round: int
    history: list[float]  # the criterion per round (mean over silos of mean(acc, F1, AUC))
    bytes_per_client_per_round: int  # global model down + update up, float32
    seconds_per_round: list[float] = field(default_factory=list)


def run_cnn_fedavg(
    silos: list[tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    cfg: CNNConfig | None = None,
    *,
    local_epochs: int = 1,
    max_rounds: int = 30,
    patience: int = 4,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> CNNFedAvgResult:
    """FedAvg of the CNN over the silos' (uint8 images, integer labels) with Flower's strategy.

    Every round each client trains ``local_epochs`` from the global parameters, ``FedAvg``
    aggregates example-weighted, every client scores the new global model on its held-out 10 %;
    the best global model (criterion: mean over silos of mean(acc, F1, AUC)) is returned after
    ``patience`` rounds without improvement or ``max_rounds`` rounds."""
    base = cfg or CNNConfig()
    ccfg = replace(base, epochs=local_epochs)
    clients = [CNNClient(x, y, n_classes, ccfg, seed=seed * 1000 + i) for i, (x, y) in enumerate(silos)]
    x0 = clients[0].x
    params = init_params((int(x0.shape[1]), int(x0.shape[2]), int(x0.shape[3])), n_classes, base, seed=seed)
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters(params), min_fit_clients=1, min_available_clients=1
    )
    best, best_round, best_params = -np.inf, 0, params
    history: list[float] = []
    secs: list[float] = []
    nbytes = sum(p.nbytes for p in params)
    rnd = 0
    with _threads(base.threads):
        for rnd in range(1, max_rounds + 1):
            t0 = time.perf_counter()
            results = []
            for c in clients:
                new, n, metrics = c.fit(params, {"server_round": rnd})
                results.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(new), n, metrics)))
            agg, _ = strategy.aggregate_fit(rnd, results, [])  # type: ignore[arg-type]
            assert agg is not None
            params = [p.astype(np.float32) for p in parameters_to_ndarrays(agg)]
            evals = [c.evaluate(params, {}) for c in clients]
            vals = [criterion(m) for _, n, m in evals if n]
            crit = float(np.nanmean(vals)) if vals else -float(rnd)
            history.append(crit)
            secs.append(time.perf_counter() - t0)
            if progress:
                progress(rnd, crit)
            if crit > best + 1e-6:
                best, best_round, best_params = crit, rnd, [p.copy() for p in params]
            elif rnd - best_round >= patience:
                break
    return CNNFedAvgResult(best_params, rnd, best_round, history, 2 * nbytes, secs)


__all__ = [
    "PARAM_NAMES",
    "CNNClient",
    "CNNConfig",
    "CNNFedAvgResult",
    "build_cnn",
    "criterion",
    "init_params",
    "predict_proba_cnn",
    "resolve_device",
    "run_cnn_fedavg",
    "score_cnn",
    "train_cnn",
]
