"""dp-conv-vae/1: DP conv β-VAE per class on image schemas (tiny 8×8 / 12×12 images, CPU)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.artifacts.card import ArtifactError, GeneratorCard, sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.data.images import image_schema, to_frame, to_images
from fedsynth.data.schema import Column, Schema
from fedsynth.generators import io
from fedsynth.generators.base import (
    SpecError,
    TooFewRowsError,
    check_output,
)
from fedsynth.generators.conv_vae.family import FAMILY, KIND, ConvVAEGenerator
from fedsynth.generators.conv_vae.nets import ConvDecoderSpec, build_decoder, expected_tensors
from fedsynth.generators.conv_vae.train import ConvVAEConfig, train_class_conv_vae
from fedsynth.privacy.target import PrivacyTarget

warnings.filterwarnings("ignore", module="opacus")

TINY = ConvVAEConfig(
    latent_dim=4, channels=(8, 4), groups=2, epochs=2, batch_size=16, min_steps=6, max_steps=12, lr=1e-2
)


def _images(n: int, cls: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    c, h, w = shape
    x = rng.integers(0, 60, size=(n, c, h, w))
    if cls == 0:
        x[:, :, : h // 2] += 180
    elif cls == 1:
        x[:, :, h // 2 :] += 180
    else:
        x[:, :, :, : w // 2] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return image_schema((1, 8, 8), ("a", "b", "c"))


@pytest.fixture(scope="module")
def frame(schema: Schema) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    xs = [_images(40, 0, (1, 8, 8), rng), _images(36, 1, (1, 8, 8), rng), _images(5, 2, (1, 8, 8), rng)]
    labels = ["a"] * 40 + ["b"] * 36 + ["c"] * 5
    return to_frame(np.concatenate(xs), labels, schema)


@pytest.fixture(scope="module")
def fitted(frame, schema):
    return FAMILY.fit(frame, schema, PrivacyTarget(epsilon=2.0), TINY, seed=1)


def test_fit_cards_claims_and_skip(fitted, schema):
    assert [g.card.class_label for g in fitted.generators] == ["a", "b"]
    assert len(fitted.skipped) == 1 and "'c'" in fitted.skipped[0] and "5 images" in fitted.skipped[0]
    for g, rep in zip(fitted.generators, fitted.reports, strict=True):
        c = g.card
        assert c.family == KIND and c.privacy.mechanism == "dp-sgd"
        assert c.privacy.verify() <= 2.0 * (1 + 1e-6)
        assert c.epsilon <= 2.0 and c.privacy.noise_multiplier > 0 and c.privacy.steps >= TINY.min_steps
        assert c.delta == pytest.approx(1.0 / (10 * rep.n_rows), rel=1.0)  # the SGDE δ rule
        assert np.isfinite(rep.final_loss)
    assert fitted.epsilon <= 2.0


def test_strict_raises_for_too_few_images(frame, schema):
    with pytest.raises(TooFewRowsError, match="'c' has 5 images"):
        FAMILY.fit(frame, schema, PrivacyTarget(epsilon=2.0), TINY, strict=True)
    small = pd.concat([frame[frame["label"] == "c"], frame[frame["label"] == "a"].head(5)])
    with pytest.raises(TooFewRowsError, match="no class had enough images"):
        FAMILY.fit(small, schema, PrivacyTarget(epsilon=2.0), TINY)


def test_artifact_round_trip_checked(fitted, schema):
    for g in fitted.generators:
        card_b, w = io.to_artifact(g)
        back = io.from_artifact(card_b, w, schema, check=True)
        assert isinstance(back, ConvVAEGenerator)
        pd.testing.assert_frame_equal(back.sample(20, seed=3), g.sample(20, seed=3))
    check_output(fitted.generators[0], schema)


def test_samples_are_pixels_of_the_class_and_deterministic(fitted, schema):
    g = fitted.generators[1]
    df = g.sample(17, condition="b", seed=5)
    assert len(df) == 17 and list(df.columns) == [*(f"px_{i}" for i in range(64)), "label"]
    assert (df["label"] == "b").all()
    x, labels = to_images(df, schema)
    assert x.dtype == np.uint8 and x.shape == (17, 1, 8, 8) and set(labels) == {"b"}
    pd.testing.assert_frame_equal(df, g.sample(17, condition="b", seed=5))
    assert not g.sample(17, seed=6).equals(df)
    assert len(g.sample(0)) == 0
    with pytest.raises(ValueError, match="draws class 'b'"):
        g.sample(3, condition="a")
    ll = g.log_likelihood(df.head(4))
    assert ll.shape == (4,) and np.isfinite(ll).all()


def test_tabular_schema_refused(fitted):
    tab = Schema(
        (Column("x", "continuous", lower=0.0, upper=1.0), Column("y", "categorical", categories=("a", "b"))),
        target="y",
    )
    assert FAMILY.modality == "image"
    with pytest.raises(SpecError, match="needs an image schema"):
        FAMILY.spec_for(tab, TINY)
    with pytest.raises(SpecError, match="needs an image schema"):
        FAMILY.spec_from_dict(fitted.generators[0].card.spec, tab)
    with pytest.raises(SpecError, match="needs an image schema"):
        FAMILY.fit(pd.DataFrame({"x": [0.5] * 40, "y": ["a"] * 40}), tab, PrivacyTarget(1.0), TINY)


def test_spec_round_trip_and_bounds(schema):
    spec = FAMILY.spec_for(schema, TINY)
    assert FAMILY.spec_from_dict(spec.to_dict(), schema) == spec
    assert spec.to_dict()["image"] == [1, 8, 8]
    for shape in ((1, 8, 8), (1, 12, 12), (3, 8, 12)):
        for groups in (0, 2):
            s = ConvDecoderSpec(latent_dim=3, image=shape, channels=(8, 4), groups=groups)
            assert expected_tensors(s) == {
                k: tuple(v.shape) for k, v in build_decoder(s).state_dict().items()
            }
    with pytest.raises(SpecError, match="divisible by 4"):
        ConvDecoderSpec(latent_dim=4, image=(1, 10, 12))
    with pytest.raises(SpecError, match="groups"):
        ConvDecoderSpec(latent_dim=4, image=(1, 8, 8), channels=(8, 6), groups=4)
    with pytest.raises(SpecError, match="parameters"):
        ConvDecoderSpec(latent_dim=512, image=(1, 256, 256), channels=(512, 512))
    with pytest.raises(SpecError, match="malformed"):
        FAMILY.spec_from_dict({"latent_dim": 4}, schema)
    with pytest.raises(SpecError, match="image shape"):
        FAMILY.spec_from_dict({**spec.to_dict(), "image": [1, 12, 12]}, schema)
    with pytest.raises(SpecError, match="unsupported decoder kind"):
        FAMILY.spec_from_dict({**spec.to_dict(), "kind": "mlp-decoder"}, schema)


def _reissue(g, tensors):
    w = tensors_to_bytes(tensors, KIND)
    return g.card.replace(weights_sha256=sha256_bytes(w)), w


def test_wrong_tensors_and_wrong_schema_refused(fitted, schema):
    g = fitted.generators[0]
    t = g.tensors()
    bad = dict(t)
    bad["fc.weight"] = np.zeros((t["fc.weight"].shape[0], 5), np.float32)  # wrong latent width
    card, w = _reissue(g, bad)
    with pytest.raises(ArtifactError):
        io.from_artifact(card, w, schema)
    card, w = _reissue(g, {k: v for k, v in t.items() if k != "out.bias"})
    with pytest.raises(ArtifactError):
        io.from_artifact(card, w, schema)
    with pytest.raises(ArtifactError):
        FAMILY.load(g.card, bad, schema)
    other = image_schema((1, 12, 12), ("a", "b", "c"))
    card_b, w = io.to_artifact(g)
    with pytest.raises(ArtifactError):
        io.from_artifact(card_b, w, other)
    with pytest.raises(ArtifactError, match="class_label"):
        FAMILY.expected_tensors(GeneratorCard.from_json(card_b).replace(class_label=None), schema)


def test_huge_weights_refused_by_check_output(fitted, schema):
    g = fitted.generators[0]
    huge = {
        k: np.where(np.arange(v.size).reshape(v.shape) % 2, 1e30, -1e30).astype(np.float32)
        for k, v in g.tensors().items()
    }
    card, w = _reissue(g, huge)
    loaded = io.from_artifact(card, w, schema)  # structurally fine ...
    with pytest.raises(ArtifactError, match="not finite"):
        loaded.sample(8)
    with pytest.raises(ArtifactError):
        io.from_artifact(card, w, schema, check=True)  # ... but its output is not


def test_hub_spec_overrides_config_and_12x12(schema):
    sch = image_schema((1, 12, 12), ("0", "1"))
    rng = np.random.default_rng(2)
    df = to_frame(
        np.concatenate([_images(34, 0, (1, 12, 12), rng), _images(34, 1, (1, 12, 12), rng)]),
        ["0"] * 34 + ["1"] * 34,
        sch,
    )
    spec = ConvDecoderSpec(latent_dim=3, image=(1, 12, 12), channels=(4, 4), groups=0)
    gs = FAMILY.fit(df, sch, PrivacyTarget(epsilon=1.0, delta=1e-3), TINY, spec=spec)
    assert [g.card.spec for g in gs.generators] == [spec.to_dict()] * 2
    assert all(g.card.delta == 1e-3 for g in gs.generators)
    assert gs.generators[0].sample(3, seed=0).shape == (3, 145)


def test_train_non_private_and_shape_checks():
    spec = TINY.decoder_spec((1, 8, 8))
    x = _images(40, 0, (1, 8, 8), np.random.default_rng(3))
    dec, rep = train_class_conv_vae(x, spec, TINY, class_label="a", epsilon=None, delta=None)
    assert rep.account is None and not any(
        hasattr(p, "grad_sample") and p.grad_sample is not None for p in dec.parameters()
    )
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in dec.parameters())
    with pytest.raises(ValueError, match="shape"):
        train_class_conv_vae(x[:, :, :4], spec, TINY, class_label="a", epsilon=None, delta=None)


def test_default_config_presets():
    for ds in ("mnist", "fashion_mnist"):
        cfg = FAMILY.default_config(ds)
        assert isinstance(cfg, ConvVAEConfig) and cfg.device == "auto"
        FAMILY.spec_for(image_schema((1, 28, 28), tuple(str(i) for i in range(10))), cfg)
    assert FAMILY.default_config() == ConvVAEConfig()


def test_per_sample_gradients_match_autograd():
    from fedsynth.generators.conv_vae.train import ConvVAE
    from fedsynth.privacy.clipping import PerSampleClipper

    spec = ConvDecoderSpec(latent_dim=3, image=(2, 8, 12), channels=(4, 6), groups=2)
    torch.manual_seed(0)
    model = ConvVAE(spec)
    x, nz = torch.rand(5, 2, 8, 12), torch.randn(5, 3)
    ref = []
    for i in range(5):
        model.zero_grad()
        model(x[i : i + 1], nz[i : i + 1]).sum().backward()
        ref.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    want = torch.stack(ref)
    clip = PerSampleClipper(model, max_grad_norm=1e9)
    model.zero_grad()
    norms = clip.clip_and_sum(clip.gsm(x, nz))
    torch.testing.assert_close(norms, want.norm(dim=1), rtol=1e-4, atol=1e-4)
    got = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(got, want.sum(0), rtol=1e-4, atol=1e-4)
    clip.max_grad_norm = 1.0
    model.zero_grad()
    clip.clip_and_sum(clip.gsm(x, nz))
    got = torch.cat([p.grad.flatten() for p in model.parameters()])
    coef = (1.0 / (want.norm(dim=1) + 1e-6)).clamp(max=1.0)
    torch.testing.assert_close(got, (coef[:, None] * want).sum(0), rtol=1e-4, atol=1e-5)
    clip.remove()
