"""Image federations through a real hub: push, pull and sample images; image artifacts refused by
a tabular federation and bad image input refused at the silo, nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from fedsynth.data.images import image_schema, to_frame, to_images
from fedsynth.data.schema import Column, Schema, SchemaError
from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.generators.base import GeneratorSet, TooFewRowsError, get_family
from fedsynth.generators.conv_vae.train import ConvVAEConfig
from fedsynth.generators.io import to_artifact
from fedsynth.generators.pool import GeneratorPool
from fedsynth.privacy.target import PrivacyTarget

SHAPE = (1, 8, 8)
TINY = ConvVAEConfig(
    latent_dim=4, channels=(8, 4), groups=2, epochs=2, batch_size=16, min_steps=6, max_steps=12, lr=1e-2
)


def images(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(2):
        x = rng.integers(0, 60, size=(n_per_class, *SHAPE))
        x[:, :, (slice(0, 4) if c == 0 else slice(4, 8))] += 180
        xs.append(np.clip(x, 0, 255).astype(np.uint8))
        ys += [str(c)] * n_per_class
    return np.concatenate(xs), np.array(ys)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from tests.conftest_hub import start_hub

    img = image_schema(SHAPE, ("0", "1"))
    tab = Schema(
        (Column("a", "continuous", lower=0.0, upper=1.0), Column("y", "categorical", categories=("0", "1"))),
        target="y",
    )
    for hub in start_hub("sqlite", tmp_path_factory.mktemp("hubimg")):
        adm = HubAdmin(hub.url, hub.admin_token)
        fam = get_family("conv-vae")
        adm.create_federation(
            "images", img, {fam.kind: fam.spec_for(img, TINY).to_dict()}, max_epsilon=1.5, max_delta=1e-2,
            silo_epsilon_budget=10.0,
        )  # fmt: skip
        vae = get_family("vae")
        adm.create_federation(
            "table", tab, {vae.kind: vae.spec_for(tab, None).to_dict()}, max_epsilon=1.5, max_delta=1e-2,
            silo_epsilon_budget=10.0,
        )  # fmt: skip
        yield {
            "hub": hub,
            "img": img,
            "tab": tab,
            "silo": adm.add_silo("images", "lab"),
            "tsilo": adm.add_silo("table", "bank"),
        }


def fit(s: Schema, n: int = 80, seed: int = 0, strict: bool = False) -> GeneratorSet:
    x, y = images(n, seed)
    return get_family("conv-vae").fit(
        to_frame(x, y, s), s, PrivacyTarget(1.5, 1e-3), TINY, seed=seed, strict=strict
    )


def test_image_federation_push_pull_sample(env: dict) -> None:
    s = env["img"]
    cli = HubClient(env["hub"].url, env["silo"])
    req = cli.subscribe()
    assert req.schema.image == SHAPE and req.schema.hash() == s.hash()
    gs = fit(s)
    res = cli.push(gs)
    assert res.generators == 2 and res.epsilon <= 1.5
    pulled = cli.pull()
    assert {g.card.class_label for g in pulled} == {"0", "1"}
    x, labels = to_images(GeneratorPool(s, pulled).sample(50, seed=0), s)
    assert x.shape == (50, *SHAPE) and x.dtype == np.uint8 and set(labels) <= {"0", "1"}


def test_image_artifact_refused_by_a_tabular_federation(env: dict) -> None:
    tcli = HubClient(env["hub"].url, env["tsilo"])
    before = (len(tcli.list_pool()), tcli.subscribe() and tcli.epsilon_spent)
    g = fit(env["img"], seed=1).generators[0]
    card_b, w = to_artifact(g)
    with pytest.raises(HubError) as e:
        tcli.push_raw(
            [
                ("cards", ("c.json", card_b, "application/json")),
                ("weights", ("w", w, "application/octet-stream")),
            ]
        )
    assert e.value.status == 422 and "not accepted" in e.value.detail
    # even if the tabular federation accepted the family, the image spec does not fit a table
    d = json.loads(card_b)
    with pytest.raises(Exception, match="image schema"):
        get_family("conv-vae").spec_from_dict(d["spec"], env["tab"])
    assert (len(tcli.list_pool()), tcli.subscribe() and tcli.epsilon_spent) == before


def test_bad_image_input_at_the_silo(env: dict) -> None:
    s = env["img"]
    x, y = images(40)
    df = to_frame(x, y, s).astype({"px_3": float})
    df.loc[0, "px_3"] = 300.0  # not an 8-bit pixel
    with pytest.raises(SchemaError, match=r"0\.\.255"):
        get_family("conv-vae").fit(df, s, PrivacyTarget(1.5, 1e-3), TINY)
    with pytest.raises(SchemaError, match="shape"):
        to_frame(np.zeros((4, 1, 8, 4), dtype=np.uint8), ["0"] * 4, s)
    # a class with too few images for DP training: skipped with a message, or refused (strict)
    xs, ys = images(80)
    keep = np.r_[np.arange(80), np.arange(80, 85)]  # class "1" keeps 5 images
    frame = to_frame(xs[keep], ys[keep], s)
    gs = get_family("conv-vae").fit(frame, s, PrivacyTarget(1.5, 1e-3), TINY)
    assert [c.class_label for c in gs.cards] == ["0"] and gs.skipped and "1" in gs.skipped[0]
    with pytest.raises(TooFewRowsError):
        get_family("conv-vae").fit(frame, s, PrivacyTarget(1.5, 1e-3), TINY, strict=True)
