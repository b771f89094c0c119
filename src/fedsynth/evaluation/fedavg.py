"""FedAvg logistic regression over the silos' private data (the SGDE paper's *Federated* scenario).

Each silo is a Flower ``NumPyClient`` that runs a few epochs of mini-batch gradient descent on
softmax regression from the global weights; the server aggregates with Flower's ``FedAvg``
strategy (example-weighted mean). Features use the public schema encoding (one-hot, continuous
scaled within the declared bounds), so no private statistics are needed to align silos.

Training stops at convergence: every round each silo scores the global model on its held-out
10 %, the server keeps the model with the best mean of (accuracy, F1, AUC) across silos, and stops
after ``patience`` rounds without improvement (the paper's criterion).

:func:`run_fedavg` drives the rounds in-process (client objects called directly, aggregation by
the real strategy); the same client runs under Flower's simulation or deployment engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.client import NumPyClient
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

from fedsynth.evaluation.metrics import score


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_proba(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    w, b = params
    return softmax(x @ w + b)


class LogRegClient(NumPyClient):
    """Softmax regression trained with mini-batch GD + L2 on one silo's encoded data."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        *,
        lr: float = 0.5,
        epochs: int = 2,
        batch_size: int = 64,
        l2: float = 1e-4,
        seed: int = 0,
        val_frac: float = 0.1,
    ) -> None:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x))
        k = max(1, round(val_frac * len(x))) if len(x) >= 10 else 0
        self.x_val, self.y_val = x[perm[:k]], y[perm[:k]]
        self.x, self.y = x[perm[k:]], y[perm[k:]]
        self.n_classes, self.lr, self.epochs, self.bs, self.l2 = n_classes, lr, epochs, batch_size, l2
        self.rng = rng

    def fit(self, parameters, config):
        w, b = (p.copy() for p in parameters)
        onehot = np.eye(self.n_classes)[self.y]
        n = len(self.x)
        for _ in range(self.epochs):
            for idx in np.array_split(self.rng.permutation(n), max(1, n // self.bs)):
                p = softmax(self.x[idx] @ w + b)
                g = p - onehot[idx]
                w -= self.lr * (self.x[idx].T @ g / len(idx) + self.l2 * w)
                b -= self.lr * g.mean(axis=0)
        return [w, b], n, {}

    def evaluate(self, parameters, config):
        if len(self.x_val) == 0:
            return 0.0, 0, {}
        p = predict_proba(parameters, self.x_val)
        loss = float(-np.log(np.maximum(p[np.arange(len(p)), self.y_val], 1e-12)).mean())
        classes = [str(i) for i in range(self.n_classes)]
        m = score(self.y_val.astype(str), p, classes, positive="1" if self.n_classes == 2 else None)
        return loss, len(self.x_val), {k: float(v) for k, v in m.items()}


@dataclass
class FedAvgResult:
    params: list[np.ndarray]
    rounds: int
    best_round: int
    history: list[float]
    bytes_per_client_per_round: int


def run_fedavg(
    silos: list[tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    *,
    max_rounds: int = 60,
    patience: int = 8,
    seed: int = 0,
    **client_kw: float,
) -> FedAvgResult:
    """Train to convergence with Flower's FedAvg; silos are (encoded X, integer labels)."""
    clients = [LogRegClient(x, y, n_classes, seed=seed + i, **client_kw) for i, (x, y) in enumerate(silos)]  # type: ignore[arg-type]
    d = silos[0][0].shape[1]
    params = [np.zeros((d, n_classes)), np.zeros(n_classes)]
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters(params), min_fit_clients=1, min_available_clients=1
    )
    best, best_round, best_params, history = -np.inf, 0, params, []
    nbytes = sum(p.nbytes for p in params)
    rnd = 0
    for rnd in range(1, max_rounds + 1):
        results = []
        for c in clients:
            new, n, metrics = c.fit(params, {})
            results.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(new), n, metrics)))
        agg, _ = strategy.aggregate_fit(rnd, results, [])  # type: ignore[arg-type]
        assert agg is not None
        params = parameters_to_ndarrays(agg)
        evals = [c.evaluate(params, {}) for c in clients]
        vals = [np.nanmean([m[k] for k in ("accuracy", "f1", "auc")]) for _, n, m in evals if n]
        crit = float(np.mean(vals)) if vals else -float(rnd)
        history.append(crit)
        if crit > best + 1e-6:
            best, best_round, best_params = crit, rnd, [p.copy() for p in params]
        elif rnd - best_round >= patience:
            break
    return FedAvgResult(best_params, rnd, best_round, history, 2 * nbytes)
