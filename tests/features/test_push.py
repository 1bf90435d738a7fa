"""Push, window aggregations and on-demand features: the same values online and offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from kiln.errors import InvalidInput
from kiln.features import (
    Aggregation,
    Entity,
    FeatureView,
    Field,
    OnDemandFeatureView,
    PushSource,
    RequestSource,
    WindowedFeatureView,
)
from kiln.features.store import FeatureStore

user = Entity("user", join_keys=["user_id"])
profile = FeatureView(
    "profile",
    entities=[user],
    source=PushSource(created="created"),
    schema=[Field("avg_amount", "float64"), Field("segment", "string")],
    ttl="30d",
)
windows = WindowedFeatureView(
    "tx",
    entities=[user],
    source=PushSource(created="created"),
    aggregations=[
        Aggregation(None, "count", "1h"),
        Aggregation("amount", "sum", "1d"),
        Aggregation("amount", "mean", "7d"),
        Aggregation("amount", "max", "7d"),
        Aggregation("amount", "last", "7d"),
    ],
)


def ratio(df: pd.DataFrame) -> pd.DataFrame:
    """The transaction amount relative to the user's average: one definition, two paths."""
    return pd.DataFrame({"amount_ratio": df["amount"] / df["avg_amount"]})


amount_ratio = OnDemandFeatureView(
    "amount_features",
    sources=[RequestSource("request", [Field("amount", "float64")])],
    inputs=["profile:avg_amount"],
    schema=[Field("amount_ratio", "float64")],
    function=ratio,
)


@pytest.fixture
def store() -> FeatureStore:
    fs = FeatureStore()
    fs.apply([user, profile, windows, amount_ratio])
    return fs


def test_pushed_feature_rows_are_online_and_offline(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    events = [now - timedelta(days=2), now - timedelta(days=1), now - timedelta(hours=1)]
    store.push(
        "profile",
        pd.DataFrame(
            {
                "user_id": [1, 2, 1],
                "event_timestamp": events,
                "created": [t + timedelta(seconds=1) for t in events],
                "avg_amount": [10.0, 20.0, 12.0],
                "segment": ["a", "b", "c"],
            }
        ),
    )
    # An older row pushed later never replaces a newer one online; its created time is
    # the push (none given), so offline it is invisible before now.
    old = now - timedelta(days=3)
    store.push(
        "profile",
        [{"user_id": 1, "event_timestamp": old, "avg_amount": 1.0, "segment": "old"}],
    )
    online = store.get_online_features(
        {"user_id": [1, 2, 3]}, ["profile:avg_amount", "profile:segment"]
    )
    assert online == {
        "user_id": [1, 2, 3],
        "avg_amount": [12.0, 20.0, None],
        "segment": ["c", "b", None],
    }
    spine = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1],
            "event_timestamp": [now, now - timedelta(hours=30), now, now - timedelta(days=2.5)],
        }
    )
    offline = store.get_historical_features(spine, ["profile:avg_amount"]).to_pandas()
    assert offline["avg_amount"].tolist()[:3] == [12.0, 10.0, 20.0]
    assert np.isnan(offline["avg_amount"].iloc[3])  # the late push was not known then


def test_bad_pushes_name_the_column(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidInput, match="no column 'segment'"):
        store.push("profile", [{"user_id": 1, "event_timestamp": now, "avg_amount": 1.0}])
    with pytest.raises(InvalidInput, match="unexpected column 'oops'"):
        store.push(
            "profile",
            [{"user_id": 1, "event_timestamp": now, "avg_amount": 1.0, "segment": "a", "oops": 1}],
        )
    with pytest.raises(InvalidInput, match="'avg_amount' holds string"):
        store.push(
            "profile",
            [{"user_id": 1, "event_timestamp": now, "avg_amount": "x", "segment": "a"}],
        )
    with pytest.raises(InvalidInput, match=r"entity; push takes"):
        store.push("user", [{"user_id": 1}])


