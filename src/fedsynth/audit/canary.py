"""One-run canary audit of DP β-VAE training (Steinke, Nasr & Jagielski, NeurIPS 2023).

m canaries (random records from the schema's public domain, far from real data) are each added to
one class's training rows independently with probability ½; the generator is trained once by the
unchanged production path (:func:`fedsynth.generators.vae.train_class_vae`). The auditor sees only
what is released — the decoder — and scores every canary by its likelihood under it,

    log p(x) ≈ log (1/K) Σ_k p(x | z_k),   z_k ~ N(0, I)      (prior Monte Carlo, K latent draws)

minus the same score under a reference decoder trained without any canary (removes how "typical"
a random canary happens to be; independent of the inclusion bits, so the test stays valid). The k
highest are guessed "in", the k lowest "out"; r = 2k guesses with v right reject every ε with
P[Binomial(r, e^ε/(1+e^ε)) ≥ v] < 0.05 (:func:`fedsynth.audit.stats.one_run_audit`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedsynth.audit.stats import OneRunResult, one_run_audit
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema
from fedsynth.generators.nets import Decoder, DecoderSpec
from fedsynth.generators.vae import VAEConfig, train_class_vae


def random_canaries(schema: Schema, m: int, seed: int = 0) -> np.ndarray:
    """``m`` encoded records drawn uniformly from the public domain (categories, bounds)."""
    enc = TableEncoder(schema)
    rng = np.random.default_rng(seed)
    x = np.zeros((m, enc.dim), dtype=np.float32)
    for b in enc.blocks:
        if b.kind == "categorical":
            x[np.arange(m), b.start + rng.integers(0, b.width, m)] = 1.0
        else:
            x[:, b.start] = rng.random(m)
    return x


@torch.no_grad()
def decoder_log_likelihood(
    decoder: Decoder, x: np.ndarray, *, n_latent: int = 1024, seed: int = 0
) -> np.ndarray:
    """Monte-Carlo log p(x) under the released decoder alone (no encoder needed).

    log p(x | z) uses the decoder's likelihood: categorical log-softmax, plus Bernoulli (BCE) or
    Gaussian terms on the [0, 1]-scaled continuous slots. All terms are matrix products over the K
    latent draws.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_latent, decoder.spec.latent_dim, generator=g)
    head = decoder(z)
    # Decoders with Gaussian continuous columns carry per-column log-scales after the logits.
    logits, log_s = decoder.split(head) if hasattr(decoder, "split") else (head, None)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ll = torch.zeros(xt.shape[0], n_latent)
    pos = 0
    cont: list[int] = []
    for _, kind, w in decoder.spec.layout:
        if kind == "categorical":
            ll += xt[:, pos : pos + w] @ F.log_softmax(logits[:, pos : pos + w], dim=1).T
        else:
            cont.append(pos)
        pos += w
    if cont:
        lc = logits[:, cont]
        xc = xt[:, cont]
        if log_s is None:  # Bernoulli-mean likelihood (BCE), as in training
            ll += xc @ F.logsigmoid(lc).T + (1 - xc) @ F.logsigmoid(-lc).T
        else:  # Gaussian N(x; sigmoid(μ), s²), expanded into matrix products over the K draws
            m, a = torch.sigmoid(lc), 0.5 * torch.exp(-2 * log_s)
            ll -= (xc**2) @ a.T - 2 * xc @ (m * a).T + (m**2 * a).sum(1)[None, :]
            ll -= (log_s.sum(1) + 0.5 * len(cont) * math.log(2 * math.pi))[None, :]
    return (torch.logsumexp(ll, dim=1) - math.log(n_latent)).numpy()


@dataclass(frozen=True)
class CanaryAudit:
    result: OneRunResult
    claimed_epsilon: float | None  # None: trained without DP (a control)
    claimed_delta: float | None
    class_label: str
    n_rows: int  # real rows of the class
    seconds: float

    @property
    def passed(self) -> bool:
        return self.claimed_epsilon is not None and self.result.eps_lower_bound <= self.claimed_epsilon

    def to_dict(self) -> dict[str, object]:
        return {
            **self.result.to_dict(),
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_delta": self.claimed_delta,
            "class_label": self.class_label,
            "n_rows": self.n_rows,
            "seconds": self.seconds,
            "passed": bool(self.passed),
        }


def canary_audit(
    x_class: np.ndarray,
    schema: Schema,
    spec: DecoderSpec,
    cfg: VAEConfig,
    *,
    class_label: str,
    epsilon: float | None,
    delta: float | None,
    m: int = 1000,
    n_latent: int = 1024,
    seed: int = 0,
) -> CanaryAudit:
    """Train one class generator with canaries (production path) and audit it in one run."""
    if m < 2:
        raise ValueError("need at least 2 canaries")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    canaries = random_canaries(schema, m, seed=seed + 1)
    included = rng.random(m) < 0.5
    x_train = np.concatenate([x_class, canaries[included]]).astype(np.float32)
    x_train = x_train[rng.permutation(len(x_train))]
    dec, rep = train_class_vae(
        x_train, spec, cfg, class_label=class_label, epsilon=epsilon, delta=delta, seed=seed + 2
    )
    ref, _ = train_class_vae(
        np.asarray(x_class, dtype=np.float32),
        spec,
        cfg,
        class_label=class_label,
        epsilon=epsilon,
        delta=delta,
        seed=seed + 3,
    )
    scores = decoder_log_likelihood(dec, canaries, n_latent=n_latent, seed=seed + 4) - decoder_log_likelihood(
        ref, canaries, n_latent=n_latent, seed=seed + 4
    )
    res = one_run_audit(scores, included)
    acc = rep.account
    return CanaryAudit(
        result=res,
        claimed_epsilon=acc.epsilon if acc else None,
        claimed_delta=acc.delta if acc else None,
        class_label=class_label,
        n_rows=len(x_class),
        seconds=time.perf_counter() - t0,
    )


__all__ = ["CanaryAudit", "canary_audit", "decoder_log_likelihood", "random_canaries"]
