"""A definition's versions with what each changed, and how fresh each view's online values are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.features import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    ParquetSource,
    WindowedFeatureView,
)

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
user = Entity("user", ["user_id"])


def _events(path: Path, clicks: pa.DataType = pa.int64()) -> None:
    times = [NOW - timedelta(hours=h) for h in (5, 3, 1)]
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1, 2, 1], pa.int64()),
                "event_timestamp": pa.array(times, pa.timestamp("us", "UTC")),
                "amount": [1.0, 2.0, 3.0],
                "clicks": pa.array([1, 2, 3], clicks),
            }
        ),
        path,
    )


def _view(path: Path, ttl: str = "2d", schema: list[Field] | None = None) -> FeatureView:
    return FeatureView(
        "stats",
        entities=[user],
        source=ParquetSource(str(path)),
        schema=schema or [Field("amount", "float64")],
        ttl=ttl,
    )


def test_history_lists_every_version_with_what_it_changed(tmp_path: Path) -> None:
    _events(tmp_path / "a.parquet")
    _events(tmp_path / "b.parquet", pa.float64())
    fs = FeatureStore()
    fs.apply([user, _view(tmp_path / "a.parquet")])
    fs.apply([_view(tmp_path / "a.parquet", ttl="1d", schema=[Field("clicks", "int64")])])
    fs.apply([_view(tmp_path / "b.parquet", ttl="1d", schema=[Field("clicks", "float64")])])

    versions = fs.history("stats")
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[0].changes_from(None) == ()
    assert versions[1].changes_from(versions[0]) == (
        "schema: added clicks: int64",
        "schema: removed amount: float64",
        'ttl: "2d" -> "1d"',
    )
    (retyped, source) = versions[2].changes_from(versions[1])
    assert source.startswith("source.path: ") and source.endswith('b.parquet"')
    assert retyped == "schema: clicks retyped int64 -> float64"
    assert fs.history("user", kind="entity")[0].spec["join_keys"] == ["user_id"]
    assert fs.history("stats", kind="feature_view") == versions


def test_history_of_aggregations_and_services_and_its_errors(tmp_path: Path) -> None:
    _events(tmp_path / "e.parquet")
    fs = FeatureStore()
    source = ParquetSource(str(tmp_path / "e.parquet"))
    one = WindowedFeatureView(
        "w", entities=[user], source=source, aggregations=[Aggregation("amount", "sum", "1d")]
    )
    two = WindowedFeatureView(
        "w",
        entities=[user],
        source=source,
        aggregations=[
            Aggregation("amount", "sum", "2d", name="amount_sum_1d"),
            Aggregation(None, "count", "1h"),
        ],
    )
    fs.apply([user, one, FeatureService("svc", features=["w:amount_sum_1d"])])
    fs.apply([two, FeatureService("svc", features=[two])])
    first, second = fs.history("w")
    assert second.changes_from(first) == (
        "aggregations: added events_count_1h",
        'aggregations[amount_sum_1d].window: "1d" -> "2d"',
    )
    first, second = fs.history("svc", kind="service")
    assert second.changes_from(first) == (
        'features: ["w:amount_sum_1d"] -> ["w:amount_sum_1d", "w:events_count_1h"]',
    )
    with pytest.raises(NotFound, match="no view named 'ww' is applied; did you mean w"):
        fs.history("ww")
    with pytest.raises(InvalidInput, match="kind must be one of entity, service, view"):
        fs.history("w", kind="views")


def test_materializations_say_when_and_up_to_which_event(tmp_path: Path) -> None:
    _events(tmp_path / "e.parquet")
    source = ParquetSource(str(tmp_path / "e.parquet"))
    windows = WindowedFeatureView(
        "w", entities=[user], source=source, aggregations=[Aggregation("amount", "sum", "1d")]
    )
    fs = FeatureStore()
    fs.apply([user, _view(tmp_path / "e.parquet"), windows])
    assert fs.materializations() == []

    before = datetime.now(UTC) - timedelta(seconds=1)
    assert fs.materialize(end=NOW - timedelta(hours=2)).ok
    (stats,) = fs.materializations("stats")
    assert stats.version == 1 and stats.rows == 2
    assert stats.watermark == NOW - timedelta(hours=2)
    assert stats.newest_event == NOW - timedelta(hours=3)
    assert stats.materialized_at >= before
    (w,) = fs.materializations("w")
    assert w.newest_event == NOW - timedelta(hours=3) and w.watermark == stats.watermark

    fs.materialize(end=NOW)
    latest = {r.view: r for r in fs.materializations()}
    assert latest["stats"].newest_event == NOW - timedelta(hours=1)
    assert latest["stats"].watermark == NOW
    # An earlier end moves neither mark back.
    fs.materialize(end=NOW - timedelta(hours=4))
    again = fs.materializations("stats")[0]
    assert again.watermark == NOW and again.newest_event == NOW - timedelta(hours=1)

    fs.apply([_view(tmp_path / "e.parquet", ttl="1d")])  # a new version starts afresh
    fs.materialize(end=NOW - timedelta(hours=2))
    by_version = {r.version: r for r in fs.materializations("stats")}
    assert by_version[2].newest_event == NOW - timedelta(hours=3)
    assert by_version[1].newest_event == NOW - timedelta(hours=1)
