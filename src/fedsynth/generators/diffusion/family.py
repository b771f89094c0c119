"""The ``dp-diffusion/1`` family: one class-conditional tabular diffusion model per silo (TabDDPM-style).

* spec: :class:`~fedsynth.generators.diffusion.nets.DenoiserSpec` — MLP denoiser, T training
  timesteps and the noise schedule (fixed, public: never shipped as tensors), the strided sampler
  (``sample_steps``, η), output layout = the schema's encoding, class count = the schema's;
* tensors: the denoiser's ``state_dict`` (float32), names and shapes a pure function of the spec;
* fit: :func:`~fedsynth.generators.diffusion.train.train_denoiser` on the whole silo table (one
  model, conditioned on the class; DP-SGD with Poisson sampling and one Opacus accountant; δ by
  the SGDE rule on the table's size unless given). The card has ``class_label=None``: the model
  draws any class, ``sample(n, condition=c)`` runs the reverse process conditioned on c, and
  ``condition=None`` draws classes uniformly (no class frequencies are released);
* claim: ``dp-sgd`` with σ, q, steps, C — re-derivable by any reader.

A silo with no rows of some class still ships a model that *can* be asked for that class (the
class list is public); what it draws there is whatever the class embedding learned from noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsynth.artifacts.card import ArtifactError, GeneratorCard
from fedsynth.artifacts.safetensors import Expected
from fedsynth.data.encoders import TableEncoder, encode_target
from fedsynth.data.schema import Schema, SchemaError, check_training_target, validate_frame
from fedsynth.generators.base import (
    FitReport,
    GeneratorSet,
    RandomStreams,
    SpecError,
    class_codes,
    decode_rows,
    make_card,
    streams,
)
from fedsynth.generators.diffusion.nets import Denoiser, DenoiserSpec, build_denoiser, expected_tensors
from fedsynth.generators.diffusion.train import DiffusionConfig, preset_for, train_denoiser
from fedsynth.generators.torchnn import load_module_tensors, module_tensors
from fedsynth.privacy.dpsgd import dpsgd_claim
from fedsynth.privacy.target import PrivacyTarget

log = logging.getLogger(__name__)
KIND = "dp-diffusion/1"


def check_spec(spec: DenoiserSpec, schema: Schema) -> None:
    if [tuple(b) for b in spec.layout] != TableEncoder(schema).layout_tuples():
        raise SpecError("the denoiser spec's output layout does not match the schema's encoding")
    if spec.n_classes != len(schema.classes):
        raise SpecError(
            f"the denoiser spec has {spec.n_classes} classes; the schema has {len(schema.classes)}"
        )


class DiffusionGenerator:
    """A released class-conditional denoiser of one silo (draws every class of the schema)."""

    def __init__(self, card: GeneratorCard, model: Denoiser, schema: Schema, source: str = "") -> None:
        if card.class_label is not None:
            raise ArtifactError("a dp-diffusion generator is one model per silo: its card has no class_label")
        self.card = card
        self.model = model
        self.schema = schema
        self.source = source
        self._enc = TableEncoder(schema)

    def sample(self, n: int, *, condition: str | None = None, seed: int | RandomStreams = 0) -> pd.DataFrame:
        rs = streams(seed)
        codes = class_codes(self.schema, int(n), condition, rs.numpy)
        x = self.model.generate(torch.from_numpy(codes), generator=rs.torch()).numpy()
        labels = np.asarray(self.schema.classes, dtype=object)[codes]
        return decode_rows(x, self._enc, labels, rs.numpy, "denoiser")

    def tensors(self) -> dict[str, np.ndarray]:
        return module_tensors(self.model)


class DiffusionFamily:
    kind = KIND
    name = "diffusion"

    def default_config(self, dataset: str | None = None) -> DiffusionConfig:
        return preset_for(dataset) if dataset else DiffusionConfig()

    def spec_for(self, schema: Schema, config: Any = None) -> DenoiserSpec:
        cfg = config or DiffusionConfig()
        return cfg.denoiser_spec(TableEncoder(schema).layout(), len(schema.classes))

    def spec_from_dict(self, d: Any, schema: Schema) -> DenoiserSpec:
        if not isinstance(d, dict):
            raise SpecError("a dp-diffusion spec must be a JSON object")
        spec = DenoiserSpec.from_dict(d)
        check_spec(spec, schema)
        return spec

    def expected_tensors(self, card: GeneratorCard, schema: Schema) -> Expected:
        if card.class_label is not None:
            raise ArtifactError("a dp-diffusion generator is one model per silo: its card has no class_label")
        if card.structure:
            raise ArtifactError("a dp-diffusion card has no structure")
        try:
            spec = self.spec_from_dict(card.spec, schema)
        except SpecError as e:
            raise ArtifactError(f"invalid dp-diffusion spec: {e}") from None
        return {k: (shape, "F32") for k, shape in expected_tensors(spec).items()}

    def load(self, card: GeneratorCard, tensors: dict[str, np.ndarray], schema: Schema) -> DiffusionGenerator:
        try:
            spec = self.spec_from_dict(card.spec, schema)
        except SpecError as e:
            raise ArtifactError(f"invalid dp-diffusion spec: {e}") from None
        model = build_denoiser(spec)
        try:
            load_module_tensors(model, tensors)
        except RuntimeError as e:
            raise ArtifactError(f"tensors do not fit the denoiser spec: {e}") from None
        model.eval()
        return DiffusionGenerator(card, model, schema)

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
        """One DP class-conditional diffusion model on the silo's whole table. ``spec`` (e.g. the
        hub's required spec) overrides the architecture and process in ``config``. A table with
        fewer than ``config.min_rows`` rows raises :class:`~fedsynth.generators.base.TooFewRowsError`
        (there is no class to skip: ``strict`` changes nothing here)."""
        cfg: DiffusionConfig = config or DiffusionConfig()
        data = validate_frame(df, schema)
        check_training_target(data, schema)
        enc = TableEncoder(schema)
        spec = spec or cfg.denoiser_spec(enc.layout(), len(schema.classes))
        try:
            check_spec(spec, schema)
        except SpecError as e:
            raise SchemaError(str(e)) from None
        cfg = cfg.with_spec(spec)
        x = enc.transform(data, validated=True)
        y = encode_target(data[schema.target], schema)
        model, rep = train_denoiser(
            x, y, spec, cfg, epsilon=target.epsilon, delta=target.delta_for(len(x)), seed=seed
        )
        claim = dpsgd_claim(rep.account)
        card = make_card(KIND, spec, schema, None, claim, module_tensors(model))
        g = DiffusionGenerator(card, model, schema, "local")
        fr = FitReport(None, rep.n_rows, rep.seconds, claim, rep.final_loss, rep.losses)
        if on_fit:
            on_fit(fr)
        return GeneratorSet(schema, KIND, [g], [fr], [])


FAMILY = DiffusionFamily()

__all__ = [
    "FAMILY",
    "KIND",
    "DiffusionConfig",
    "DiffusionFamily",
    "DiffusionGenerator",
]
