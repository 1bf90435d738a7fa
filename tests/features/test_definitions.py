"""Definitions are frozen values validated at construction, with errors naming the parameter."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from kiln.errors import InvalidInput
from kiln.features import (
    Aggregation,
    DeltaSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    ParquetSource,
    PushSource,
    RequestSource,
    SQLSource,
    WindowedFeatureView,
    parse_duration,
)

user = Entity("user", join_keys=["user_id"])
source = ParquetSource("data/user_stats.parquet", created="created")


def test_views_are_frozen_values() -> None:
    view = FeatureView(
        "user_stats",
        entities=[user],
        source=source,
        schema=[Field("u_f0", "float64"), Field("u_n", "int64")],
        ttl="2d",
        tags={"team": "risk"},
    )
    assert view.ttl == timedelta(days=2)
    assert view.join_keys == ("user_id",)
    assert view.feature_names == ("u_f0", "u_n")
    assert view.spec()["ttl"] == "2d"
    assert view.spec()["source"] == {
        "type": "parquet",
        "path": "data/user_stats.parquet",
        "timestamp": "event_timestamp",
        "created": "created",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.name = "x"  # type: ignore[misc]
    same = FeatureView(
        "user_stats",
        entities=[user],
        source=source,
        schema=[Field("u_f0", "float64"), Field("u_n", "int64")],
        ttl=timedelta(days=2),
        tags={"team": "risk"},
    )
    assert same == view and same.spec() == view.spec()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), (90, 90)],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("given", "micros", "text"),
    [
        ("1.001s", 1_001_000, "1001ms"),
        (1.001, 1_001_000, "1001ms"),
        (timedelta(seconds=1, milliseconds=1), 1_001_000, "1001ms"),
        ("60.5s", 60_500_000, "60500ms"),  # not "1m": whole seconds were compared before
        ("1500ms", 1_500_000, "1500ms"),
        ("250us", 250, "250us"),
        ("1234567s", 1_234_567_000_000, "1234567s"),
        ("90m", 5_400_000_000, "90m"),
        (timedelta(days=10_000, microseconds=1), 864_000_000_000_001, "864000000000001us"),
    ],
)
def test_durations_are_exact_microseconds(given: object, micros: int, text: str) -> None:
    """No float seconds on the way: the window, its text and the default name agree."""
    duration = parse_duration(given)
    assert duration // timedelta(microseconds=1) == micros
    agg = Aggregation("x", "count", duration)
    assert agg.spec()["window"] == text and agg.name == f"x_count_{text}"
    assert parse_duration(text) == duration  # the stored spec reads back the same


@pytest.mark.parametrize("bad", ["0.1us", 0, -1, float("nan"), float("inf"), 1e20, "1 ms x"])
def test_durations_that_are_not_a_positive_number_of_microseconds(bad: object) -> None:
    with pytest.raises(InvalidInput, match="'window' parameter of Aggregation"):
        Aggregation("x", "count", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Entity("1user", join_keys=["id"]), "'name' parameter of Entity"),
        (lambda: Entity("user", join_keys="user_id"), "'join_keys' parameter"),
        (lambda: Field("x", "float"), "'dtype' parameter of Field 'x' must be one of"),
        (
            lambda: FeatureView("v", entities=[], source=source, schema=[Field("a", "int64")]),
            "'entities' parameter of FeatureView 'v'",
        ),
        (
            lambda: FeatureView(
                "v", entities=[user], source="x.parquet", schema=[Field("a", "int64")]
            ),  # type: ignore[arg-type]
            "'source' parameter of FeatureView 'v'",
        ),
        (
            lambda: FeatureView(
                "v", entities=[user], source=source, schema=[Field("user_id", "int64")]
            ),
            "field 'user_id' is a join key",
        ),
        (
            lambda: FeatureView(
                "v", entities=[user], source=source, schema=[Field("a", "int64")], ttl="2 days"
            ),
            "'ttl' parameter of FeatureView 'v' must be a duration",
        ),
        (
            lambda: FeatureView(
                "v", entities=[user], source=source, schema=[Field("a", "int64")], ttl="-1d"
            ),
            "must be a duration",
        ),
        (lambda: Aggregation("amount", "median", "1d"), "'function' parameter of Aggregation"),
        (lambda: Aggregation(None, "sum", "1d"), "needs a column"),
        (lambda: DeltaSource("t", version=-1), "'version' parameter of DeltaSource"),
        (lambda: SQLSource("SELECT 1", sources={}), "'sources' parameter of SQLSource"),
        (lambda: FeatureService("svc", features=["no_colon"]), "'view:feature' references"),
        (
            lambda: OnDemandFeatureView("od", schema=[Field("a", "float64")], function=42),  # type: ignore[arg-type]
            "'function' parameter",
        ),
    ],
)
def test_bad_definitions_name_the_parameter(make: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        make()  # type: ignore[operator]


def test_windowed_view_and_aggregation_names() -> None:
    view = WindowedFeatureView(
        "tx_windows",
        entities=[user],
        source=PushSource(created="created"),
        aggregations=[
            Aggregation("amount", "sum", "7d"),
            Aggregation(None, "count", "1h"),
            Aggregation("amount", "mean", "1d", name="avg_amount_1d"),
        ],
    )
    assert view.feature_names == ("amount_sum_7d", "events_count_1h", "avg_amount_1d")
    assert view.max_window == timedelta(days=7)
    with pytest.raises(InvalidInput, match="names the aggregation 'amount_sum_7d' twice"):
        WindowedFeatureView(
            "w",
            entities=[user],
            source=PushSource(),
            aggregations=[Aggregation("amount", "sum", "7d"), Aggregation("amount", "sum", "1w")],
        )


def test_service_expands_views_and_on_demand_spec() -> None:
    view = FeatureView(
        "user_stats",
        entities=[user],
        source=source,
        schema=[Field("a", "float64"), Field("b", "int64")],
    )
    service = FeatureService("fraud", features=[view, "merchant_stats:m_f0"])
    assert service.features == ("user_stats:a", "user_stats:b", "merchant_stats:m_f0")

    def ratio(df: object) -> object:
        return df

    od = OnDemandFeatureView(
        "amount_ratio",
        sources=[RequestSource("tx", [Field("amount", "float64")])],
        inputs=["user_stats:a"],
        schema=[Field("ratio", "float64")],
        function=ratio,
    )
    spec = od.spec()
    assert spec["function"]["ref"].endswith(
        ":test_service_expands_views_and_on_demand_spec.<locals>.ratio"
    )
    assert "def ratio" in spec["function"]["source"]
    assert od.request_fields == (Field("amount", "float64"),)


def test_key_types_are_validated_and_kept_in_the_spec() -> None:
    from kiln.features._specs import from_spec

    src = ParquetSource("s.parquet")
    view = FeatureView("v", entities=[user], source=src, key_types={"user_id": "int64"})
    assert view.schema == () and view.key_types == {"user_id": "int64"}
    assert view.spec()["key_types"] == {"user_id": "int64"}
    assert from_spec("feature_view", view.spec(), None, {"user": user}) == view
    # Unknown key types stay out of the spec, so older stored definitions keep their digest.
    assert "key_types" not in FeatureView("v", entities=[user], source=src).spec()
    with pytest.raises(InvalidInput, match="names 'uid', which is not a join key; the join"):
        FeatureView("v", entities=[user], source=src, key_types={"uid": "int64"})
    with pytest.raises(InvalidInput, match="gives join key 'user_id' the dtype 'float64'"):
        FeatureView("v", entities=[user], source=src, key_types={"user_id": "float64"})
    with pytest.raises(InvalidInput, match="must map join keys to dtypes"):
        FeatureView("v", entities=[user], source=src, key_types=["int64"])  # type: ignore[arg-type]
