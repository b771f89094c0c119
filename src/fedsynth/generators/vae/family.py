"""The ``dp-vae/1`` family: one DP β-VAE per (silo, class), decoder-only artifact (SGDE).

* spec: :class:`~fedsynth.generators.vae.nets.DecoderSpec` (dense decoder, output layout = the
  schema's encoding); tensors: the decoder's ``state_dict`` (float32), names and shapes a pure
  function of the spec;
* fit: :func:`~fedsynth.generators.vae.train.train_class_vae` per class (DP-Adam, Poisson
  sampling, Opacus' RDP accountant); δ per class by the SGDE rule unless given; classes are
  disjoint, so the silo's cost is the max over its generators (:func:`~fedsynth.generators.base.set_cost`);
* claim: ``dp-sgd`` with σ, q, steps, C — re-derivable by any reader;
* capability: :class:`~fedsynth.generators.base.LogLikelihood` (Monte-Carlo over the latent prior),
  used by the canary audit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.artifacts.safetensors import Expected
from fedsynth.data.encoders import TableEncoder
from fedsynth.data.schema import Schema, SchemaError, check_training_target, validate_frame
from fedsynth.generators.base import (
    FitReport,
    GeneratorSet,
    RandomStreams,
    SpecError,
    decode_rows,
    streams,
)
from fedsynth.generators.torchnn import fit_per_class, load_module_tensors, module_tensors
from fedsynth.generators.vae.nets import Decoder, DecoderSpec, build_decoder, expected_tensors
from fedsynth.generators.vae.train import VAEConfig, preset_for, train_class_vae
from fedsynth.privacy.target import PrivacyTarget

log = logging.getLogger(__name__)
KIND = "dp-vae/1"


class VAEGenerator:
    """A released β-VAE decoder of one class."""

    def __init__(self, card: GeneratorCard, decoder: Decoder, schema: Schema, source: str = "") -> None:
        if card.class_label is None:
            raise ArtifactError("a dp-vae generator is per class: its card needs a class_label")
        self.card = card
        self.decoder = decoder
        self.schema = schema
        self.source = source
        self._enc = TableEncoder(schema)

    def sample(self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0) -> pd.DataFrame:
        if condition is not None and condition != self.card.class_label:
            raise ValueError(f"this generator draws class {self.card.class_label!r}, not {condition!r}")
        rs = streams(seed)
        x = self.decoder.generate(int(n), generator=rs.torch()).numpy()
        return decode_rows(x, self._enc, self.card.class_label, rs.numpy, "decoder")

    def tensors(self) -> dict[str, np.ndarray]:
        return module_tensors(self.decoder)

    def log_likelihood(self, df: pd.DataFrame, *, seed: int = 0, n_latent: int = 1024) -> np.ndarray:
        x = self._enc.transform(validate_frame(df, self.schema, require_target=False), validated=True)
        return decoder_log_likelihood(self.decoder, x, n_latent=n_latent, seed=seed)


@torch.no_grad()
def decoder_log_likelihood(
    decoder: Decoder, x: np.ndarray, *, n_latent: int = 1024, seed: int = 0
) -> np.ndarray:
    """Monte-Carlo log p(x) = log mean_k p(x | z_k), z_k ~ N(0, I), under the decoder alone.

    log p(x | z) uses the decoder's likelihood: categorical log-softmax, plus Bernoulli (BCE) or
    Gaussian terms on the [0, 1]-scaled continuous slots. All terms are matrix products over the K
    latent draws.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_latent, decoder.spec.latent_dim, generator=g)
    logits, log_s = decoder.split(decoder(z))
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


class VAEFamily:
    kind = KIND
    name = "vae"

    def default_config(self, dataset: str | None = None) -> VAEConfig:
        return preset_for(dataset) if dataset else VAEConfig()

    def spec_for(self, schema: Schema, config: Any = None) -> DecoderSpec:
        cfg = config or VAEConfig()
        return cfg.decoder_spec(TableEncoder(schema).layout())

    def spec_from_dict(self, d: Any, schema: Schema) -> DecoderSpec:
        if not isinstance(d, dict):
            raise SpecError("a dp-vae spec must be a JSON object")
        spec = DecoderSpec.from_dict(d)
        if [tuple(b) for b in spec.layout] != TableEncoder(schema).layout_tuples():
            raise SpecError("the decoder spec's output layout does not match the schema's encoding")
        return spec

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Expected:
        if card.class_label is None:
            raise ArtifactError("a dp-vae generator is per class: its card needs a class_label")
        if card.structure:
            raise ArtifactError("a dp-vae card has no structure")
        spec = self.spec_from_dict(card.spec, schema)
        return {k: (shape, "F32") for k, shape in expected_tensors(spec).items()}

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> VAEGenerator:
        spec = self.spec_from_dict(card.spec, schema)
        dec = build_decoder(spec)
        load_module_tensors(dec, tensors)
        return VAEGenerator(card, dec, schema)

    def fit(
        self,
        df: pd.DataFrame,
        schema: Schema,
        target: PrivacyTarget,
        config: Any = None,
        *,
        seed: int = 0,
        spec: Any = None,
        on_fit: Callable[[FitReport], None] | None = None,
        strict: bool = False,
    ) -> GeneratorSet:
        """One DP generator for every class in ``df``. ``spec`` (e.g. the hub's required decoder
        spec) overrides the architecture in ``config``. A class with fewer than ``config.min_rows``
        rows is skipped with a warning (or, with ``strict``, raises :class:`TooFewRowsError`)."""
        cfg: VAEConfig = config or VAEConfig()
        data = validate_frame(df, schema)
        check_training_target(data, schema)
        enc = TableEncoder(schema)
        spec = spec or cfg.decoder_spec(enc.layout())
        if [tuple(b) for b in spec.layout] != TableEncoder(schema).layout_tuples():
            raise SchemaError("the decoder spec's output layout does not match this schema's encoding")
        if tuple(reversed(spec.hidden)) != cfg.hidden or spec.latent_dim != cfg.latent_dim:
            cfg = VAEConfig(
                **{**cfg.__dict__, "hidden": tuple(reversed(spec.hidden)), "latent_dim": spec.latent_dim}
            )
        x_all = enc.transform(data, validated=True)
        y = data[schema.target].to_numpy()

        def train(rows: np.ndarray, cls: str, delta: float, sd: int) -> tuple[Any, Any]:
            return train_class_vae(
                rows, spec, cfg, class_label=cls, epsilon=target.epsilon, delta=delta, seed=sd
            )

        return fit_per_class(
            x_all, y, schema, KIND, spec, target, train,
            lambda card, dec: VAEGenerator(card, dec, schema, "local"),
            seed=seed, strict=strict, on_fit=on_fit, what="rows",
        )  # fmt: skip


FAMILY = VAEFamily()

decoder_tensors = module_tensors  # the name tests and audits use for a decoder

__all__ = [
    "FAMILY",
    "KIND",
    "VAEConfig",
    "VAEFamily",
    "VAEGenerator",
    "decoder_log_likelihood",
    "decoder_tensors",
]
