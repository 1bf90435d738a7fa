"""Schemas inferred from a profile, edited, kept in a file, and the anomalies validation
finds (each naming the column, the rule, what was expected and what was seen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.validation import (
    Schema,
    ValidationFailed,
    gate,
    infer_schema,
    load_schema,
    profile,
    validate,
)


def training(n: int = 1_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 50.0, n)
    amount[::20] = np.nan
    return pd.DataFrame(
        {
            "amount": amount,
            "items": rng.integers(1, 10, n),
            "category": rng.choice(["grocery", "travel", "online"], n),
            "flagged": rng.random(n) < 0.2,
        }
    )


def test_a_schema_is_inferred_from_a_profile() -> None:
    df = training()
    schema = infer_schema(profile(df))
    amount = schema["amount"]
    assert amount.type == "float"
    assert amount.min == df.amount.min() and amount.max == df.amount.max()
    assert amount.max_missing_rate == pytest.approx(0.05 * 1.5 + 0.01)  # seen, with slack
    assert schema["items"].max_missing_rate == 0.0  # never missing: required
    assert schema["category"].domain == ("grocery", "online", "travel")
    assert schema["flagged"].domain == ("false", "true")
    many = pd.DataFrame({"id": [f"u{i}" for i in range(100)]})
    assert infer_schema(profile(many))["id"].domain is None  # too many values for a domain


def test_data_like_the_training_data_has_no_anomaly() -> None:
    schema = infer_schema(profile(training()))
    report = validate(training(seed=0), schema)
    assert report.ok and report.anomalies == () and report.rows == 1_000
    assert gate(training(seed=0), schema).ok


def test_each_rule_is_reported_with_what_was_expected_and_seen() -> None:
    schema = infer_schema(profile(training()))
    new = training(seed=1)
    new.loc[:99, "category"] = "crypto"  # a category never seen
    new.loc[:299, "amount"] = np.nan  # 30% missing where at most 8.5% may be
    new["items"] = new["items"] * 100  # outside the range seen
    new["flagged"] = new["flagged"].astype(str)  # a type changed
    new["channel"] = "web"  # a column the schema does not know
    report = validate(new, schema)
    by_rule = {(a.column, a.rule): a for a in report.anomalies}
    assert set(by_rule) == {
        ("category", "domain"),
        ("amount", "missing_rate"),
        ("items", "range"),
        ("flagged", "type"),
        ("channel", "unexpected_column"),
    }
    domain = by_rule["category", "domain"]
    assert domain.severity == "error" and domain.count == 100
    assert "'crypto' x100" in domain.observed and "'grocery'" in domain.expected
    missing = by_rule["amount", "missing_rate"]
    assert missing.expected == "at most 8.50%" and missing.observed == "33.50% (335 of 1000)"
    items = by_rule["items", "range"]
    assert items.severity == "warning" and items.count == int((new["items"] > 9).sum())
    assert by_rule["flagged", "type"].expected == "bool"
    assert by_rule["flagged", "type"].observed == "string"
    assert by_rule["channel", "unexpected_column"].severity == "warning"
    assert not report.ok and [a.severity for a in report.anomalies][:3] == ["error"] * 3
    assert list(report.to_pandas().columns) == [
        "column",
        "rule",
        "expected",
        "observed",
        "severity",
        "count",
    ]
    assert "3 error(s), 2 warning(s) in 1000 rows" in str(report)
    with pytest.raises(
        ValidationFailed, match=r"new data failed validation with 3 error\(s\)"
    ) as caught:
        gate(new, schema, what="new data")
    assert caught.value.report == report
    gone = validate(training().drop(columns=["items"]), schema)
    assert [(a.column, a.rule, a.severity) for a in gone.anomalies] == [
        ("items", "missing_column", "error")
    ]
    strict = Schema(schema.columns, allow_extra_columns=False)
    unexpected = [a for a in validate(new, strict).anomalies if a.rule == "unexpected_column"]
    assert [(a.column, a.severity) for a in unexpected] == [("channel", "error")]


def test_a_schema_is_edited_and_kept_in_a_file(tmp_path: Path) -> None:
    schema = infer_schema(profile(training()))
    edited = (
        schema.with_column("amount", min=0.0, max=10_000.0)
        .with_column("category", domain=["grocery", "online", "travel", "crypto"])
        .with_column("channel", type="string", max_missing_rate=1.0)
        .without_column("flagged")
    )
    path = edited.save(tmp_path / "schema.json")
    assert load_schema(path) == edited
    assert '"max": 10000.0' in path.read_text()  # readable, to edit by hand
    new = training(seed=2)
    new.loc[:9, "category"] = "crypto"
    rules = {(a.column, a.rule) for a in validate(new, edited).anomalies}
    assert rules == {("channel", "missing_column"), ("flagged", "unexpected_column")}


def test_mistakes_are_named(tmp_path: Path) -> None:
    schema = infer_schema(profile(training(50)))
    with pytest.raises(InvalidInput, match="infer_schema takes a Profile"):
        infer_schema(training(50))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="validate takes a Schema; got dict"):
        validate(training(50), {"amount": "float"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="column 'amount': min 5 is above max 1"):
        schema.with_column("amount", min=5, max=1)
    with pytest.raises(InvalidInput, match="column 'x' is new: give its type= as well"):
        schema.with_column("x", min=1)
    with pytest.raises(InvalidInput, match="unknown type 'decimal'"):
        schema.with_column("x", type="decimal")
    with pytest.raises(InvalidInput, match=r"max_missing_rate must be a number in \[0, 1\]; got 2"):
        schema.with_column("amount", max_missing_rate=2)
    with pytest.raises(NotFound, match="the schema has no column 'nope'"):
        schema.without_column("nope")
    with pytest.raises(NotFound, match="no schema file"):
        load_schema(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(
        '{"kiln_schema": 1, "columns": {"a": {"type": "int", "maxx": 1}}}'
    )
    with pytest.raises(InvalidInput, match="schema column 'a': unknown rule 'maxx'"):
        load_schema(tmp_path / "bad.json")
