"""Window aggregations online (``kiln.features.windows``) equal the offline SQL at one instant.

Each test pushes a few events and reads one aggregation online, with the clock of
:mod:`kiln.features.windows` pinned to the read instant ``T``, and offline with a spine at
``T``; both must give the expected value, with its type.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pandas as pd
import pyarrow as pa
import pytest

import kiln.features.windows
from kiln.errors import InvalidInput
from kiln.features import (
    Aggregation,
    Entity,
    OnlineStore,
    ParquetSource,
    PushSource,
    WindowedFeatureView,
)
from kiln.features.store import FeatureStore
from kiln.features.windows import read_windows, update_windows

NAN, INF = math.nan, math.inf
TS = pa.timestamp("us", "UTC")
user = Entity("user", join_keys=["user_id"])
T = datetime(1970, 1, 1, tzinfo=UTC)  # the read instant; set for each test by _read_instant


@pytest.fixture(autouse=True)
def _read_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    """``T`` is ten minutes ahead of the wall clock when the test starts, so that every
    push (and every created time it fills in) happens before the reads at ``T``."""
    now = datetime.now(UTC).replace(microsecond=654321) + timedelta(minutes=10)
    monkeypatch.setattr(sys.modules[__name__], "T", now)


def ago(**delta: float) -> datetime:
    return T - timedelta(**delta)


@pytest.fixture
def fs(tmp_path: Path) -> FeatureStore:
    return FeatureStore(offline_dir=tmp_path / "offline", online=f"sqlite:///{tmp_path}/on.db")


def _frozen(instant: datetime) -> type[datetime]:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return instant

    return Frozen


def view(name: str, *aggregations: Aggregation, created: bool = False) -> WindowedFeatureView:
    source = PushSource(created="created") if created else PushSource()
    return WindowedFeatureView(name, entities=[user], source=source, aggregations=aggregations)


def push(fs: FeatureStore, name: str, times: Sequence[datetime], xs: Any, **more: Any) -> None:
    xs = xs if isinstance(xs, pa.Array) else pa.array(xs, pa.float64())
    columns = {
        "user_id": pa.array([1] * len(times), pa.int64()),
        "event_timestamp": pa.array(times, TS),
        "x": xs,
        **more,
    }
    fs.push(name, pa.table(columns))


def both(fs: FeatureStore, name: str, feature: str, at: datetime | None = None) -> tuple[Any, Any]:
    """The feature of user 1 online (clock pinned to ``at``, ``T`` by default) and offline
    at ``at``."""
    at = at or T
    with mock.patch.object(kiln.features.windows, "datetime", _frozen(at)):
        online = fs.get_online_features([{"user_id": 1}], [f"{name}:{feature}"])[feature][0]
    spine = pd.DataFrame({"user_id": [1], "event_timestamp": [at]})
    offline = fs.get_historical_features(spine, [f"{name}:{feature}"]).to_arrow()
    return online, offline.column(feature)[0].as_py()


def assert_same(got: Any, want: Any) -> None:
    if isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), got
    else:
        assert type(got) is type(want) and got == want, (got, want)


# -- values: NaN, infinities, timestamps --------------------------------------------------


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [
        ([NAN, 1.0], 1.0, NAN),
        ([1.0, NAN], 1.0, NAN),
        ([NAN, INF, -INF], -INF, NAN),
        ([NAN, NAN], NAN, NAN),
        ([None, NAN, 2.0, None], 2.0, NAN),
    ],
)
def test_min_and_max_rank_nan_above_every_number_as_duckdb_does(
    fs: FeatureStore, values: list[float | None], low: float, high: float
) -> None:
    """Python's min/max depend on where a NaN sits; DuckDB's do not."""
    fs.apply([user, view("v", Aggregation("x", "min", "1h"), Aggregation("x", "max", "1h"))])
    push(fs, "v", [ago(minutes=len(values) - i) for i in range(len(values))], values)
    for feature, want in (("x_min_1h", low), ("x_max_1h", high)):
        online, offline = both(fs, "v", feature)
        assert_same(offline, want)
        assert_same(online, want)


def test_infinities_are_kept_online(fs: FeatureStore) -> None:
    """JSON has no infinities: they must not come back as nulls (count 0, sum None)."""
    aggs = [Aggregation("x", f, "1h") for f in ("count", "sum", "mean", "min", "max", "last")]
    fs.apply([user, view("v", *aggs)])
    push(fs, "v", [ago(minutes=3), ago(minutes=2)], [INF, 1.0])
    push(fs, "v", [ago(minutes=1)], [-INF])
    want = {"count": 3, "sum": NAN, "mean": NAN, "min": -INF, "max": INF, "last": -INF}
    for agg in aggs:
        online, offline = both(fs, "v", agg.name)
        assert_same(offline, want[agg.function])
        assert_same(online, want[agg.function])
    online, offline = both(fs, "v", "x_sum_1h", at=ago(minutes=1, microseconds=1))
    assert_same(online, INF)
    assert_same(offline, INF)


def test_a_string_that_spells_a_marker_stays_a_string(fs: FeatureStore) -> None:
    fs.apply([user, view("v", Aggregation("x", "last", "1h"), Aggregation("x", "max", "1h"))])
    push(fs, "v", [ago(minutes=2), ago(minutes=1)], pa.array(["A", "__nan__"]))
    for feature in ("x_last_1h", "x_max_1h"):
        online, offline = both(fs, "v", feature)
        assert online == offline == "__nan__"


def test_timestamp_columns_come_back_as_utc_datetimes(fs: FeatureStore) -> None:
    aggs = [Aggregation("x", f, "1h") for f in ("last", "min", "max", "count")]
    fs.apply([user, view("v", *aggs)])
    stamps = [datetime(2024, 5, 1, 12, 30, 0, 123456), datetime(2023, 1, 1)]  # naive: UTC
    push(fs, "v", [ago(minutes=2), ago(minutes=1)], pa.array(stamps, pa.timestamp("us")))
    utc = [s.replace(tzinfo=UTC) for s in stamps]
    want = {"last": utc[1], "min": utc[1], "max": utc[0], "count": 2}
    for agg in aggs:
        online, offline = both(fs, "v", agg.name)
        assert online == offline == want[agg.function]
        if agg.function != "count":
            assert isinstance(online, datetime) and online.utcoffset() == timedelta(0)


# -- time: windows, created times, pruning ------------------------------------------------


def test_a_millisecond_window_has_its_exact_edges(fs: FeatureStore) -> None:
    window = timedelta(seconds=1, milliseconds=1)
    agg = Aggregation("x", "count", window)
    assert agg.name == "x_count_1001ms"  # an identifier, unlike "x_count_1.001s"
    fs.apply([user, view("v", agg, Aggregation("x", "sum", "1.001s", name="total"))])
    # One microsecond inside the window, and exactly on its (excluded) edge.
    push(fs, "v", [T - window + timedelta(microseconds=1), T - window], [1.0, 2.0])
    assert both(fs, "v", "x_count_1001ms") == (1, 1)
    assert both(fs, "v", "total") == (1.0, 1.0)


def test_a_read_between_now_and_a_future_event_keeps_the_older_events(
    fs: FeatureStore,
) -> None:
    """Lists were pruned relative to the newest event even when it lies in the future."""
    fs.apply([user, view("v", Aggregation("x", "count", "1h"), Aggregation("x", "sum", "1h"))])
    push(fs, "v", [ago(minutes=59), T + timedelta(minutes=2)], [1.0, 2.0])
    push(fs, "v", [ago(minutes=30)], [4.0])  # a later push prunes again
    assert both(fs, "v", "x_count_1h") == (2, 2)
    assert both(fs, "v", "x_sum_1h") == (5.0, 5.0)
    later = T + timedelta(minutes=3)
    assert both(fs, "v", "x_sum_1h", at=later) == (6.0, 6.0)


def test_pruning_keeps_what_reads_after_the_push_need(tmp_path: Path) -> None:
    """A push at ``now`` drops events at or before min(newest event, now) - widest window."""
    online = OnlineStore.open(f"sqlite:///{tmp_path}/on.db")
    v = view("v", Aggregation("x", "count", "1h"))
    hour, us = timedelta(hours=1), timedelta(microseconds=1)

    def events(*times: datetime) -> pa.Table:
        return pa.table(
            {
                "user_id": pa.array([1] * len(times), pa.int64()),
                "event_ts": pa.array(times, TS),
                "created_ts": pa.nulls(len(times), TS),
                "x": [1.0] * len(times),
            }
        )

    def stored() -> list[int]:
        raw = online.kv.get_many(list(online.kv.scan()))
        return [e[0] for e in orjson.loads(raw[0] or b"[]")]

    def count(at: datetime) -> int:
        got = read_windows(online, v, "v1", [("x_count_1h", "n")], [{"user_id": 1}], now=at)
        return int(got["n"][0])

    update_windows(online, v, "v1", events(T - hour, T - hour + us, T + hour), now=T)
    assert len(stored()) == 2  # the event on the edge of a read at T is gone
    assert [count(T), count(T + hour)] == [1, 1]
    update_windows(online, v, "v1", events(T + 90 * timedelta(minutes=1)), now=T + 2 * hour)
    assert len(stored()) == 2  # newest (T + 90m) - 1h: the event at T + 1µs is gone
    assert count(T + 2 * hour) == 1


def test_a_null_created_time_is_refused(fs: FeatureStore) -> None:
    """Offline never uses such a row; online used to serve it."""
    fs.apply([user, view("v", Aggregation("x", "count", "1h"), created=True)])
    created = pa.array([ago(minutes=2), None], TS)
    with pytest.raises(InvalidInput, match=r"created time 'created' is null in 1 row\(s\)"):
        push(fs, "v", [ago(minutes=2), ago(minutes=1)], [1.0, 2.0], created=created)
    with pytest.raises(InvalidInput, match="created time 'created' is null"):
        fs.push("v", [{"user_id": 1, "event_timestamp": ago(minutes=1), "x": 1.0, "created": None}])
    push(fs, "v", [ago(minutes=1)], [1.0])  # without the column: the push time
    assert both(fs, "v", "x_count_1h") == (1, 1)


# -- column types -------------------------------------------------------------------------


def test_a_push_that_would_change_values_to_fit_the_offline_table_is_refused(
    fs: FeatureStore,
) -> None:
    """Delta truncated 2.5 to 2 offline while the online list kept 2.5."""
    fs.apply([user, view("v", Aggregation("x", "sum", "1h"))])
    push(fs, "v", [ago(minutes=3)], pa.array([1], pa.int64()))
    with pytest.raises(InvalidInput, match=r"column 'x' is int64 .* pushed double values"):
        push(fs, "v", [ago(minutes=2)], [2.5])
    push(fs, "v", [ago(minutes=2)], [2.0])  # the same value as an integer: accepted, as 2
    push(fs, "v", [ago(minutes=1)], pa.array([4], pa.int32()))
    for got in both(fs, "v", "x_sum_1h"):
        assert_same(got, 7)  # an int on both paths


def test_a_first_push_of_only_nulls_needs_a_type(fs: FeatureStore) -> None:
    fs.apply([user, view("v", Aggregation("x", "count", "1h"), Aggregation("x", "max", "1h"))])
    record = {"user_id": 1, "event_timestamp": ago(minutes=2), "x": None}
    with pytest.raises(InvalidInput, match="column 'x' holds only nulls and has no type"):
        fs.push("v", [record])
    push(fs, "v", [ago(minutes=2)], pa.array([None], pa.float64()))
    fs.push("v", [{**record, "event_timestamp": ago(minutes=1)}])  # typed by the table now
    push(fs, "v", [ago(seconds=30)], [3.0])
    assert both(fs, "v", "x_count_1h") == (1, 1)
    assert both(fs, "v", "x_max_1h") == (3.0, 3.0)


def test_sum_and_mean_of_a_non_numeric_column_are_refused_up_front(
    fs: FeatureStore, tmp_path: Path
) -> None:
    """DuckDB cannot average booleans (and sums them to a DECIMAL): say so before a read."""
    fs.apply([user, view("v", Aggregation("flag", "count", "1h"))])
    fs.apply([view("b", Aggregation("flag", "mean", "1h"))])  # no rows yet: no type known
    with pytest.raises(InvalidInput, match="holds bool; sum and mean need integers or floats"):
        fs.push("b", [{"user_id": 1, "event_timestamp": ago(minutes=1), "flag": True}])
    fs.push("v", [{"user_id": 1, "event_timestamp": ago(minutes=1), "flag": True}])
    # The pushed table holds booleans now: apply refuses a mean over them.
    with pytest.raises(InvalidInput, match="'flag_mean_1h' takes the mean of column 'flag'"):
        fs.apply([view("v", Aggregation("flag", "count", "1h"), Aggregation("flag", "mean", "1h"))])
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [1], "event_timestamp": [ago(hours=1)], "s": ["a"]}).to_parquet(path)
    batch = WindowedFeatureView(
        "batch",
        entities=[user],
        source=ParquetSource(str(path)),
        aggregations=[Aggregation("s", "sum", "1d")],
    )
    with pytest.raises(InvalidInput, match="takes the sum of column 's', which holds VARCHAR"):
        fs.apply([batch])
