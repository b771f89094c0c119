"""The ``dp-conv-vae/1`` family: one DP convolutional β-VAE per (silo, class), decoder-only (SGDE images).

Mirrors the tabular ``dp-vae/1`` family (:mod:`fedsynth.generators.vae.family`):

* modality ``"image"``: only an image schema (``schema.image == (C, H, W)``, pixel columns
  ``px_*`` in 0..255, see :mod:`fedsynth.data.images`) is accepted; a tabular schema is a
  :class:`~fedsynth.generators.base.SpecError` ("dp-conv-vae needs an image schema");
* spec: :class:`~fedsynth.generators.conv_vae.nets.ConvDecoderSpec` (latent, image shape, channels,
  GroupNorm groups); tensors: the decoder's ``state_dict`` (float32), names and shapes a pure
  function of the spec;
* fit: :func:`~fedsynth.generators.conv_vae.train.train_class_conv_vae` per class (DP-Adam,
  Poisson sampling, Opacus' RDP accountant); δ per class by the SGDE rule unless given; classes
  are disjoint, so the silo's cost is the max over its generators;
* claim: ``dp-sgd`` with σ, q, steps, C from the run's accountant;
* sample: pixels = round(255 · sigmoid(decoder(z))), z ~ N(0, I) from the seed's torch stream;
  non-finite decoder output is refused (:class:`~fedsynth.artifacts.card.ArtifactError`);
* capability: :class:`~fedsynth.generators.base.LogLikelihood` (Monte-Carlo over the latent prior
  of the training likelihood, Bernoulli on pixel/255), for the canary audit.
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
from fedsynth.data.images import to_frame, to_images
from fedsynth.data.schema import Schema, SchemaError, check_training_target, validate_frame
from fedsynth.generators.base import (
    FitReport,
    GeneratorSet,
    RandomStreams,
    SpecError,
    streams,
)
from fedsynth.generators.conv_vae.nets import ConvDecoder, ConvDecoderSpec, build_decoder, expected_tensors
from fedsynth.generators.conv_vae.train import ConvVAEConfig, preset_for, train_class_conv_vae
from fedsynth.generators.torchnn import fit_per_class, load_module_tensors, module_tensors
from fedsynth.privacy.target import PrivacyTarget

log = logging.getLogger(__name__)
KIND = "dp-conv-vae/1"


def image_shape(schema: Schema) -> tuple[int, int, int]:
    """The schema's (C, H, W); a tabular schema is a :class:`SpecError`."""
    shape = schema.image
    if shape is None:
        raise SpecError("dp-conv-vae needs an image schema (schema.image = (C, H, W)); this one is tabular")
    return shape


class ConvVAEGenerator:
    """A released convolutional β-VAE decoder of one class."""

    def __init__(self, card: GeneratorCard, decoder: ConvDecoder, schema: Schema, source: str = "") -> None:
        if card.class_label is None:
            raise ArtifactError("a dp-conv-vae generator is per class: its card needs a class_label")
        self.card = card
        self.decoder = decoder
        self.schema = schema
        self.source = source

    @torch.no_grad()
    def images(self, n: int, *, seed: int | RandomStreams = 0, batch: int = 1024) -> np.ndarray:
        """``n`` images as (n, C, H, W) uint8; non-finite decoder output is an ArtifactError."""
        if n < 0:
            raise ValueError("number of images must be >= 0")
        g = streams(seed).torch()
        spec = self.decoder.spec
        z = torch.randn(int(n), spec.latent_dim, generator=g)
        out = np.empty((int(n), *spec.image), dtype=np.uint8)
        for i in range(0, int(n), batch):
            logits = self.decoder(z[i : i + batch])
            if not bool(torch.isfinite(logits).all()):
                raise ArtifactError("decoder output is not finite (NaN or infinite values)")
            px = torch.round(255.0 * torch.sigmoid(logits)).clamp(0, 255)
            out[i : i + batch] = px.to(torch.uint8).numpy()
        return out

    def sample(self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0) -> pd.DataFrame:
        if condition is not None and condition != self.card.class_label:
            raise ValueError(f"this generator draws class {self.card.class_label!r}, not {condition!r}")
        x = self.images(int(n), seed=seed)
        if len(x) == 0:  # to_frame cannot reshape an empty batch: an empty frame of the columns
            return to_frame(
                np.zeros((1, *x.shape[1:]), np.uint8), [str(self.card.class_label)], self.schema
            ).iloc[:0]
        return to_frame(x, [str(self.card.class_label)] * len(x), self.schema)

    def tensors(self) -> dict[str, np.ndarray]:
        return module_tensors(self.decoder)

    def log_likelihood(self, df: pd.DataFrame, *, seed: int = 0, n_latent: int = 256) -> np.ndarray:
        x, _ = to_images(validate_frame(df, self.schema, require_target=False), self.schema)
        return decoder_log_likelihood(self.decoder, x, n_latent=n_latent, seed=seed)