def test_window_aggregations_online_equal_offline_at_the_same_instant(store: FeatureStore) -> None:
    rng = np.random.default_rng(5)
    now = datetime.now(UTC).replace(microsecond=0)
    n = 400
    events = pd.DataFrame(
        {
            "user_id": rng.integers(0, 12, n),
            "event_timestamp": [
                now - timedelta(seconds=int(s)) for s in rng.integers(1, 9 * 86400, n)
            ],
            "amount": np.round(rng.lognormal(3, 1, n), 2),
        }
    )
    shuffled = events.sample(frac=1, random_state=1)  # pushed out of order, in four parts
    for part in range(4):
        store.push("tx", shuffled.iloc[part * 100 : (part + 1) * 100])
    features = [f"tx:{a.name}" for a in windows.aggregations]
    users = list(range(14))
    online = store.get_online_features([{"user_id": u} for u in users], features)
    at = datetime.now(UTC)
    spine = pd.DataFrame({"user_id": users, "event_timestamp": at})
    offline = store.get_historical_features(spine, features).to_pandas()
    for feature in features:
        name = feature.split(":")[1]
        got, want = online[name], offline[name].tolist()
        for g, w in zip(got, want, strict=True):
            if w is None or (isinstance(w, float) and np.isnan(w)):
                assert g in (None, 0) if name.startswith("events_count") else g is None, (
                    name,
                    g,
                    w,
                )
            else:
                assert g == pytest.approx(w, rel=1e-9), (name, g, w)
    assert online["events_count_1h"][12] == 0 and online["amount_sum_1d"][12] is None


