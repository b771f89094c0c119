from __future__ import annotations

import numpy as np
import pytest

from fedsynth.data.encoders import TableEncoder, encode_target
from fedsynth.data.partition import PartitionError, dirichlet_label_skew, equal_shares, iid, parse_split


def test_encoder_round_trip(toy_schema, toy_frame):
    enc = TableEncoder(toy_schema)
    x = enc.transform(toy_frame)
    assert x.shape == (len(toy_frame), 1 + 1 + 3) and x.dtype == np.float32
    assert ((x >= 0) & (x <= 1)).all()
    assert np.allclose(x[:, 2:].sum(axis=1), 1.0)
    back = enc.inverse_transform(x, sample_categories=False)
    assert (back["color"] == toy_frame["color"]).all()
    assert np.allclose(back["income"], toy_frame["income"], atol=1e-4)
    assert (back["age"] == toy_frame["age"]).all()
    assert [b["width"] for b in enc.layout()] == [1, 1, 3]


def test_encode_target(toy_schema, toy_frame):
    y = encode_target(toy_frame["label"], toy_schema)
    assert set(np.unique(y)) == {0, 1}


def test_equal_shares_disjoint_and_sized():
    parts = equal_shares(1000, 20, 0.05, seed=1)
    assert all(len(p) == 50 for p in parts)
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx) == 1000
    assert not np.array_equal(parts[0], equal_shares(1000, 20, 0.05, seed=2)[0])


def test_iid_covers_everything():
    parts = iid(103, 10, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))


def test_dirichlet_skew_is_skewed_and_seeded():
    labels = np.repeat([0, 1, 2], 400)
    a = dirichlet_label_skew(labels, 10, beta=0.1, seed=3)
    b = dirichlet_label_skew(labels, 10, beta=0.1, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(1200))
    # strong skew: most clients are dominated by one class
    dominant = [np.bincount(labels[p], minlength=3).max() / len(p) for p in a]
    assert np.median(dominant) > 0.7
    iid_like = dirichlet_label_skew(labels, 10, beta=1000.0, seed=3)
    assert max(np.bincount(labels[p], minlength=3).max() / len(p) for p in iid_like) < 0.5


def test_partition_errors():
    with pytest.raises(PartitionError, match="rows"):
        iid(5, 10)
    with pytest.raises(PartitionError):
        equal_shares(100, 20, 0.1)
    with pytest.raises(PartitionError, match="beta"):
        dirichlet_label_skew(np.zeros(10), 2, beta=0)
    assert parse_split("label-skew:0.3") == ("label-skew", 0.3)
    with pytest.raises(PartitionError):
        parse_split("weird")


def test_sgde_experiment_label_skew_split():
    """The SGDE experiment accepts a Dirichlet label-skew split (tiny, non-DP-quality run)."""
    from fedsynth.data.datasets import load_dataset
    from fedsynth.evaluation.sgde_experiment import SGDEConfig, run_seed
    from fedsynth.generators.vae.train import VAEConfig

    b = load_dataset("breast_cancer_sklearn")
    cfg = SGDEConfig(
        silos=3,
        split="label-skew:1.0",
        synthetic_rows=200,
        cv_folds=3,
        eval_silos=1,
        gen_config=VAEConfig(hidden=(8,), latent_dim=2, max_steps=20, min_steps=5),
    )
    res = run_seed(b, cfg, seed=0)
    assert res["generators"] >= 2 and res["epsilon_spent_max"] <= 1.0
    assert 0 <= res["scenarios"]["local"]["test_eval"]["auc"] <= 100
