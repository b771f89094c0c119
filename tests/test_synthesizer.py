"""The one-obvious-entry-point API: create → fit → sample, privacy readable, save / load."""

from __future__ import annotations

import pandas as pd
import pytest

from fedsynth import Synthesizer
from fedsynth.generators.synthesizer import PrivateSchemaWarning


def test_fit_sample_privacy_save_load(toy_frame, toy_schema, tmp_path):
    syn = Synthesizer.create("vae", epsilon=1.0, hidden=(16,), latent_dim=2, epochs=2, max_steps=20).fit(
        toy_frame, toy_schema
    )
    df = syn.sample(500, seed=1)
    assert isinstance(df, pd.DataFrame) and len(df) == 500 and set(df.columns) == set(toy_frame.columns)
    p = syn.privacy
    assert 0 < p.epsilon <= 1.0 and len(p.claims) == 2 and p.verify() <= 1.0 + 1e-9
    syn.save(tmp_path / "g")
    again = Synthesizer.load(tmp_path / "g")
    assert again.sample(500, seed=1).equals(df)


def test_schema_optional_with_a_loud_warning(toy_frame):
    with pytest.warns(PrivateSchemaWarning, match="INFERRED FROM THE PRIVATE DATA"):
        syn = Synthesizer.create("vae", epochs=1, max_steps=10).fit(toy_frame, target="label")
    assert syn.schema is not None and syn.schema.source == "inferred"
    with pytest.raises(ValueError, match="target"):
        Synthesizer.create("vae").fit(toy_frame)


def test_bad_parameters_rejected_at_the_boundary(toy_frame, toy_schema):
    with pytest.raises(TypeError, match="unknown dp-vae/1 setting"):
        Synthesizer.create("vae", epoch=3)
    with pytest.raises(ValueError, match="epsilon"):
        Synthesizer.create("vae", epsilon=-1)
    with pytest.raises(Exception, match="unknown generator family"):
        Synthesizer.create("nope")
    with pytest.raises(TypeError, match="DataFrame"):
        Synthesizer.create("vae").fit([1, 2], toy_schema)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="fit"):
        Synthesizer.create("vae").sample(3)
