"""Artifacts: the family-agnostic card, the hand-checked safetensors header, sets on disk."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsynth.artifacts.card import CARD_FORMAT, LEGACY_CARD_FORMAT, ArtifactError, GeneratorCard
from fedsynth.artifacts.safetensors import parse_header, tensors_to_bytes, verify_tensors
from fedsynth.data.encoders import TableEncoder
from fedsynth.generators.base import SpecError, make_card
from fedsynth.generators.io import from_artifact, read_generator_set, to_artifact, write_generator_set
from fedsynth.generators.vae.family import FAMILY as VAE
from fedsynth.generators.vae.family import VAEGenerator, decoder_tensors
from fedsynth.generators.vae.nets import DecoderSpec, build_decoder, expected_tensors
from fedsynth.generators.vae.train import VAEConfig
from fedsynth.privacy.claim import PrivacyClaim

CLAIM = PrivacyClaim(
    "dp-sgd", 1.0, 1e-5, "rdp", noise_multiplier=1.1, sample_rate=0.1, steps=100, max_grad_norm=1.0
)


def _spec(toy_schema) -> DecoderSpec:
    return VAEConfig(hidden=(8,), latent_dim=3).decoder_spec(TableEncoder(toy_schema).layout())


def _gen(toy_schema, cls="yes", spec=None, **card_kw) -> VAEGenerator:
    dec = build_decoder(spec or _spec(toy_schema))
    card = make_card("dp-vae/1", dec.spec, toy_schema, cls, CLAIM, decoder_tensors(dec))
    return VAEGenerator(card.replace(**card_kw) if card_kw else card, dec, toy_schema, "test")


def _expected(spec: DecoderSpec) -> dict:
    return {k: (s, "F32") for k, s in expected_tensors(spec).items()}


def test_round_trip(toy_schema, tmp_path):
    g = _gen(toy_schema)
    write_generator_set(tmp_path / "set", toy_schema, [g])
    schema, loaded = read_generator_set(tmp_path / "set")
    assert schema.hash() == toy_schema.hash()
    z = torch.randn(4, 3)
    assert torch.allclose(loaded[0].decoder(z), g.decoder(z))
    assert GeneratorCard.from_json(g.card.to_json()) == g.card
    assert loaded[0].sample(50, seed=3).equals(g.sample(50, seed=3))


def test_legacy_card_loads_one_way(toy_schema, tmp_path):
    """A fedsynth-decoder/1 card and its torch-written safetensors file (as shipped before
    families existed) still load, as a dp-vae/1 card with a legacy claim."""
    from safetensors.torch import save

    dec = build_decoder(_spec(toy_schema))
    w = save(
        {k: v.contiguous() for k, v in dec.state_dict().items()},
        metadata={"format": "fedsynth-decoder-weights/1"},
    )
    legacy = {
        "format": LEGACY_CARD_FORMAT,
        "spec": dec.spec.to_dict(),
        "schema_hash": toy_schema.hash(),
        "class_label": "yes",
        "epsilon": 0.99,
        "delta": 1e-5,
        "accountant": "rdp",
        "weights_sha256": __import__("hashlib").sha256(w).hexdigest(),
        "created": "2026-11-22T00:00:00+00:00",
        "library": "fedsynth",
    }
    card = GeneratorCard.from_json(json.dumps(legacy))
    assert (card.format, card.family, card.privacy.mechanism, card.epsilon) == (
        CARD_FORMAT,
        "dp-vae/1",
        "legacy",
        0.99,
    )
    g = from_artifact(card, w, toy_schema, check=True)
    assert g.sample(10, seed=0).shape == (10, 4)
    with pytest.raises(Exception, match="cannot be recomputed"):
        card.privacy.verify()
    # written back, it is a current-format card (the migration is one way)
    assert json.loads(card.to_json())["format"] == CARD_FORMAT


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fedsynth_pwned_artifact",))


def test_pickle_refused_and_never_executed(toy_schema):
    spec = _spec(toy_schema)
    Path("/tmp/fedsynth_pwned_artifact").unlink(missing_ok=True)
    for payload in (pickle.dumps(Boom()), pickle.dumps(Boom(), protocol=2)):
        with pytest.raises(ArtifactError, match="pickle"):
            verify_tensors(payload, _expected(spec))
    import io

    buf = io.BytesIO()
    torch.save(build_decoder(spec).state_dict(), buf)
    with pytest.raises(ArtifactError, match=r"pickle|zip"):
        verify_tensors(buf.getvalue(), _expected(spec))
    assert not Path("/tmp/fedsynth_pwned_artifact").exists()


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=3000))
def test_honest_files_of_any_header_length_are_accepted(pad):
    """The header length is parsed before any pickle diagnosis: an honest file whose header
    length starts with byte 0x80 (e.g. 128, 384, ...) must load."""
    t = {"w": np.zeros((2, 3), dtype=np.float32)}
    from safetensors.numpy import save

    data = save(t, metadata={"format": "x" * pad})
    out = verify_tensors(data, {"w": ((2, 3), "F32")})
    assert np.array_equal(out["w"], t["w"])


def test_header_length_128_regression():
    from safetensors.numpy import save

    for pad in range(1, 400):
        data = save({"w": np.ones(1, dtype=np.float32)}, metadata={"format": "x" * pad})
        if data[0] == 0x80:
            parse_header(data)
            break
    else:  # pragma: no cover
        pytest.fail("no header length with low byte 0x80 produced")


def test_truncated_and_garbage(toy_schema):
    spec = _spec(toy_schema)
    w = tensors_to_bytes(decoder_tensors(build_decoder(spec)), "dp-vae/1")
    for bad, msg in [
        (w[:-10], "truncated"),
        (w[:5], "truncated"),
        (w + b"xx", "truncated or padded"),
        (struct.pack("<Q", 10**12) + b"{}", "not a safetensors"),
        (struct.pack("<Q", 4) + b"abcd", "not JSON"),
    ]:
        with pytest.raises(ArtifactError, match=msg):
            verify_tensors(bad, _expected(spec))


def test_wrong_shapes_names_dtype_nan(toy_schema):
    spec = _spec(toy_schema)
    sd = decoder_tensors(build_decoder(spec))
    other = VAEConfig(hidden=(9,), latent_dim=3).decoder_spec(TableEncoder(toy_schema).layout())
    with pytest.raises(ArtifactError, match="shape"):
        verify_tensors(tensors_to_bytes(decoder_tensors(build_decoder(other)), "dp-vae/1"), _expected(spec))
    with pytest.raises(ArtifactError, match="names"):
        verify_tensors(tensors_to_bytes({"x." + k: v for k, v in sd.items()}, "dp-vae/1"), _expected(spec))
    with pytest.raises(ArtifactError, match="dtype"):
        verify_tensors(
            tensors_to_bytes({k: v.astype(np.float64) for k, v in sd.items()}, "x"), _expected(spec)
        )
    nan = {k: v.copy() for k, v in sd.items()}
    next(iter(nan.values())).reshape(-1)[0] = np.nan
    with pytest.raises(ArtifactError, match="NaN"):
        verify_tensors(tensors_to_bytes(nan, "x"), _expected(spec))


def test_finite_weights_that_decode_to_nan_are_refused(toy_schema):
    g = _gen(toy_schema)
    with torch.no_grad():
        for p in g.decoder.parameters():
            p.fill_(1e30)
    card_b, _ = to_artifact(_gen(toy_schema))
    w = tensors_to_bytes(g.tensors(), "dp-vae/1")
    card = GeneratorCard.from_json(card_b).replace(weights_sha256=__import__("hashlib").sha256(w).hexdigest())
    from_artifact(card, w, toy_schema)  # structurally fine ...
    with pytest.raises(ArtifactError, match=r"not finite|invalid"):
        from_artifact(card, w, toy_schema, check=True)  # ... but its output is not


def test_tampered_weights_detected(toy_schema, tmp_path):
    write_generator_set(tmp_path / "s", toy_schema, [_gen(toy_schema)])
    other = tensors_to_bytes(decoder_tensors(build_decoder(_spec(toy_schema))), "dp-vae/1")
    (tmp_path / "s" / "gen-0.safetensors").write_bytes(other)
    with pytest.raises(ArtifactError, match="sha256"):
        read_generator_set(tmp_path / "s")


def test_schema_mismatch_and_bad_cards(toy_schema, tmp_path):
    g = _gen(toy_schema)
    d = g.card.to_dict()
    with pytest.raises(ArtifactError, match="epsilon"):
        GeneratorCard.from_json(json.dumps({**d, "privacy": {**d["privacy"], "epsilon": -1.0}}))
    with pytest.raises(ArtifactError, match="format"):
        GeneratorCard.from_json(json.dumps({"format": "x"}))
    with pytest.raises(ArtifactError, match="JSON"):
        GeneratorCard.from_json(b"\x80\x04garbage")
    with pytest.raises(ArtifactError, match=r"out-of-range|digits"):
        GeneratorCard.from_json(json.dumps(d).replace('"steps": 100', '"steps": ' + "9" * 400))
    with pytest.raises(ArtifactError, match=r"surrogate|Unicode"):
        GeneratorCard.from_json(json.dumps({**d, "class_label": "\ud800"}))
    with pytest.raises(ArtifactError, match="NUL"):
        GeneratorCard.from_json(json.dumps({**d, "class_label": "a\x00b"}))
    write_generator_set(tmp_path / "s", toy_schema, [_gen(toy_schema, schema_hash="0" * 64)])
    with pytest.raises(ArtifactError, match="schema hash"):
        read_generator_set(tmp_path / "s")


def test_card_of_one_family_with_another_spec_is_refused(toy_schema):
    g = _gen(toy_schema)
    card_b, w = to_artifact(g)
    bad = GeneratorCard.from_json(card_b).replace(spec={"kind": "something-else", "bins": 8})
    with pytest.raises(ArtifactError, match="spec"):
        from_artifact(bad, w, toy_schema)
    joint = GeneratorCard.from_json(card_b).replace(class_label=None)
    with pytest.raises(ArtifactError, match="per class"):
        from_artifact(joint, w, toy_schema)
    with pytest.raises(ArtifactError, match="not accepted"):
        from_artifact(card_b, w, toy_schema, required={"pgm/1": {}})


def test_writer_never_overwrites(toy_schema, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not empty"):
        write_generator_set(tmp_path / "s", toy_schema, [_gen(toy_schema)])
    assert (tmp_path / "s" / "keep.txt").read_text() == "mine"
    # a failure mid-write leaves nothing behind
    with pytest.raises(ArtifactError):
        write_generator_set(tmp_path / "t", toy_schema, [_gen(toy_schema, weights_sha256="0" * 64)])
    assert not (tmp_path / "t").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_spec_bounds(toy_schema):
    with pytest.raises(SpecError):
        DecoderSpec(latent_dim=10**6, hidden=(8,), layout=(("a", "continuous", 1),))
    with pytest.raises(SpecError):
        DecoderSpec(latent_dim=4, hidden=(8,), layout=(("a", "continuous", 2),))
    with pytest.raises(SpecError, match="layout"):
        VAE.spec_from_dict(
            {**_spec(toy_schema).to_dict(), "layout": [{"name": "a", "kind": "continuous", "width": 1}]},
            toy_schema,
        )


@pytest.mark.parametrize(
    "header",
    [
        {"w": 5},
        {"w": {"data_offsets": [0, 1e999]}},
        {"w": {"dtype": "F32", "shape": "x", "data_offsets": [0, 0]}},
        {"w": {"data_offsets": "ab"}},
        {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 10**30]}},
        [1, 2],
    ],
)
def test_hostile_headers_get_artifact_errors(toy_schema, header):
    raw = json.dumps(header).encode()
    with pytest.raises(ArtifactError):
        verify_tensors(struct.pack("<Q", len(raw)) + raw, _expected(_spec(toy_schema)))


def test_deeply_nested_card_is_an_artifact_error():
    with pytest.raises(ArtifactError):
        GeneratorCard.from_json("[" * 30_000 + "]" * 30_000)  # under the size cap: the parser recursion
