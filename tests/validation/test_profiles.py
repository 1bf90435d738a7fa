"""Profiles: the statistics they hold (checked against numpy), every input form giving
the same profile, merging, and storing them content-addressed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.validation import QUANTILES, Profile, load_profile, profile


def frame(n: int = 2_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 50.0, n)
    amount[::10] = np.nan
    return pd.DataFrame(
        {
            "amount": amount,
            "items": rng.integers(0, 12, n),
            "category": rng.choice(
                ["grocery", "travel", "online", "fuel"], n, p=[0.4, 0.3, 0.2, 0.1]
            ),
            "flagged": rng.random(n) < 0.25,
            "at": pd.date_range("2026-01-01", periods=n, freq="min"),
            "note": pd.array([None if i % 4 else f"n{i}" for i in range(n)], dtype="string"),
        }
    )


def comparable(p: Profile) -> dict[str, object]:
    out = p.to_dict()
    del out["source"]
    return out


def test_numbers_match_numpy() -> None:
    df = frame()
    p = profile(df)
    assert p.rows == len(df)
    amount = p["amount"]
    values = df["amount"].dropna().to_numpy()
    assert (amount.type, amount.count, amount.missing) == ("float", len(df), len(df) // 10)
    assert amount.missing_rate == pytest.approx(0.1)
    assert amount.min == values.min() and amount.max == values.max()
    assert amount.mean == pytest.approx(values.mean(), rel=1e-12)
    assert amount.std == pytest.approx(values.std(ddof=1), rel=1e-12)
    for q in QUANTILES:  # linear interpolation, as numpy's default
        assert amount.quantiles[str(q)] == pytest.approx(np.quantile(values, q), rel=1e-12)
    assert amount.histogram is not None
    edges = np.asarray(amount.histogram.edges)
    assert list(amount.histogram.counts) == list(np.histogram(values, edges)[0])
    assert amount.quantiles_exact
    items = p["items"]
    assert items.type == "int" and items.missing == 0 and items.distinct == 12


def test_categories_timestamps_and_missing_values() -> None:
    df = frame()
    p = profile(df)
    category = p["category"]
    expected = df["category"].value_counts()
    assert category.type == "string" and category.distinct == 4 and category.distinct_exact
    assert dict(category.top) == {str(k): int(v) for k, v in expected.items()}
    assert [v for v, _ in category.top] == list(expected.index)  # most frequent first
    flagged = p["flagged"]
    assert flagged.type == "bool"
    assert dict(flagged.top) == {"true": int(df.flagged.sum()), "false": int((~df.flagged).sum())}
    at = p["at"]
    assert at.type == "timestamp" and at.min == "2026-01-01T00:00:00"
    assert at.max == df["at"].max().isoformat()
    note = p["note"]
    assert note.missing == len(df) * 3 // 4 and note.distinct == len(df) // 4
    assert profile(df, top_k=2)["category"].top == category.top[:2]


def test_every_input_form_gives_the_same_profile(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    df = frame(500)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, tmp_path / "one.parquet")
    (tmp_path / "parts").mkdir()
    pq.write_table(table.slice(0, 200), tmp_path / "parts" / "a.parquet")
    pq.write_table(table.slice(200), tmp_path / "parts" / "b.parquet")
    write_deltalake(str(tmp_path / "delta"), table)
    expected = comparable(profile(df))
    for form in (table, tmp_path / "one.parquet", str(tmp_path / "parts"), tmp_path / "delta"):
        assert comparable(profile(form)) == expected, form
    assert profile(tmp_path / "one.parquet").source == str(tmp_path / "one.parquet")


def test_halves_merge_into_the_whole() -> None:
    df = frame(4_000, seed=3)
    first, second = df.iloc[:1_500], df.iloc[1_500:]
    a = profile(first)
    b = profile(second, like=a)  # the same edges: the histograms add up exactly
    merged = a.merge(b)
    whole = profile(df, like=a)
    for name in ("amount", "items"):
        m, w = merged[name], whole[name]
        assert (m.count, m.missing, m.min, m.max) == (w.count, w.missing, w.min, w.max)
        assert m.mean == pytest.approx(w.mean, rel=1e-12)
        assert m.std == pytest.approx(w.std, rel=1e-12)
        assert m.histogram == w.histogram
        assert not m.quantiles_exact
        assert m.quantiles["0.5"] == pytest.approx(w.quantiles["0.5"], rel=0.1)
    assert dict(merged["category"].top) == dict(whole["category"].top)
    assert merged["category"].distinct == 4 and merged["category"].distinct_exact
    assert merged.rows == len(df) and merged["at"].max == whole["at"].max
    # different edges: re-binned in proportion, nothing lost
    rebinned = a.merge(profile(second))["amount"].histogram
    assert rebinned is not None and sum(rebinned.counts) == sum(whole["amount"].histogram.counts)


def test_profiles_are_stored_by_content() -> None:
    df = frame(300)
    p = profile(df)
    digest = p.save()
    assert profile(df).save() == digest  # the same data: the same profile, stored once
    assert load_profile(digest) == p
    assert Profile.from_json(p.to_json()) == p
    assert profile(frame(300, seed=9)).save() != digest


def test_mistakes_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidInput, match=r"must be a pandas DataFrame, a pyarrow Table.* got int"
    ):
        profile(42)
    with pytest.raises(NotFound, match=r"no such file or directory: .*nope\.parquet"):
        profile(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InvalidInput, match="cannot be read as Parquet or Delta"):
        profile(tmp_path / "bad.parquet")
    with pytest.raises(InvalidInput, match="no column 'amout' in the data; it has: amount"):
        profile(frame(10), columns=["amout"])
    with pytest.raises(InvalidInput, match="bins must be an integer >= 1; got 0"):
        profile(frame(10), bins=0)
    with pytest.raises(NotFound, match="the profile has no column 'x'"):
        profile(frame(10))["x"]
    with pytest.raises(InvalidInput, match="in one only: items"):
        profile(frame(10)).merge(profile(frame(10).drop(columns=["items"])))
    with pytest.raises(InvalidInput, match="column 'items' is int in one profile and float"):
        profile(frame(10)).merge(profile(frame(10).astype({"items": float})))
    with pytest.raises(InvalidInput, match="not a Kiln profile"):
        Profile.from_json(b'{"rows": 1}')
