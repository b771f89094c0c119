"""The (ε, δ) of a DP-estimated schema: recorded on the schema, chosen from public facts only,
carried on every card of the silo that spent it (and only there), and summed into its totals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.artifacts.card import ArtifactError, GeneratorCard, SchemaPrivacy
from fedsynth.data.dp_schema import dp_schema, total_delta, total_epsilon
from fedsynth.data.schema import Schema, SchemaError, validate_frame
from fedsynth.generators.base import schema_privacy_of
from tests.conftest_hub import make_set, tiny_schema, tiny_spec


# ---------------------------------------------------------------- schema
def test_schema_round_trip_with_dp_delta_and_hash_unchanged() -> None:
    s = tiny_schema()
    d = s.with_source("dp", 0.5, 1e-7)
    back = Schema.from_dict(json.loads(d.to_json()))
    assert back == d and back.dp_epsilon == 0.5 and back.dp_delta == 1e-7
    assert d.hash() == s.hash()  # how a schema was obtained is not part of its hash
    # a schema without δ writes no dp_delta key: older schema JSON stays byte-identical
    assert "dp_delta" not in s.to_dict() and "dp_delta" not in s.with_source("dp", 0.5).to_dict()


@pytest.mark.parametrize(
    ("source", "eps", "delta", "message"),
    [
        ("declared", 0.5, 0.0, "set source to 'dp'"),
        ("inferred", 0.5, 0.0, "set source to 'dp'"),
        ("declared", 0.0, 1e-6, "set source to 'dp'"),
        ("dp", 0.0, 0.0, "dp_epsilon > 0"),
        ("dp", 0.5, 1.0, "dp_delta must be < 1"),
        ("dp", 0.5, -1e-9, "dp_delta.*finite number"),
        ("dp", float("inf"), 0.0, "dp_epsilon.*finite number"),
        ("bogus", 0.0, 0.0, "schema.source must be one of"),
    ],
)
def test_schema_source_and_dp_cost_rule(source: str, eps: float, delta: float, message: str) -> None:
    d = tiny_schema().to_dict()
    d.update(source=source, dp_epsilon=eps, dp_delta=delta)
    with pytest.raises(SchemaError, match=message):
        Schema.from_dict(d)
    with pytest.raises(SchemaError, match=message):
        Schema(tiny_schema().columns, "y", source=source, dp_epsilon=eps, dp_delta=delta)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, "0.1", None, [0.1]])
def test_schema_dp_delta_must_be_a_number(bad: object) -> None:
    d = tiny_schema().with_source("dp", 0.5).to_dict()
    d["dp_delta"] = bad
    with pytest.raises(SchemaError, match="dp_delta"):
        Schema.from_dict(d)


# ---------------------------------------------------------------- dp_schema: public facts only
def _frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "flag": rng.integers(0, 2, n),  # int64 0/1: numeric dtype
            "count_f": rng.integers(0, 50, n).astype(float),  # float dtype, integral values
            "count_i": rng.integers(0, 50, n),  # integer dtype
            "x": rng.normal(0, 1, n),
            "color": rng.choice(["red", "blue"], n),
            "label": rng.choice(["no", "yes"], n),
        }
    )


def test_dp_schema_kind_and_integer_come_from_dtypes_only() -> None:
    df = _frame()
    s = dp_schema(df, "label", ["no", "yes"], epsilon=5.0, delta=1e-6, public_range=(-100, 100), seed=0)
    # a numeric 0/1 column stays continuous unless declared (nunique is private)
    assert s.column("flag").kind == "continuous" and s.column("flag").integer
    # integral values in a float column do not make it integer (integrality is private)
    assert s.column("count_f").kind == "continuous" and not s.column("count_f").integer
    assert s.column("count_i").integer
    assert s.column("x").kind == "continuous" and not s.column("x").integer
    assert s.column("color").kind == "categorical"
    assert (s.source, s.dp_epsilon, s.dp_delta) == ("dp", 5.0, 1e-6)


def test_dp_schema_same_kinds_whatever_the_values() -> None:
    """Two tables with the same dtypes but different values (2 vs many distinct values, integral
    vs not) get the same column kinds and integer flags."""
    a = _frame(seed=1)
    b = a.copy()
    b["flag"] = np.arange(len(b)) % 7
    b["count_f"] = b["count_f"] + 0.5
    kinds = []
    for df in (a, b):
        s = dp_schema(df, "label", ["no", "yes"], epsilon=5.0, delta=1e-6, public_range=(-100, 100), seed=0)
        kinds.append([(c.name, c.kind, c.integer) for c in s.columns])
    assert kinds[0] == kinds[1]


def test_dp_schema_declared_categorical_numeric_column() -> None:
    df = _frame()
    s = dp_schema(
        df, "label", ["no", "yes"], epsilon=5.0, delta=1e-6, categorical=["flag"], public_range=(-100, 100)
    )
    assert s.column("flag").kind == "categorical" and s.column("flag").categories == ("0", "1")
    validate_frame(df[df["count_i"].between(s.column("count_i").lower, 1e9)], s)  # categories match
    with pytest.raises(SchemaError, match="not in the data"):
        dp_schema(df, "label", ["no", "yes"], epsilon=1.0, delta=1e-6, categorical=["nope"])


def test_total_epsilon_and_delta_compose() -> None:
    s = tiny_schema().with_source("dp", 0.5, 1e-7)
    assert total_epsilon(s, 1.0) == 1.5 and total_delta(s, 1e-6) == pytest.approx(1.1e-6)
    assert total_epsilon(tiny_schema(), 1.0) == 1.0 and total_delta(tiny_schema(), 1e-6) == 1e-6


# ---------------------------------------------------------------- cards
def _card() -> GeneratorCard:
    s = tiny_schema()
    return make_set(s, tiny_spec(s)).cards[0]


def test_card_without_schema_privacy_is_byte_identical() -> None:
    c = _card()
    assert c.schema_privacy is None
    assert "schema_privacy" not in c.to_json()
    # the JSON of a card built without the field equals the old layout exactly
    keys = [
        "class_label", "created", "family", "format", "library", "privacy", "schema_hash",
        "scope", "spec", "structure", "weights_sha256",
    ]  # fmt: skip
    assert sorted(json.loads(c.to_json())) == keys
    back = GeneratorCard.from_json(c.to_json())
    assert back == c and back.to_json() == c.to_json()
    assert c.total_epsilon == c.epsilon and c.total_delta == c.delta
    # stamping and un-stamping gives back the very same bytes
    stamped = c.replace(schema_privacy=SchemaPrivacy(0.5))
    assert stamped.to_json() != c.to_json()
    assert stamped.replace(schema_privacy=None).to_json() == c.to_json()


def test_card_round_trip_with_schema_privacy() -> None:
    c = _card().replace(schema_privacy=SchemaPrivacy(0.5, 1e-7))
    d = json.loads(c.to_json())
    assert d["schema_privacy"] == {"epsilon": 0.5, "delta": 1e-7}
    back = GeneratorCard.from_json(c.to_json())
    assert back == c and back.schema_privacy == SchemaPrivacy(0.5, 1e-7)
    assert back.total_epsilon == pytest.approx(c.epsilon + 0.5)
    assert back.total_delta == pytest.approx(c.delta + 1e-7)
    assert back.format == "fedsynth-generator/2"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"epsilon": 0, "delta": 0}', "must be > 0"),
        ('{"epsilon": -1, "delta": 0}', "must be > 0"),
        ('{"epsilon": 0.5, "delta": 1}', "in \\[0, 1\\)"),
        ('{"epsilon": 0.5, "delta": -0.1}', "in \\[0, 1\\)"),
        ('{"epsilon": true, "delta": 0}', "finite number"),
        ('{"epsilon": "0.5", "delta": 0}', "finite number"),
        ('{"epsilon": 0.5}', "needs both"),
        ('{"epsilon": 0.5, "delta": 0, "x": 1}', "unknown keys"),
        ("[0.5, 0]", "must be an object"),
        ('{"epsilon": Infinity, "delta": 0}', "epsilon"),
        ('{"epsilon": 1e400, "delta": 0}', "epsilon"),
        ('{"epsilon": ' + "9" * 400 + ', "delta": 0}', "epsilon"),
    ],
)
def test_card_schema_privacy_is_strict(raw: str, message: str) -> None:
    d = json.loads(_card().to_json())
    d["schema_privacy"] = "@@MARK@@"
    text = json.dumps(d).replace('"@@MARK@@"', raw)
    with pytest.raises(ArtifactError, match=message):
        GeneratorCard.from_json(text)


# ---------------------------------------------------------------- generator sets
def test_generator_set_with_schema_cost_stamps_cards_keeps_weights() -> None:
    s = tiny_schema().with_source("dp", 0.5, 1e-7)
    gs = make_set(s, tiny_spec(s), epsilon=1.0)
    shas = [c.weights_sha256 for c in gs.cards]
    assert gs.schema_cost == (0.0, 0.0) and gs.total_epsilon == gs.epsilon
    assert gs.with_schema_cost() is gs
    assert all(c.schema_privacy == SchemaPrivacy(0.5, 1e-7) for c in gs.cards)
    assert [c.weights_sha256 for c in gs.cards] == shas  # the tensors did not change
    assert gs.epsilon == pytest.approx(1.0)  # the generators' own cost
    assert gs.total_epsilon == pytest.approx(1.5) and gs.total_delta == pytest.approx(gs.delta + 1e-7)
    gs.with_schema_cost()  # idempotent
    assert gs.total_epsilon == pytest.approx(1.5)
    from fedsynth.generators.io import from_artifact, to_artifact

    for g in gs.generators:  # the stamped artifact still verifies (weights hash, spec, schema)
        card_b, w = to_artifact(g)
        from_artifact(GeneratorCard.from_json(card_b), w, s, check=True)


def test_with_schema_cost_is_a_no_op_for_a_declared_schema() -> None:
    s = tiny_schema()
    gs = make_set(s, tiny_spec(s)).with_schema_cost()
    assert all(c.schema_privacy is None for c in gs.cards)
    assert schema_privacy_of(s) is None
    assert schema_privacy_of(s.with_source("dp", 0.25)) == SchemaPrivacy(0.25, 0.0)
