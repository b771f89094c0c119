"""Every family through a real hub: push, pull, a mixed pool; family-level refusals store nothing.

One SQLite hub process on 127.0.0.1, one federation accepting all four families, silos training
each family on a small table (fast configs; the privacy accounting is the real one)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from fedsynth.artifacts.card import GeneratorCard, sha256_bytes
from fedsynth.artifacts.safetensors import tensors_to_bytes
from fedsynth.exchange.client import HubAdmin, HubClient, HubError
from fedsynth.exchange.process import RunningHub
from fedsynth.generators.base import GeneratorSet, get_family
from fedsynth.generators.diffusion.family import DiffusionConfig
from fedsynth.generators.gan.family import GANConfig
from fedsynth.generators.io import to_artifact
from fedsynth.generators.pgm.family import PGMConfig
from fedsynth.generators.pool import GeneratorPool
from fedsynth.generators.vae.train import VAEConfig
from fedsynth.privacy.target import PrivacyTarget
from tests.conftest import make_toy

CONFIGS = {
    "dp-vae/1": VAEConfig(hidden=(16,), latent_dim=2, epochs=2, min_steps=10, max_steps=20),
    "dp-gan/1": GANConfig(noise_dim=8, hidden=(16,), d_steps=30),
    "pgm/1": PGMConfig(bins=4, rounds=2, iters=50, round_iters=20),
    "dp-diffusion/1": DiffusionConfig(
        hidden=(16,), epochs=1, min_steps=10, max_steps=10, batch_size=64, t_per_record=2
    ),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from fedsynth.data.schema import Column, Schema
    from tests.conftest_hub import start_hub

    s = Schema(
        (
            Column("age", "continuous", lower=18, upper=90, integer=True),
            Column("income", "continuous", lower=0.0, upper=200.0),
            Column("color", "categorical", categories=("red", "green", "blue")),
            Column("label", "categorical", categories=("no", "yes")),
        ),
        target="label",
    )
    for hub in start_hub("sqlite", tmp_path_factory.mktemp("hubfam")):
        adm = HubAdmin(hub.url, hub.admin_token)
        fams = {k: get_family(k).spec_for(s, cfg).to_dict() for k, cfg in CONFIGS.items()}
        adm.create_federation("mix", s, fams, max_epsilon=1.5, max_delta=1e-2, silo_epsilon_budget=30.0)
        adm.create_federation("vae-only", s, {"dp-vae/1": fams["dp-vae/1"]}, max_epsilon=1.5, max_delta=1e-2,
                              silo_epsilon_budget=30.0)  # fmt: skip
        yield {"hub": hub, "admin": adm, "schema": s, "silo": adm.add_silo("mix", "one"),
               "other": adm.add_silo("vae-only", "two")}  # fmt: skip


def _fit(kind: str, s, seed: int = 0) -> GeneratorSet:
    return get_family(kind).fit(make_toy(300, seed=seed), s, PrivacyTarget(1.0), CONFIGS[kind], seed=seed)


def test_each_family_pushes_and_pulls_into_one_mixed_pool(env: dict) -> None:
    hub: RunningHub = env["hub"]
    s = env["schema"]
    cli = HubClient(hub.url, env["silo"])
    req = cli.subscribe()
    assert set(req.families) == set(CONFIGS)
    sent = {}
    for kind in CONFIGS:
        gs = _fit(kind, s)
        res = cli.push(gs)
        assert res.generators == len(gs.generators) and res.epsilon == pytest.approx(gs.epsilon)
        sent[kind] = gs
    pool = cli.list_pool()
    assert {e.family for e in pool} == set(CONFIGS)
    assert {e.class_label for e in pool if e.family != "dp-vae/1"} == {None}  # joint models
    pulled = cli.pull()
    for g in pulled:  # bit-identical tensors arrive for every family
        ref = {x.card.weights_sha256: x for gs in sent.values() for x in gs.generators}[g.card.weights_sha256]
        assert all(np.array_equal(v, ref.tensors()[k]) for k, v in g.tensors().items())
    df = GeneratorPool(s, pulled).sample(2000, seed=0)
    assert abs((df["label"] == "yes").mean() - 0.5) < 0.05 and set(df.columns) == {
        "age",
        "income",
        "color",
        "label",
    }
    cli.subscribe()
    # the ledger: each push is one set; the four add up
    assert cli.epsilon_spent == pytest.approx(sum(gs.epsilon for gs in sent.values()))


def _push_raw(cli: HubClient, card: bytes, w: bytes) -> HubError:
    with pytest.raises(HubError) as e:
        cli.push_raw(
            [
                ("cards", ("c.json", card, "application/json")),
                ("weights", ("w", w, "application/octet-stream")),
            ]
        )
    return e.value


def test_family_refusals_store_nothing(env: dict) -> None:
    hub: RunningHub = env["hub"]
    s = env["schema"]
    cli = HubClient(hub.url, env["other"])  # a vae-only federation
    before = (len(cli.list_pool()), cli.subscribe() and cli.epsilon_spent)
    pgm = _fit("pgm/1", s, seed=3).generators[0]
    card_b, w = to_artifact(pgm)
    err = _push_raw(cli, card_b, w)
    assert err.status == 422 and "not accepted" in err.detail and "dp-vae/1" in err.detail
    d = json.loads(card_b)
    # an unknown family: the refusal names the accepted ones
    err = _push_raw(cli, json.dumps({**d, "family": "my-gan/7"}).encode(), w)
    assert (
        err.status == 422 and "unknown generator family 'my-gan/7'" in err.detail and "dp-vae/1" in err.detail
    )
    # a vae card carrying the pgm spec
    vae = _fit("dp-vae/1", s, seed=4).generators[0]
    vcard, vw = to_artifact(vae)
    err = _push_raw(cli, json.dumps({**json.loads(vcard), "spec": d["spec"]}).encode(), vw)
    assert err.status == 422 and "spec" in err.detail
    # tensors that do not match the family's spec
    t = vae.tensors()
    k0 = next(iter(t))
    bad = tensors_to_bytes(
        {**t, k0: np.zeros((t[k0].shape[0] + 1, *t[k0].shape[1:]), np.float32)}, "dp-vae/1"
    )
    err = _push_raw(cli, json.dumps({**json.loads(vcard), "weights_sha256": sha256_bytes(bad)}).encode(), bad)
    assert err.status == 422 and "shape" in err.detail
    after = (len(cli.list_pool()), cli.subscribe() and cli.epsilon_spent)
    assert after == before


def test_pgm_artifacts_with_unknown_attributes_or_cells_refused(env: dict) -> None:
    cli = HubClient(env["hub"].url, env["silo"])
    n0 = len(cli.list_pool())
    g = _fit("pgm/1", env["schema"], seed=5).generators[0]
    card_b, w = to_artifact(g)
    d = json.loads(card_b)
    cl = d["structure"]["cliques"]
    renamed = {
        **d,
        "structure": {
            **d["structure"],
            "cliques": [[("zip" if a == cl[0][0] else a) for a in cl[0]], *cl[1:]],
        },
    }
    err = _push_raw(cli, json.dumps(renamed).encode(), w)
    assert err.status == 422 and "zip" in err.detail
    # out-of-domain cells: a potential with one more cell than the public domain has
    t = g.tensors()
    k0 = next(iter(t))
    grown = np.concatenate([t[k0], t[k0][:1]], axis=0)
    bad = tensors_to_bytes({**t, k0: grown}, "pgm/1")
    err = _push_raw(cli, json.dumps({**d, "weights_sha256": sha256_bytes(bad)}).encode(), bad)
    assert err.status == 422 and "shape" in err.detail
    assert len(cli.list_pool()) == n0
    assert GeneratorCard.from_json(card_b).family == "pgm/1"


def test_legacy_hub_requirements_and_pool_entries_parse(env: dict) -> None:
    """Requirements with a bare decoder_spec (hubs before families) mean dp-vae only."""
    from fedsynth.exchange.client import PoolEntry
    from fedsynth.exchange.protocol import Requirements

    r = Requirements.from_dict({**env["admin"].federations()[0].to_dict()})
    legacy = {k: v for k, v in r.to_dict().items() if k != "families"}
    legacy["decoder_spec"] = r.families["dp-vae/1"]
    assert list(Requirements.from_dict(legacy).families) == ["dp-vae/1"]
    e = PoolEntry.from_dict({"id": 1, "silo": "s", "class_label": "no", "epsilon": 1.0, "delta": 1e-5,
                             "accountant": "rdp", "created": "", "size": 3, "weights_sha256": "0" * 64,
                             "card_sha256": "0" * 64, "push_id": 1})  # fmt: skip
    assert e.family == "dp-vae/1"