def test_on_demand_features_online_and_offline(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    store.push(
        "profile",
        [
            {
                "user_id": 1,
                "event_timestamp": now - timedelta(hours=2),
                "avg_amount": 40.0,
                "segment": "a",
            }
        ],
    )
    online = store.get_online_features(
        [{"user_id": 1, "amount": 100.0}], ["amount_features:amount_ratio", "profile:segment"]
    )
    assert online == {"user_id": [1], "amount_ratio": [2.5], "segment": ["a"]}
    later = datetime.now(UTC)  # after the push: its rows are known from then on
    spine = pd.DataFrame({"user_id": [1], "event_timestamp": [later], "amount": [20.0]})
    offline = store.get_historical_features(spine, ["amount_features:amount_ratio"]).to_pandas()
    assert offline["amount_ratio"].tolist() == [0.5]
    assert list(offline.columns) == ["user_id", "event_timestamp", "amount", "amount_ratio"]
    with pytest.raises(InvalidInput, match="needs the request field 'amount'"):
        store.get_online_features([{"user_id": 1}], ["amount_features:amount_ratio"])


def test_materialized_windows_equal_offline(tmp_path: object, store: FeatureStore) -> None:
    """A windowed view over a batch source is served online after materialize."""
    from pathlib import Path

    rng = np.random.default_rng(9)
    now = datetime.now(UTC).replace(microsecond=0)
    n = 300
    events = pd.DataFrame(
        {
            "user_id": rng.integers(0, 10, n),
            "event_timestamp": [
                now - timedelta(seconds=int(s)) for s in rng.integers(1, 10 * 86400, n)
            ],
            "amount": np.round(rng.lognormal(3, 1, n), 2),
        }
    )
    path = Path(str(tmp_path)) / "events.parquet"
    events.to_parquet(path)
    from kiln.features import ParquetSource

    batch = WindowedFeatureView(
        "tx_batch",
        entities=[user],
        source=ParquetSource(str(path)),
        aggregations=[Aggregation(None, "count", "1d"), Aggregation("amount", "mean", "7d")],
    )
    store.apply([batch])
    store.materialize(end=now, views=["tx_batch"])
    store.materialize(end=now, views=["tx_batch"])  # again: replaced, not doubled
    features = ["tx_batch:events_count_1d", "tx_batch:amount_mean_7d"]
    rows = [{"user_id": u} for u in range(11)]
    online = store.get_online_features(rows, features)
    spine = pd.DataFrame({"user_id": range(11), "event_timestamp": datetime.now(UTC)})
    offline = store.get_historical_features(spine, features).to_pandas()
    assert online["events_count_1d"] == offline["events_count_1d"].tolist()
    for got, want in zip(online["amount_mean_7d"], offline["amount_mean_7d"], strict=True):
        assert (got is None and np.isnan(want)) or got == pytest.approx(want, rel=1e-9)


def test_more_bad_pushes_and_requests(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    row = {"user_id": 1, "event_timestamp": now, "avg_amount": 1.0, "segment": "a"}
    with pytest.raises(InvalidInput, match="nothing to push"):
        store.push(
            "profile",
            pd.DataFrame(columns=list(row)).astype({"event_timestamp": "datetime64[us, UTC]"}),
        )
    with pytest.raises(InvalidInput, match="join key 'user_id' is null in 1 row"):
        store.push("profile", [row, {**row, "user_id": None}])
    with pytest.raises(InvalidInput, match="'event_timestamp' must be a timestamp"):
        store.push("profile", [{**row, "event_timestamp": "yesterday"}])
    with pytest.raises(InvalidInput, match="push takes a DataFrame"):
        store.push("profile", 42)
    with pytest.raises(InvalidInput, match="ask for at least one feature"):
        store.get_online_features([{"user_id": 1}], [])
    with pytest.raises(InvalidInput, match="'profile' is a feature view, not a feature service"):
        store.get_online_features([{"user_id": 1}], "profile")
    with pytest.raises(InvalidInput, match=r"start .* must be before end"):
        store.materialize(now, now - timedelta(days=1))
    with pytest.raises(InvalidInput, match="end must be a datetime"):
        store.materialize(end="now")  # type: ignore[arg-type]


def test_a_null_created_time_is_refused(store: FeatureStore) -> None:
    """Offline reads never use a row without a created time, so online must not serve it."""
    now = datetime.now(UTC)
    row = {"user_id": 1, "event_timestamp": now, "avg_amount": 1.0, "segment": "a"}
    with pytest.raises(InvalidInput, match=r"created time 'created' is null in 1 row\(s\)"):
        store.push("profile", [{**row, "created": now}, {**row, "created": None}])
    with pytest.raises(InvalidInput, match="created time 'created' is null"):
        store.push("profile", [{**row, "created": None}])  # an untyped all-null column too
    online = store.get_online_features([{"user_id": 1}], ["profile:avg_amount"])
    assert online["avg_amount"] == [None]
    store.push("profile", [row])  # no created column: the push time
    assert store.get_online_features([{"user_id": 1}], ["profile:avg_amount"])["avg_amount"] == [
        1.0
    ]


def test_a_push_that_no_longer_matches_the_offline_table(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    store.push(
        "profile",
        [{"user_id": 1, "event_timestamp": now, "avg_amount": 1.0, "segment": "a"}],
    )
    wider = FeatureView(
        "profile",
        entities=[user],
        source=PushSource(created="created"),
        schema=[*profile.schema, Field("tier", "int64")],
        ttl="30d",
    )
    store.apply([wider])
    with pytest.raises(InvalidInput, match="do not match its offline table"):
        store.push(
            "profile",
            [{"user_id": 2, "event_timestamp": now, "avg_amount": 2.0, "segment": "b", "tier": 1}],
        )


def test_an_on_demand_function_that_forgets_a_column(store: FeatureStore) -> None:
    forgetful = OnDemandFeatureView(
        "forgetful",
        sources=[RequestSource("request", [Field("amount", "float64")])],
        schema=[Field("doubled", "float64")],
        function=lambda df: pd.DataFrame({"other": df["amount"] * 2}),
    )
    store.apply([forgetful])
    with pytest.raises(
        InvalidInput, match="'forgetful': its function returned no column 'doubled'"
    ):
        store.get_online_features([{"amount": 1.0}], ["forgetful:doubled"])


def test_requirements_name_keys_request_fields_and_outputs(store: FeatureStore) -> None:
    needs = store.requirements(["amount_features:amount_ratio", "profile:segment"])
    assert needs.entity_keys == ("user_id",)
    assert [(f.name, f.dtype) for f in needs.request_fields] == [("amount", "float64")]
    assert needs.outputs == ("amount_ratio", "segment")
    full = store.requirements(["profile:segment"], full_feature_names=True)
    assert full.request_fields == () and full.outputs == ("profile__segment",)
    with pytest.raises(InvalidInput, match="nope"):
        store.requirements(["profile:nope"])
