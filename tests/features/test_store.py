"""FeatureStore end to end: apply, training data, materialization, online reads equal offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.features import Entity, FeatureService, FeatureView, Field, ParquetSource
from kiln.features.store import FeatureStore

NOW = datetime.now(UTC).replace(microsecond=0)
user = Entity("user", join_keys=["user_id"])
merchant = Entity("merchant", join_keys=["merchant_id"])


def _write_stats(path: Path, keys: str, n_entities: int, days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_entities), days)
    event = NOW - pd.to_timedelta(np.tile(np.arange(days)[::-1], n_entities), unit="D")
    event = event - pd.to_timedelta(rng.integers(0, 3600, len(ids)), unit="s")
    df = pd.DataFrame(
        {
            keys: ids.astype("int64"),
            "event_timestamp": event,
            "created": event + pd.to_timedelta(rng.integers(1, 3600, len(ids)), unit="s"),
            "f0": rng.normal(size=len(ids)),
            "f1": rng.normal(size=len(ids)),
        }
    )
    # Entities that stopped reporting long ago: their values are past the TTL now.
    stale = df[keys] % 7 == 0
    df.loc[stale, "event_timestamp"] -= pd.Timedelta(days=30)
    df.loc[stale, "created"] -= pd.Timedelta(days=30)
    df.to_parquet(path)
    return df


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    _write_stats(tmp_path / "users.parquet", "user_id", 40, 10, seed=1)
    _write_stats(tmp_path / "merchants.parquet", "merchant_id", 15, 10, seed=2)
    fs = FeatureStore()
    fs.apply(
        [
            user,
            merchant,
            FeatureView(
                "user_stats",
                entities=[user],
                source=ParquetSource(str(tmp_path / "users.parquet"), created="created"),
                schema=[Field("f0", "float64"), Field("f1", "float64")],
                ttl="2d",
            ),
            FeatureView(
                "merchant_stats",
                entities=[merchant],
                source=ParquetSource(str(tmp_path / "merchants.parquet"), created="created"),
                schema=[Field("f0", "float64")],
                ttl="2d",
            ),
            FeatureService(
                "fraud", features=["user_stats:f0", "user_stats:f1", "merchant_stats:f0"]
            ),
        ]
    )
    return fs


def test_apply_checks_the_source_against_the_schema(tmp_path: Path, store: FeatureStore) -> None:
    wrong = FeatureView(
        "user_stats",
        entities=[user],
        source=ParquetSource(str(tmp_path / "users.parquet"), created="created"),
        schema=[Field("f0", "float64"), Field("f9", "float64")],
    )
    with pytest.raises(InvalidInput, match="f9"):
        store.apply([wrong])
    missing = FeatureView(
        "other",
        entities=[user],
        source=ParquetSource(str(tmp_path / "nope.parquet")),
        schema=[Field("f0", "float64")],
    )
    with pytest.raises(NotFound, match="FeatureView 'other': cannot read"):
        store.apply([missing])
    assert {r.name for r in store.list_definitions()} == {
        "user",
        "merchant",
        "user_stats",
        "merchant_stats",
        "fraud",
    }


def test_online_values_equal_offline_values_as_of_now(store: FeatureStore) -> None:
    results = store.materialize(end=NOW)
    assert {r.view: r.entities for r in results} == {"user_stats": 40, "merchant_stats": 15}
    users = list(range(42))  # two unknown users
    spine = pd.DataFrame(
        {"user_id": users, "merchant_id": [u % 16 for u in users], "event_timestamp": NOW}
    )
    offline = store.get_historical_features(spine, "fraud", full_feature_names=True).to_pandas()
    online = store.get_online_features(
        spine[["user_id", "merchant_id"]].to_dict("records"), "fraud", full_feature_names=True
    )
    assert online["user_id"] == users
    for column in ("user_stats__f0", "user_stats__f1", "merchant_stats__f0"):
        expected = [None if pd.isna(v) else v for v in offline[column]]
        assert online[column] == expected, column
    # Stale entities (past the 2-day TTL) are null on both paths, never old values.
    assert online["user_stats__f0"][7] is None and online["user_stats__f0"][40] is None
    assert online["user_stats__f0"][1] is not None
    table = online.to_arrow()
    assert table.num_rows == 42 and "merchant_stats__f0" in table.column_names


def test_incremental_materialization_is_idempotent(store: FeatureStore) -> None:
    first = store.materialize_incremental(end=NOW - timedelta(days=1))
    assert all(r.written > 0 for r in first)
    second = store.materialize_incremental(end=NOW)
    assert all(r.start == NOW - timedelta(days=1) for r in second)
    again = store.materialize_incremental(end=NOW)
    assert all(r.written == 0 for r in again)
    rows = [{"user_id": u, "merchant_id": 1} for u in range(5)]
    assert store.get_online_features(rows, ["user_stats:f0"])["f0"][1] is not None


def test_unknown_features_are_clear_errors(store: FeatureStore) -> None:
    with pytest.raises(
        InvalidInput, match=r"unknown feature 'user_stats:f7'; view 'user_stats' has: f0, f1"
    ):
        store.get_online_features([{"user_id": 1}], ["user_stats:f7"])
    with pytest.raises(InvalidInput, match="did you mean user_stats"):
        store.get_online_features([{"user_id": 1}], ["user_stat:f0"])
    with pytest.raises(NotFound, match="did you mean fraud"):
        store.get_online_features([{"user_id": 1}], "frad")
    with pytest.raises(InvalidInput, match="'user_id'"):
        store.get_online_features([{"merchant_id": 1}], ["user_stats:f0"])


def test_a_fresh_store_reads_what_was_applied(store: FeatureStore) -> None:
    store.materialize(end=NOW)
    fresh = FeatureStore()
    assert fresh.get("user_stats") == store.get("user_stats")
    got = fresh.get_online_features({"user_id": [1, 2]}, ["user_stats:f1"])
    assert got["f1"] == store.get_online_features({"user_id": [1, 2]}, ["user_stats:f1"])["f1"]
