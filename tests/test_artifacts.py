from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

from fedsynth.artifacts.decoder import (
    ArtifactError,
    GeneratorCard,
    decoder_to_bytes,
    read_generator_set,
    sha256_bytes,
    verify_weights,
    write_generator_set,
)
from fedsynth.data.encoders import TableEncoder
from fedsynth.generators.nets import DecoderSpec, SpecError, build_decoder
from fedsynth.generators.vae import VAEConfig


def _spec(toy_schema) -> DecoderSpec:
    return VAEConfig(hidden=(8,), latent_dim=3).decoder_spec(TableEncoder(toy_schema).layout())


def _card(dec, toy_schema, cls="yes", **kw) -> GeneratorCard:
    d = {
        "spec": dec.spec.to_dict(),
        "schema_hash": toy_schema.hash(),
        "class_label": cls,
        "epsilon": 1.0,
        "delta": 1e-5,
        "accountant": "rdp",
        "weights_sha256": sha256_bytes(decoder_to_bytes(dec)),
    }
    d.update(kw)
    return GeneratorCard(**d)


def test_round_trip(toy_schema, tmp_path):
    dec = build_decoder(_spec(toy_schema))
    card = _card(dec, toy_schema)
    write_generator_set(tmp_path / "set", toy_schema, [(dec, card)])
    schema, loaded = read_generator_set(tmp_path / "set")
    assert schema.hash() == toy_schema.hash()
    z = torch.randn(4, 3)
    assert torch.allclose(loaded[0].decoder(z), dec(z))
    assert GeneratorCard.from_json(card.to_json()) == card


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fedsynth_pwned_artifact",))


def test_pickle_refused_and_never_executed(toy_schema):
    dec = build_decoder(_spec(toy_schema))
    Path("/tmp/fedsynth_pwned_artifact").unlink(missing_ok=True)
    for payload in (pickle.dumps(Boom()), pickle.dumps(Boom(), protocol=2)):
        with pytest.raises(ArtifactError, match="pickle"):
            verify_weights(payload, dec.spec)
    import io

    buf = io.BytesIO()
    torch.save(dec.state_dict(), buf)
    with pytest.raises(ArtifactError, match=r"pickle|zip"):
        verify_weights(buf.getvalue(), dec.spec)
    assert not Path("/tmp/fedsynth_pwned_artifact").exists()


def test_truncated_and_garbage(toy_schema):
    dec = build_decoder(_spec(toy_schema))
    w = decoder_to_bytes(dec)
    for bad, msg in [
        (w[:-10], "truncated"),
        (w[:5], "truncated"),
        (w + b"xx", "truncated or padded"),
        (struct.pack("<Q", 10**12) + b"{}", "not a safetensors"),
        (struct.pack("<Q", 4) + b"abcd", "not JSON"),
    ]:
        with pytest.raises(ArtifactError, match=msg):
            verify_weights(bad, dec.spec)


def test_wrong_shapes_names_dtype_nan(toy_schema):
    from safetensors.torch import save

    spec = _spec(toy_schema)
    dec = build_decoder(spec)
    sd = {k: v.clone() for k, v in dec.state_dict().items()}
    other = build_decoder(
        VAEConfig(hidden=(9,), latent_dim=3).decoder_spec(TableEncoder(toy_schema).layout())
    )
    with pytest.raises(ArtifactError, match="shape"):
        verify_weights(decoder_to_bytes(other), spec)
    renamed = {("x." + k): v for k, v in sd.items()}
    with pytest.raises(ArtifactError, match="names"):
        verify_weights(save(renamed), spec)
    with pytest.raises(ArtifactError, match="dtype"):
        verify_weights(save({k: v.double() for k, v in sd.items()}), spec)
    nan = dict(sd)
    k0 = next(iter(nan))
    nan[k0] = nan[k0].clone()
    nan[k0].view(-1)[0] = float("nan")
    with pytest.raises(ArtifactError, match="NaN"):
        verify_weights(save(nan), spec)


def test_tampered_weights_detected(toy_schema, tmp_path):
    dec = build_decoder(_spec(toy_schema))
    write_generator_set(tmp_path / "s", toy_schema, [(dec, _card(dec, toy_schema))])
    other = build_decoder(dec.spec)
    (tmp_path / "s" / "class-0.safetensors").write_bytes(decoder_to_bytes(other))
    with pytest.raises(ArtifactError, match="sha256"):
        read_generator_set(tmp_path / "s")


def test_schema_mismatch_and_bad_cards(toy_schema, tmp_path):
    dec = build_decoder(_spec(toy_schema))
    with pytest.raises(ArtifactError, match="epsilon"):
        GeneratorCard.from_json(_card(dec, toy_schema, epsilon=-1.0).to_json())
    with pytest.raises(ArtifactError, match="format"):
        GeneratorCard.from_json(json.dumps({"format": "x"}))
    with pytest.raises(ArtifactError, match="JSON"):
        GeneratorCard.from_json(b"\x80\x04garbage")
    write_generator_set(tmp_path / "s", toy_schema, [(dec, _card(dec, toy_schema, schema_hash="0" * 64))])
    with pytest.raises(ArtifactError, match="schema hash"):
        read_generator_set(tmp_path / "s")


def test_writer_never_overwrites(toy_schema, tmp_path):
    dec = build_decoder(_spec(toy_schema))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not empty"):
        write_generator_set(tmp_path / "s", toy_schema, [(dec, _card(dec, toy_schema))])
    assert (tmp_path / "s" / "keep.txt").read_text() == "mine"
    # a failure mid-write leaves nothing behind
    with pytest.raises(ArtifactError):
        write_generator_set(
            tmp_path / "t", toy_schema, [(dec, _card(dec, toy_schema, weights_sha256="0" * 64))]
        )
    assert not (tmp_path / "t").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_spec_bounds():
    with pytest.raises(SpecError):
        DecoderSpec(latent_dim=10**6, hidden=(8,), layout=(("a", "continuous", 1),))
    with pytest.raises(SpecError):
        DecoderSpec(latent_dim=4, hidden=(8,), layout=(("a", "continuous", 2),))


@pytest.mark.parametrize(
    "header",
    [
        {"w": 5},
        {"w": {"data_offsets": [0, 1e999]}},
        {"w": {"dtype": "F32", "shape": "x", "data_offsets": [0, 0]}},
        {"w": {"data_offsets": "ab"}},
        [1, 2],
    ],
)
def test_hostile_headers_get_artifact_errors(toy_schema, header):
    spec = _spec(toy_schema)
    raw = json.dumps(header).encode()
    with pytest.raises(ArtifactError):
        verify_weights(struct.pack("<Q", len(raw)) + raw, spec)


def test_deeply_nested_card_is_an_artifact_error():
    with pytest.raises(ArtifactError):
        GeneratorCard.from_json("[" * 30_000 + "]" * 30_000)  # under the size cap: the parser recursion
