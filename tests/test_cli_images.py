"""`fedsynth bench sgde --dataset mnist` end to end on a tiny stand-in for MNIST: the image path
of the CLI (families sharing baselines, JSON per family, bar chart and sample grid PNGs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.generators.conv_vae.train import ConvVAEConfig
from tests.test_image_experiment import tiny_data

runner = CliRunner()


@pytest.fixture
def tiny_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedsynth.cli.sgde as sgde
    import fedsynth.data.images as images

    monkeypatch.setattr(images, "load_images", lambda name: dataclasses.replace(tiny_data(), name=name))

    def tiny_config(family: Any, dataset: str | None, overrides: dict[str, Any] | None) -> Any:
        if family.name == "conv-vae":
            return ConvVAEConfig(latent_dim=2, channels=(4, 4), groups=2, epochs=1, batch_size=8,
                                 min_steps=4, max_steps=6)  # fmt: skip
        cfg = family.default_config("mnist")
        return dataclasses.replace(cfg, features=64, conv_filters=4, hidden=(8,), steps=5, batch_size=8)

    monkeypatch.setattr(sgde, "family_config", tiny_config)


def test_bench_sgde_images_two_families(tiny_mnist: None, tmp_path: Path) -> None:
    out = tmp_path / "img.json"
    r = runner.invoke(
        app,
        [
            "bench",
            "sgde",
            "--dataset",
            "mnist",
            "--generator",
            "conv-vae,fed-merf",
            "--silos",
            "4",
            "--seeds",
            "1",
            "--eval-silos",
            "1",
            "--per-class",
            "20",
            "--json",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "small CNN on the silo's own images" in r.output and "paper (Table I)" in r.output
    res = {}
    for name in ("conv-vae", "fed-merf"):
        p = tmp_path / f"img_{name}.json"
        res[name] = json.loads(p.read_text())
        assert p.with_suffix(".png").stat().st_size > 0
        assert (tmp_path / f"samples_{name}_mnist.png").stat().st_size > 0
        assert res[name]["epsilon_spent_max"] <= 1.5 and res[name]["epsilon_target"] == 1.5
    # the baselines do not depend on the generator: computed once, identical in both results
    for sc in ("local", "federated", "pooled_real"):
        assert res["conv-vae"]["scenarios"][sc] == res["fed-merf"]["scenarios"][sc]
    assert res["fed-merf"]["per_seed"][0]["scope"] == "federation"


def test_bench_sgde_images_refuses_tabular_options(tiny_mnist: None) -> None:
    r = runner.invoke(app, ["bench", "sgde", "--dataset", "mnist", "--hub"])
    assert r.exit_code != 0 and "in-process" in r.output
    r = runner.invoke(app, ["bench", "sgde", "--dataset", "mnist", "--device", "tpu"])
    assert r.exit_code != 0 and "--device" in r.output
