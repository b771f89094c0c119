"""The ``dp-gan/1`` family: one conditional DP GAN per silo; only the generator is shipped.

* spec: :class:`~fedsynth.generators.gan.nets.GANSpec` (noise dim, hidden sizes, output layout =
  the schema's public encoding, class count), checked against the schema and bounded in size;
  tensors: the generator's ``state_dict`` (float32), names and shapes a pure function of the spec;
* fit: :class:`~fedsynth.generators.gan.train.DPGANTrainer` on all the silo's rows (DP-SGD on the
  discriminator only, Poisson sampling, one Opacus accountant; generator steps are
  post-processing). The discriminator never leaves the silo;
* card: ``class_label=None`` (one joint generator conditioned on the class); the claim is
  ``dp-sgd`` with the discriminator's σ, q, steps and C, so any reader re-derives ε;
* sample(n, condition=c): n rows of class c (one-hot condition vector); without a condition,
  classes are drawn uniformly — the generator carries no class frequencies of the private data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.artifacts.safetensors import Expected
from fedsynth.data.encoders import TableEncoder, encode_target
from fedsynth.data.schema import Schema, SchemaError, check_training_target, validate_frame
from fedsynth.generators.base import (
    FitReport,
    GeneratorSet,
    SpecError,
    make_card,
)
from fedsynth.generators.gan.nets import GANSpec, build_generator, expected_tensors
from fedsynth.generators.gan.train import GANConfig, preset_for, train_gan
from fedsynth.generators.torchnn import ConditionalNetGenerator, load_module_tensors, module_tensors
from fedsynth.privacy.dpsgd import dpsgd_claim
from fedsynth.privacy.target import PrivacyTarget

log = logging.getLogger(__name__)
KIND = "dp-gan/1"


def check_spec(spec: GANSpec, schema: Schema) -> GANSpec:
    if [tuple(b) for b in spec.layout] != TableEncoder(schema).layout_tuples():
        raise SpecError("the generator spec's output layout does not match the schema's encoding")
    if spec.n_classes != len(schema.classes):
        raise SpecError(f"the spec has {spec.n_classes} classes, the schema {len(schema.classes)}")
    return spec


class GANGenerator(ConditionalNetGenerator):
    """A released conditional generator: draws rows of any schema class."""

    what = "generator"


class GANFamily:
    kind = KIND
    name = "gan"

    def default_config(self, dataset: str | None = None) -> GANConfig:
        return preset_for(dataset) if dataset else GANConfig()

    def spec_for(self, schema: Schema, config: Any = None) -> GANSpec:
        cfg = config or GANConfig()
        return cfg.generator_spec(TableEncoder(schema).layout(), len(schema.classes))

    def spec_from_dict(self, d: Any, schema: Schema) -> GANSpec:
        if not isinstance(d, dict):
            raise SpecError("a dp-gan spec must be a JSON object")
        return check_spec(GANSpec.from_dict(d), schema)

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Expected:
        if card.class_label is not None:
            raise ArtifactError("a dp-gan generator is conditioned on the class: its card has no class_label")
        if card.structure:
            raise ArtifactError("a dp-gan card has no structure")
        try:
            spec = self.spec_from_dict(card.spec, schema)
        except SpecError as e:
            raise ArtifactError(f"invalid dp-gan spec: {e}") from None
        return {k: (shape, "F32") for k, shape in expected_tensors(spec).items()}

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> GANGenerator:
        try:
            spec = self.spec_from_dict(card.spec, schema)
        except SpecError as e:
            raise ArtifactError(f"invalid dp-gan spec: {e}") from None
        exp = expected_tensors(spec)
        if set(tensors) != set(exp) or any(tuple(tensors[k].shape) != s for k, s in exp.items()):
            raise ArtifactError("tensors do not match the dp-gan spec")
        net = build_generator(spec)
        load_module_tensors(net, tensors)
        return GANGenerator(card, net, schema)

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
        """One DP conditional generator on all of ``df`` (every class). ``spec`` (e.g. the hub's
        required spec) overrides the generator architecture in ``config``. Fewer than
        ``config.min_rows`` rows raise :class:`~fedsynth.generators.base.TooFewRowsError`
        (``strict`` changes nothing: a silo has one generator or none)."""
        cfg: GANConfig = config or GANConfig()
        data = validate_frame(df, schema)
        check_training_target(data, schema)
        enc = TableEncoder(schema)
        spec = spec or cfg.generator_spec(enc.layout(), len(schema.classes))
        try:
            check_spec(spec, schema)
        except SpecError as e:
            raise SchemaError(str(e)) from None
        if spec.hidden != cfg.hidden or spec.noise_dim != cfg.noise_dim:
            cfg = replace(cfg, hidden=spec.hidden, noise_dim=spec.noise_dim)
        x = enc.transform(data, validated=True)
        y = encode_target(data[schema.target], schema)
        n = len(x)
        net, rep = train_gan(x, y, spec, cfg, epsilon=target.epsilon, delta=target.delta_for(n), seed=seed)
        claim = dpsgd_claim(rep.account)
        tensors = module_tensors(net)
        card = make_card(KIND, spec, schema, None, claim, tensors)
        g = GANGenerator(card, net, schema, "local")
        fr = FitReport(None, n, rep.seconds, claim, rep.final_loss, rep.d_losses)
        if on_fit:
            on_fit(fr)
        return GeneratorSet(schema, KIND, [g], [fr], [])


FAMILY = GANFamily()

__all__ = ["FAMILY", "KIND", "GANConfig", "GANFamily", "GANGenerator"]
