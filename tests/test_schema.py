from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.data.schema import (
    Schema,
    SchemaError,
    check_training_target,
    infer_schema,
    load_schema,
    validate_frame,
)


def test_round_trip_and_hash_stable(toy_schema, tmp_path):
    p = tmp_path / "s.json"
    p.write_text(toy_schema.to_json())
    s2 = load_schema(p)
    assert s2 == toy_schema and s2.hash() == toy_schema.hash()
    # the hash covers the encoding, not how the schema was obtained
    assert toy_schema.with_source("inferred").hash() == toy_schema.hash()


def test_yaml_schema(toy_schema, tmp_path):
    import yaml

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(toy_schema.to_dict()))
    assert load_schema(p).hash() == toy_schema.hash()


def test_validate_clean_frame(toy_schema, toy_frame):
    out = validate_frame(toy_frame, toy_schema)
    assert list(out.columns) == ["age", "income", "color", "label"]
    assert out["income"].between(0, 200).all()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns=["label"]), "missing target column"),
        (lambda d: d.assign(income=d["income"].where(d.index != 3, np.nan)), "missing values"),
        (lambda d: d.assign(color=d["color"].where(d.index != 5, "purple")), "not in the schema"),
        (lambda d: d.assign(income=d["income"].astype(object).where(d.index != 7, "abc")), "non-numeric"),
    ],
)
def test_bad_input_is_named(toy_schema, toy_frame, mutate, message):
    with pytest.raises(SchemaError, match=message):
        validate_frame(mutate(toy_frame.copy()), toy_schema)


def test_single_class_target_refused(toy_schema, toy_frame):
    one = validate_frame(toy_frame[toy_frame.label == "no"], toy_schema)
    with pytest.raises(SchemaError, match="single class"):
        check_training_target(one, toy_schema)


def test_schema_rejects_single_class_target():
    with pytest.raises(SchemaError, match="only one class"):
        Schema.from_dict(
            {
                "target": "y",
                "columns": [
                    {"name": "x", "kind": "continuous", "lower": 0, "upper": 1},
                    {"name": "y", "kind": "categorical", "categories": ["a"]},
                ],
            }
        )


def test_infer_flags_private_source(toy_frame):
    s = infer_schema(toy_frame, "label")
    assert s.source == "inferred"
    assert s.column("income").kind == "continuous" and s.column("color").categories == (
        "blue",
        "green",
        "red",
    )
    with pytest.raises(SchemaError, match="target column"):
        infer_schema(toy_frame, "nope")


def test_bad_schema_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"columns": [], "target": "y"}))
    with pytest.raises(SchemaError):
        load_schema(p)
    p.write_text("{not json")
    with pytest.raises(SchemaError, match="cannot parse"):
        load_schema(p)


def test_numeric_categories_are_stringified():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    s = infer_schema(df, "y")
    assert s.classes == ("0", "1")
    assert validate_frame(df, s)["y"].tolist() == ["0", "1", "0", "1"]