@torch.no_grad()
def decoder_log_likelihood(
    decoder: ConvDecoder, x: np.ndarray, *, n_latent: int = 256, seed: int = 0
) -> np.ndarray:
    """Monte-Carlo log p(x) = log mean_k p(x | z_k), z_k ~ N(0, I), with the training likelihood
    (Bernoulli log-probabilities weighted by pixel/255), as matrix products over the K draws."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_latent, decoder.spec.latent_dim, generator=g)
    lg = decoder(z).flatten(1)  # (K, P)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1) / 255.0)
    ll = xt @ F.logsigmoid(lg).T + (1 - xt) @ F.logsigmoid(-lg).T  # (N, K)
    return (torch.logsumexp(ll, dim=1) - math.log(n_latent)).numpy()


class ConvVAEFamily:
    kind = KIND
    name = "conv-vae"
    modality = "image"

    def default_config(self, dataset: str | None = None) -> ConvVAEConfig:
        return preset_for(dataset) if dataset else ConvVAEConfig()

    def spec_for(self, schema: Schema, config: Any = None) -> ConvDecoderSpec:
        cfg: ConvVAEConfig = config or ConvVAEConfig()
        return cfg.decoder_spec(image_shape(schema))

    def spec_from_dict(self, d: Any, schema: Schema) -> ConvDecoderSpec:
        shape = image_shape(schema)
        if not isinstance(d, dict):
            raise SpecError("a dp-conv-vae spec must be a JSON object")
        spec = ConvDecoderSpec.from_dict(d)
        if spec.image != shape:
            raise SpecError(
                f"the decoder spec's image shape {spec.image} does not match the schema's {shape}"
            )
        return spec

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Expected:
        if card.class_label is None:
            raise ArtifactError("a dp-conv-vae generator is per class: its card needs a class_label")
        if card.structure:
            raise ArtifactError("a dp-conv-vae card has no structure")
        try:
            spec = self.spec_from_dict(card.spec, schema)
        except SpecError as e:
            raise ArtifactError(f"invalid dp-conv-vae spec: {e}") from None
        return {k: (shape, "F32") for k, shape in expected_tensors(spec).items()}

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> ConvVAEGenerator:
        spec = self.spec_from_dict(card.spec, schema)
        want = expected_tensors(spec)
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if got != want:
            raise ArtifactError(f"dp-conv-vae tensors do not fit the spec: expected {want}, got {got}")
        dec = build_decoder(spec)
        load_module_tensors(dec, tensors)
        return ConvVAEGenerator(card, dec, schema)

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
        spec) overrides the architecture in ``config``. A class with fewer than
        ``config.min_images`` images is skipped with a warning (or, with ``strict``, raises
        :class:`TooFewRowsError`)."""
        cfg: ConvVAEConfig = config or ConvVAEConfig()
        shape = image_shape(schema)
        data = validate_frame(df, schema)
        check_training_target(data, schema)
        spec = spec or cfg.decoder_spec(shape)
        if not isinstance(spec, ConvDecoderSpec):
            raise SpecError("dp-conv-vae needs a ConvDecoderSpec")
        if spec.image != shape:
            raise SchemaError(
                f"the decoder spec's image shape {spec.image} does not match this schema's {shape}"
            )
        if (spec.latent_dim, spec.channels, spec.groups) != (cfg.latent_dim, cfg.channels, cfg.groups):
            cfg = ConvVAEConfig(
                **{
                    **cfg.__dict__,
                    "latent_dim": spec.latent_dim,
                    "channels": spec.channels,
                    "groups": spec.groups,
                }
            )
        x_all, y = to_images(data, schema)

        def train(rows: np.ndarray, cls: str, delta: float, sd: int) -> tuple[Any, Any]:
            return train_class_conv_vae(
                rows, spec, cfg, class_label=cls, epsilon=target.epsilon, delta=delta, seed=sd
            )

        return fit_per_class(
            x_all, y, schema, KIND, spec, target, train,
            lambda card, dec: ConvVAEGenerator(card, dec, schema, "local"),
            seed=seed, strict=strict, on_fit=on_fit, what="images",
        )  # fmt: skip


FAMILY = ConvVAEFamily()

__all__ = [
    "FAMILY",
    "KIND",
    "ConvVAEConfig",
    "ConvVAEFamily",
    "ConvVAEGenerator",
    "decoder_log_likelihood",
    "image_shape",
]
