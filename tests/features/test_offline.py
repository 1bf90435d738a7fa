"""The offline engine: point-in-time-correct training data over Parquet, Delta and SQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import deltalake
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.features import (
    Aggregation,
    DeltaSource,
    Entity,
    FeatureView,
    Field,
    ParquetSource,
    PushSource,
    SQLSource,
    WindowedFeatureView,
)
from kiln.features._sources import ROW
from kiln.features._spine_order import in_spine_order
from kiln.features.offline import (
    ViewRequest,
    check_view_source,
    get_historical_features,
    latest_per_entity,
    view_rows,
)

user = Entity("user", join_keys=["user_id"])
T0 = datetime(2024, 1, 1, 12, 0)
US = timedelta(microseconds=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def write_parquet(path: Path, rows: list[dict[str, Any]], **types: pa.DataType) -> str:
    columns = list(rows[0])
    schema = pa.schema([(c, types.get(c) or _infer(rows, c)) for c in columns])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)


def _infer(rows: list[dict[str, Any]], column: str) -> pa.DataType:
    sample = next((r[column] for r in rows if r[column] is not None), None)
    if isinstance(sample, datetime):
        return pa.timestamp("us", tz="UTC") if sample.tzinfo else pa.timestamp("us")
    if isinstance(sample, bool):
        return pa.bool_()
    if isinstance(sample, int):
        return pa.int64()
    if isinstance(sample, str):
        return pa.string()
    return pa.float64()


def spine_of(*rows: tuple[Any, datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "event_timestamp": pd.to_datetime([r[1] for r in rows]),
        }
    )


def view(source: Any, *features: str, ttl: Any = None, **kw: Any) -> FeatureView:
    schema = [Field(f, "float64") for f in features or ("x",)]
    return FeatureView("stats", entities=[user], source=source, schema=schema, ttl=ttl, **kw)


def fetch(spine: Any, fv: Any, tmp_path: Path, *features: str, **kw: Any) -> list[Any]:
    names = features or fv.feature_names[:1]
    job = get_historical_features(
        spine, [ViewRequest(fv, tuple(names))], offline_dir=tmp_path / "offline", **kw
    )
    return job.to_arrow().column(names[0]).to_pylist()


@pytest.fixture
def created_source(tmp_path: Path) -> ParquetSource:
    rows = [
        {"user_id": 1, "event_timestamp": at(0), "created": at(0), "x": 1.0},
        {"user_id": 1, "event_timestamp": at(10), "created": at(10), "x": 2.0},
        # Backfilled at minute 60 for an event at minute 20.
        {"user_id": 1, "event_timestamp": at(20), "created": at(60), "x": 3.0},
        {"user_id": 2, "event_timestamp": at(5), "created": at(5), "x": 20.0},
    ]
    return ParquetSource(write_parquet(tmp_path / "f.parquet", rows), created="created")


# -- point in time --------------------------------------------------------------------------


def test_each_row_gets_the_latest_value_known_at_its_time(tmp_path: Path, created_source) -> None:
    spine = spine_of((1, at(-1)), (1, at(0)), (1, at(9)), (1, at(15)), (2, at(100)), (1, at(61)))
    assert fetch(spine, view(created_source), tmp_path) == [None, 1.0, 1.0, 2.0, 20.0, 3.0]


def test_a_backfill_written_after_the_spine_time_does_not_leak(
    tmp_path: Path, created_source
) -> None:
    # At minute 30 the event of minute 20 exists but was only written at minute 60.
    spine = spine_of((1, at(30)), (1, at(59)), (1, at(60)))
    assert fetch(spine, view(created_source), tmp_path) == [2.0, 2.0, 3.0]


def test_ttl_boundary_is_inclusive_to_the_microsecond(tmp_path: Path, created_source) -> None:
    fv = view(created_source, ttl=timedelta(minutes=5))
    spine = spine_of((1, at(15)), (1, at(15) + US), (2, at(10)), (2, at(10) + US))
    assert fetch(spine, fv, tmp_path) == [2.0, None, 20.0, None]


def test_ties_on_event_time_go_to_the_latest_created(tmp_path: Path) -> None:
    rows = [
        {"user_id": 1, "event_timestamp": at(0), "created": at(2), "x": 2.0},
        {"user_id": 1, "event_timestamp": at(0), "created": at(1), "x": 1.0},
        {"user_id": 1, "event_timestamp": at(0), "created": at(3), "x": 3.0},
    ]
    src = ParquetSource(write_parquet(tmp_path / "f.parquet", rows), created="created")
    spine = spine_of((1, at(0)), (1, at(1)), (1, at(2.5)), (1, at(9)))
    assert fetch(spine, view(src), tmp_path) == [None, 1.0, 2.0, 3.0]


def test_superseded_rows_are_remembered_per_file_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiln.features import _sources, _superseded

    monkeypatch.setattr(_sources, "_SETTLED_NS", 0)  # this test's files count as settled
    path = tmp_path / "f.parquet"
    tie = [
        {"user_id": 1, "event_timestamp": at(0), "created": at(2), "x": 2.0},
        {"user_id": 1, "event_timestamp": at(0), "created": at(1), "x": 1.0},
    ]
    write_parquet(path, tie)
    src = ParquetSource(str(path), created="created")
    spine = spine_of((1, at(1)), (1, at(5)))
    cached = _superseded._cache._tables
    before = len(cached)
    assert fetch(spine, view(src), tmp_path) == [1.0, 2.0]
    assert len(cached) == before + 1
    assert fetch(spine, view(src), tmp_path) == [1.0, 2.0]  # served from the cache
    assert len(cached) == before + 1

    # Rewritten in place (same inode): another change time and size make it another file.
    write_parquet(path, [*tie, {**tie[0], "created": at(3), "x": 3.0}])
    assert fetch(spine, view(src), tmp_path) == [1.0, 3.0]
    assert len(cached) == before + 2


def test_a_file_written_just_now_is_never_cached(tmp_path: Path) -> None:
    from kiln.features import _superseded

    path = tmp_path / "f.parquet"
    row = {"user_id": 1, "event_timestamp": at(0), "created": at(0), "x": 1.0}
    src = ParquetSource(write_parquet(path, [row]), created="created")
    before = len(_superseded._cache._tables)
    assert fetch(spine_of((1, at(1))), view(src), tmp_path) == [1.0]
    assert len(_superseded._cache._tables) == before
    # Rewritten within the file system's clock tick, mtime may not move: not cached, so
    # the duplicate appearing now is seen.
    write_parquet(path, [row, {**row, "created": at(0.5), "x": 5.0}])
    assert fetch(spine_of((1, at(1))), view(src), tmp_path) == [5.0]


def test_a_null_feature_is_the_answer_not_a_hole_to_skip(tmp_path: Path) -> None:
    rows = [
        {"user_id": 1, "event_timestamp": at(0), "x": 1.0, "y": 5.0},
        {"user_id": 1, "event_timestamp": at(1), "x": None, "y": 6.0},
    ]
    fv = view(ParquetSource(write_parquet(tmp_path / "f.parquet", rows)), "x", "y")
    job = get_historical_features(
        spine_of((1, at(2))), [ViewRequest(fv, ("x", "y"))], offline_dir=tmp_path
    )
    assert job.to_arrow().select(["x", "y"]).to_pylist() == [{"x": None, "y": 6.0}]


def test_unknown_entities_and_null_keys_or_times_get_nulls(tmp_path: Path, created_source) -> None:
    spine = pd.DataFrame(
        {
            "user_id": pd.array([1, 99, None, 1], dtype="Int64"),
            "event_timestamp": pd.to_datetime([at(70), at(70), at(70), None]),
        }
    )
    assert fetch(spine, view(created_source), tmp_path) == [3.0, None, None, None]


def test_rows_without_a_created_time_are_never_used(tmp_path: Path) -> None:
    rows = [
        {"user_id": 1, "event_timestamp": at(0), "created": at(0), "x": 1.0},
        {"user_id": 1, "event_timestamp": at(5), "created": None, "x": 2.0},
    ]
    path = write_parquet(tmp_path / "f.parquet", rows, created=pa.timestamp("us"))
    src = ParquetSource(path, created="created")
    assert fetch(spine_of((1, at(10))), view(src), tmp_path) == [1.0]


@pytest.mark.parametrize(
    ("spine_tz", "source_tz"),
    [("Asia/Kolkata", None), (None, "America/New_York"), ("Europe/Paris", "Asia/Tokyo")],
)
def test_time_zones_are_compared_as_instants(
    tmp_path: Path, spine_tz: str | None, source_tz: str | None
) -> None:
    def local(dt: datetime, tz: str | None) -> pd.Timestamp:
        ts = pd.Timestamp(dt).tz_localize("UTC")
        return ts.tz_convert(tz) if tz else ts.tz_localize(None)

    rows = [
        {"user_id": 1, "event_timestamp": local(at(0), source_tz), "x": 1.0},
        {"user_id": 1, "event_timestamp": local(at(60), source_tz), "x": 2.0},
    ]
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    pq.write_table(table, tmp_path / "f.parquet")
    fv = view(ParquetSource(str(tmp_path / "f.parquet")), ttl="30m")
    spine = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1],
            "event_timestamp": [local(at(m), spine_tz) for m in (-1, 30, 59, 60)],
        }
    )
    assert fetch(spine, fv, tmp_path) == [None, 1.0, None, 2.0]


def test_infinite_times_rank_like_any_other(tmp_path: Path) -> None:
    """An event time of -infinity is older than every other, never "unknown"."""
    rows = [
        {"user_id": 1, "event_timestamp": at(5), "created": at(1), "x": 5.0},
        {"user_id": 1, "event_timestamp": at(0), "created": at(10), "x": 0.0},  # -infinity
        {"user_id": 1, "event_timestamp": at(20), "created": at(30), "x": 20.0},  # +infinity
    ]
    path = write_parquet(tmp_path / "f.parquet", rows)
    src = SQLSource(
        "SELECT user_id, CASE WHEN x = 0 THEN '-infinity'::TIMESTAMP "
        "WHEN x = 20 THEN 'infinity'::TIMESTAMP ELSE event_timestamp END AS event_timestamp, "
        "created, x FROM t",
        sources={"t": ParquetSource(path)},
        created="created",
    )
    spine = spine_of((1, at(3)), (1, at(7)), (1, at(12)), (1, at(40)))
    # At 12 both older rows are visible and the one with the greater event time wins.
    assert fetch(spine, view(src), tmp_path) == [None, 5.0, 5.0, 5.0]


def test_times_before_1970_with_a_late_backfill(tmp_path: Path) -> None:
    old = datetime(1960, 1, 1)
    rows = [
        {"user_id": 1, "event_timestamp": old, "created": old, "x": 1.0},
        # Written after the next row was already there: a backfill of an older event.
        {"user_id": 1, "event_timestamp": old + timedelta(hours=1),
         "created": old + timedelta(hours=5), "x": 2.0},
        {"user_id": 1, "event_timestamp": old + timedelta(hours=2),
         "created": old + timedelta(hours=2), "x": 3.0},
    ]  # fmt: skip
    src = ParquetSource(write_parquet(tmp_path / "f.parquet", rows), created="created")
    spine = spine_of(*((1, old + timedelta(hours=h)) for h in (0, 1.5, 3, 6)))
    assert fetch(spine, view(src), tmp_path) == [1.0, 1.0, 3.0, 3.0]


def test_sql_source_with_transformation(tmp_path: Path) -> None:
    tx = [
        {"uid": 1, "ts": at(0), "amount": 10.0},
        {"uid": 1, "ts": at(1), "amount": 5.0},
        {"uid": 2, "ts": at(0), "amount": 7.0},
    ]
    users = [{"uid": 1, "country": "FR"}, {"uid": 2, "country": "DE"}]
    src = SQLSource(
        "SELECT t.uid AS user_id, t.ts, t.amount, u.country FROM tx t JOIN users u USING (uid);",
        sources={
            "tx": ParquetSource(write_parquet(tmp_path / "tx.parquet", tx)),
            "users": ParquetSource(write_parquet(tmp_path / "users.parquet", users)),
        },
        timestamp="ts",
    )
    fv = FeatureView(
        "tx",
        entities=[user],
        source=src,
        schema=[Field("doubled", "float64"), Field("country", "string")],
        transformation="SELECT user_id, ts, amount * 2 AS doubled, country FROM source -- x2",
    )
    job = get_historical_features(
        spine_of((1, at(0.5)), (2, at(3)), (1, at(3))),
        [ViewRequest(fv, ("country", "doubled"))],
        offline_dir=tmp_path,
    )
    assert job.columns == ["user_id", "event_timestamp", "country", "doubled"]
    out = job.to_arrow().select(["country", "doubled"]).to_pylist()
    assert out == [
        {"country": "FR", "doubled": 20.0},
        {"country": "DE", "doubled": 14.0},
        {"country": "FR", "doubled": 10.0},
    ]


def test_two_views_with_same_named_sub_sources_do_not_collide(tmp_path: Path) -> None:
    a = [{"user_id": 1, "event_timestamp": at(0), "v": 1.0}]
    b = [{"user_id": 1, "event_timestamp": at(0), "v": 2.0}]

    def sql_view(name: str, path: str) -> FeatureView:
        src = SQLSource("SELECT * FROM t", sources={"t": ParquetSource(path)})
        return FeatureView(name, entities=[user], source=src, schema=[Field("v", "float64")])

    va = sql_view("a", write_parquet(tmp_path / "a.parquet", a))
    vb = sql_view("b", write_parquet(tmp_path / "b.parquet", b))
    job = get_historical_features(
        spine_of((1, at(1))),
        [ViewRequest(va, ("v",)), ViewRequest(vb, ("v",))],
        offline_dir=tmp_path,
        full_feature_names=True,
    )
    assert job.to_arrow().select(["a__v", "b__v"]).to_pylist() == [{"a__v": 1.0, "b__v": 2.0}]


def test_delta_source_pinned_to_a_version(tmp_path: Path) -> None:
    path = str(tmp_path / "delta")
    first = pd.DataFrame({"user_id": [1], "event_timestamp": [at(0)], "x": [1.0]})
    deltalake.write_deltalake(path, first)
    deltalake.write_deltalake(path, first.assign(event_timestamp=[at(5)], x=[2.0]), mode="append")
    spine = spine_of((1, at(10)))
    assert fetch(spine, view(DeltaSource(path, version=0)), tmp_path) == [1.0]
    assert fetch(spine, view(DeltaSource(path)), tmp_path) == [2.0]


def test_pushed_rows_are_unioned_with_the_source(tmp_path: Path, created_source) -> None:
    offline = tmp_path / "offline"
    pushed = pd.DataFrame(
        {
            "user_id": [1, 3],
            "event_timestamp": pd.to_datetime([at(40), at(0)]).tz_localize("UTC"),
            "created": pd.to_datetime([at(40), at(0)]).tz_localize("UTC"),
            "extra": ["ignored", "ignored"],
            "x": [4.0, 30.0],
        }
    )
    deltalake.write_deltalake(str(offline / "stats"), pushed)
    spine = spine_of((1, at(30)), (1, at(45)), (1, at(70)), (3, at(1)))
    assert fetch(spine, view(created_source), tmp_path) == [2.0, 4.0, 4.0, 30.0]


def test_a_push_source_reads_only_pushed_rows(tmp_path: Path) -> None:
    fv = view(PushSource())
    spine = spine_of((1, at(1)))
    assert fetch(spine, fv, tmp_path) == [None]
    pushed = pd.DataFrame({"user_id": [1], "event_timestamp": [at(0)], "x": [9.0]})
    deltalake.write_deltalake(str(tmp_path / "offline" / "stats"), pushed)
    assert fetch(spine, fv, tmp_path) == [9.0]


def test_a_parquet_glob_reads_every_file_by_column_name(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    write_parquet(
        tmp_path / "parts" / "a.parquet", [{"user_id": 1, "event_timestamp": at(0), "x": 1.0}]
    )
    # Same columns, another order.
    write_parquet(
        tmp_path / "parts" / "b.parquet", [{"x": 2.0, "event_timestamp": at(5), "user_id": 2}]
    )
    fv = view(ParquetSource(str(tmp_path / "parts" / "*.parquet")))
    assert fetch(spine_of((1, at(9)), (2, at(9))), fv, tmp_path) == [1.0, 2.0]


# -- output shape ---------------------------------------------------------------------------


def test_spine_order_columns_dtypes_and_index_are_preserved(tmp_path: Path, created_source) -> None:
    spine = pd.DataFrame(
        {
            "label": [True, False, True],
            "event_timestamp": pd.to_datetime([at(70), at(1), at(15)])
            .tz_localize("UTC")
            .tz_convert("Europe/Berlin"),
            "user_id": np.array([2, 1, 1], dtype=np.int32),
            "note": ["c", "a", "b"],
        },
        index=[30, 10, 20],
    )
    before = spine.copy()
    job = get_historical_features(
        spine, [ViewRequest(view(created_source), ("x",))], offline_dir=tmp_path
    )
    df = job.to_pandas()
    assert list(df.columns) == ["label", "event_timestamp", "user_id", "note", "x"]
    pd.testing.assert_frame_equal(df[list(spine.columns)], before)
    assert df["x"].tolist() == [20.0, 1.0, 2.0]
    table = job.to_arrow()
    assert table.schema.field("event_timestamp").type.tz == "Europe/Berlin"
    assert table.schema.field("user_id").type == pa.int32()
    assert table.column("note").to_pylist() == ["c", "a", "b"]


def test_an_arrow_spine_comes_back_unchanged(tmp_path: Path, created_source) -> None:
    spine = pa.table(
        {
            "user_id": pa.array([1, 2], pa.int64()),
            "event_timestamp": pa.array([at(15), at(6)], pa.timestamp("ns")),
            "w": pa.array([0.5, 1.5]),
        }
    )
    job = get_historical_features(
        spine, [ViewRequest(view(created_source), ("x",))], offline_dir=tmp_path
    )
    table = job.to_arrow()
    assert table.select(["user_id", "event_timestamp", "w"]).equals(spine)
    assert table.column("x").to_pylist() == [2.0, 20.0]
    assert job.to_pandas()["x"].tolist() == [2.0, 20.0]


def test_an_empty_spine_gives_an_empty_typed_result(tmp_path: Path, created_source) -> None:
    spine = spine_of((1, at(0))).iloc[:0]
    table = get_historical_features(
        spine, [ViewRequest(view(created_source), ("x",))], offline_dir=tmp_path
    ).to_arrow()
    assert table.num_rows == 0
    assert table.schema.field("x").type == pa.float64()


def test_overlapping_feature_names_need_full_names(tmp_path: Path, created_source) -> None:
    other = FeatureView(
        "other", entities=[user], source=created_source, schema=[Field("x", "float64")]
    )
    requests = [ViewRequest(view(created_source), ("x",)), ViewRequest(other, ("x",))]
    spine = spine_of((1, at(15)))
    with pytest.raises(InvalidInput, match=r"'stats' and 'other'.*full_feature_names"):
        get_historical_features(spine, requests, offline_dir=tmp_path)
    job = get_historical_features(spine, requests, offline_dir=tmp_path, full_feature_names=True)
    assert job.columns == ["user_id", "event_timestamp", "stats__x", "other__x"]
    assert job.to_arrow().select(["stats__x", "other__x"]).to_pylist() == [
        {"stats__x": 2.0, "other__x": 2.0}
    ]


def test_features_are_cast_to_declared_dtypes(tmp_path: Path) -> None:
    """Widenings that keep every value: int32 -> float64, float16 -> float32."""
    rows = [
        {"user_id": 1, "event_timestamp": at(0), "n": 3, "seen": at(-60), "f": 1.5},
    ]
    path = write_parquet(tmp_path / "f.parquet", rows, n=pa.int32(), f=pa.float16())
    src = ParquetSource(path)
    fv = FeatureView(
        "typed",
        entities=[user],
        source=src,
        schema=[Field("n", "float64"), Field("seen", "timestamp"), Field("f", "float32")],
    )
    job = get_historical_features(
        spine_of((1, at(1))), [ViewRequest(fv, ("n", "seen", "f"))], offline_dir=tmp_path
    )
    schema = job.to_arrow().schema
    assert schema.field("n").type == pa.float64()
    assert schema.field("seen").type == pa.timestamp("us", tz="UTC")
    assert schema.field("f").type == pa.float32()
    assert job.to_arrow().column("seen").to_pylist() == [at(-60).replace(tzinfo=UTC)]


def test_the_job_is_lazy_and_cached(tmp_path: Path) -> None:
    path = tmp_path / "late.parquet"
    fv = view(ParquetSource(str(path)))
    job = get_historical_features(
        spine_of((1, at(1))), [ViewRequest(fv, ("x",))], offline_dir=tmp_path
    )
    assert job.columns == ["user_id", "event_timestamp", "x"]
    with pytest.raises(NotFound, match="stats"):
        job.to_arrow()
    write_parquet(path, [{"user_id": 1, "event_timestamp": at(0), "x": 1.0}])
    job = get_historical_features(
        spine_of((1, at(1))), [ViewRequest(fv, ("x",))], offline_dir=tmp_path
    )
    first = job.to_arrow()
    path.unlink()
    assert job.to_arrow().equals(first)
    assert job.to_pandas()["x"].tolist() == [1.0]


# -- validation -----------------------------------------------------------------------------


def test_spine_validation_names_the_column_and_the_view(tmp_path: Path, created_source) -> None:
    req = [ViewRequest(view(created_source), ("x",))]
    with pytest.raises(InvalidInput, match=r"'user_id'.*'stats'"):
        get_historical_features(
            pd.DataFrame({"event_timestamp": [at(0)]}), req, offline_dir=tmp_path
        )
    with pytest.raises(InvalidInput, match=r"'ts'.*'stats'"):
        get_historical_features(spine_of((1, at(0))), req, offline_dir=tmp_path, timestamp="ts")
    with pytest.raises(InvalidInput, match="must hold timestamps"):
        get_historical_features(
            pd.DataFrame({"user_id": [1], "event_timestamp": ["2024-01-01"]}),
            req,
            offline_dir=tmp_path,
        )
    with pytest.raises(InvalidInput, match="already has a column 'x'"):
        get_historical_features(spine_of((1, at(0))).assign(x=1.0), req, offline_dir=tmp_path)
    with pytest.raises(InvalidInput, match="DataFrame or a pyarrow Table"):
        get_historical_features([(1, at(0))], req, offline_dir=tmp_path)  # type: ignore[arg-type]


def test_view_request_validation(created_source) -> None:
    fv = view(created_source)
    with pytest.raises(InvalidInput, match="no feature 'nope'"):
        ViewRequest(fv, ("nope",))
    with pytest.raises(InvalidInput, match="non-empty list"):
        ViewRequest(fv, ())
    with pytest.raises(InvalidInput, match="twice"):
        ViewRequest(fv, ("x", "x"))
    assert ViewRequest(fv, ["x"]).features == ("x",)  # type: ignore[arg-type]


def test_source_problems_are_reported_with_the_view(tmp_path: Path) -> None:
    rows = [{"user_id": 1, "event_timestamp": "2024-01-01", "x": 1.0}]
    bad_time = view(ParquetSource(write_parquet(tmp_path / "s.parquet", rows)))
    with pytest.raises(InvalidInput, match=r"'stats'.*'event_timestamp'.*timestamp"):
        check_view_source(bad_time, offline_dir=tmp_path)
    rows = [{"user_id": 1, "event_timestamp": at(0), "y": 1.0}]
    missing = view(ParquetSource(write_parquet(tmp_path / "m.parquet", rows)))
    with pytest.raises(InvalidInput, match=r"'stats'.*no column 'x'"):
        check_view_source(missing, offline_dir=tmp_path)
    broken = view(ParquetSource(str(tmp_path / "m.parquet")), transformation="SELEC nonsense")
    with pytest.raises(InvalidInput, match="'stats'"):
        check_view_source(broken, offline_dir=tmp_path)
    with pytest.raises(NotFound, match="nothing-here"):
        check_view_source(view(DeltaSource(str(tmp_path / "nothing-here"))), offline_dir=tmp_path)


def test_view_rows_has_the_normalized_columns(tmp_path: Path, created_source) -> None:
    import duckdb

    con = duckdb.connect()
    try:
        rel = view_rows(con, view(created_source), tmp_path)
        assert rel.columns == ["user_id", "event_ts", "created_ts", "x"]
        assert rel.aggregate("count(*)").fetchall() == [(4,)]
    finally:
        con.close()


# -- windowed views -------------------------------------------------------------------------


def test_windowed_aggregations(tmp_path: Path) -> None:
    rows = [
        {"user_id": 1, "event_timestamp": at(0), "created": at(0), "amount": 10},
        {"user_id": 1, "event_timestamp": at(30), "created": at(30), "amount": None},
        {"user_id": 1, "event_timestamp": at(50), "created": at(50), "amount": 5},
        # Written late: invisible before minute 90.
        {"user_id": 1, "event_timestamp": at(55), "created": at(90), "amount": 100},
    ]
    src = ParquetSource(write_parquet(tmp_path / "e.parquet", rows), created="created")
    w = WindowedFeatureView(
        "tx",
        entities=[user],
        source=src,
        aggregations=[
            Aggregation(None, "count", "1h", name="n"),
            Aggregation("amount", "count", "1h", name="n_amount"),
            Aggregation("amount", "sum", "1h", name="total"),
            Aggregation("amount", "mean", "1h", name="avg"),
            Aggregation("amount", "min", "1h", name="lo"),
            Aggregation("amount", "max", "1h", name="hi"),
            Aggregation("amount", "last", "1h", name="last"),
            Aggregation("amount", "sum", "10m", name="recent"),
        ],
    )
    spine = spine_of((1, at(0)), (1, at(50)), (1, at(60)), (1, at(95)), (2, at(10)), (1, at(40)))
    job = get_historical_features(spine, [ViewRequest(w, w.feature_names)], offline_dir=tmp_path)
    got = job.to_arrow().select(list(w.feature_names)).to_pylist()
    assert got == [
        dict(n=1, n_amount=1, total=10, avg=10.0, lo=10, hi=10, last=10, recent=10),
        dict(n=3, n_amount=2, total=15, avg=7.5, lo=5, hi=10, last=5, recent=5),
        # Minute 0 has left the 1h window (t - 1h < event_ts is strict).
        dict(n=2, n_amount=1, total=5, avg=5.0, lo=5, hi=5, last=5, recent=None),
        dict(n=2, n_amount=2, total=105, avg=52.5, lo=5, hi=100, last=100, recent=None),
        dict(n=0, n_amount=0, total=None, avg=None, lo=None, hi=None, last=None, recent=None),
        dict(n=2, n_amount=1, total=10, avg=10.0, lo=10, hi=10, last=None, recent=None),
    ]
    types = job.to_arrow().schema
    assert types.field("n").type == pa.int64() and types.field("total").type == pa.int64()


# -- materialization ------------------------------------------------------------------------


def test_latest_per_entity(tmp_path: Path, created_source) -> None:
    fv = view(created_source)
    table = latest_per_entity(fv, end=at(30), offline_dir=tmp_path)
    assert table.column_names == ["user_id", "event_ts", "created_ts", "x"]
    assert table.schema.field("event_ts").type == pa.timestamp("us", tz="UTC")
    assert table.to_pylist() == [
        {"user_id": 1, "event_ts": _utc(at(10)), "created_ts": _utc(at(10)), "x": 2.0},
        {"user_id": 2, "event_ts": _utc(at(5)), "created_ts": _utc(at(5)), "x": 20.0},
    ]
    later = latest_per_entity(fv, start=at(5), end=at(60), offline_dir=tmp_path).to_pylist()
    assert [(r["user_id"], r["x"]) for r in later] == [(1, 3.0)]
    aware = at(60).replace(tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    assert latest_per_entity(fv, end=aware, offline_dir=tmp_path).column("x").to_pylist() == [
        3.0,
        20.0,
    ]


def test_latest_per_entity_without_created(tmp_path: Path) -> None:
    rows = [{"user_id": 1, "event_timestamp": at(0), "x": 1.0}]
    fv = view(ParquetSource(write_parquet(tmp_path / "f.parquet", rows)))
    table = latest_per_entity(fv, end=at(1), offline_dir=tmp_path)
    assert table.column("created_ts").to_pylist() == [None]
    assert table.schema.field("created_ts").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(InvalidInput, match="'end'"):
        latest_per_entity(fv, end="2024-01-01", offline_dir=tmp_path)  # type: ignore[arg-type]


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC)


# -- more shapes ----------------------------------------------------------------------------


def test_views_keyed_by_several_entities(tmp_path: Path) -> None:
    merchant = Entity("merchant", join_keys=["merchant_id"])
    rows = [
        {"user_id": 1, "merchant_id": "a", "event_timestamp": at(0), "x": 1.0},
        {"user_id": 1, "merchant_id": "b", "event_timestamp": at(1), "x": 2.0},
        {"user_id": 2, "merchant_id": "a", "event_timestamp": at(2), "x": 3.0},
    ]
    fv = FeatureView(
        "pair",
        entities=[user, merchant],
        source=ParquetSource(write_parquet(tmp_path / "f.parquet", rows)),
        schema=[Field("x", "float64")],
    )
    spine = pd.DataFrame(
        {
            "merchant_id": ["a", "b", "a", "b"],
            "user_id": [1, 1, 2, 2],
            "event_timestamp": pd.to_datetime([at(5)] * 4),
        }
    )
    assert fetch(spine, fv, tmp_path) == [1.0, 2.0, 3.0, None]


def test_no_requests_returns_the_spine(tmp_path: Path) -> None:
    spine = spine_of((1, at(0)))
    job = get_historical_features(spine, [], offline_dir=tmp_path)
    pd.testing.assert_frame_equal(job.to_pandas(), spine)
    assert job.to_arrow().column_names == ["user_id", "event_timestamp"]


def test_a_missing_delta_version_is_not_found(tmp_path: Path) -> None:
    path = str(tmp_path / "delta")
    deltalake.write_deltalake(
        path, pd.DataFrame({"user_id": [1], "event_timestamp": [at(0)], "x": [1.0]})
    )
    job = get_historical_features(
        spine_of((1, at(1))),
        [ViewRequest(view(DeltaSource(path, version=7)), ("x",))],
        offline_dir=tmp_path,
    )
    with pytest.raises(NotFound, match="version 7"):
        job.to_arrow()


def test_incomparable_join_key_types_are_invalid_input(tmp_path: Path, created_source) -> None:
    spine = pd.DataFrame({"user_id": ["x"], "event_timestamp": pd.to_datetime([at(0)])})
    spine["user_id"] = spine["user_id"].astype(object).map(lambda v: [v])
    job = get_historical_features(
        spine, [ViewRequest(view(created_source), ("x",))], offline_dir=tmp_path
    )
    with pytest.raises(InvalidInput, match="'stats'"):
        job.to_arrow()


def test_pushed_rows_may_lack_a_later_feature(tmp_path: Path) -> None:
    pushed = pd.DataFrame({"user_id": [1], "event_timestamp": [at(0)], "x": [1.0]})
    deltalake.write_deltalake(str(tmp_path / "stats"), pushed)
    fv = view(PushSource(), "x", "y")
    job = get_historical_features(
        spine_of((1, at(1))), [ViewRequest(fv, ("x", "y"))], offline_dir=tmp_path
    )
    assert job.to_arrow().select(["x", "y"]).to_pylist() == [{"x": 1.0, "y": None}]


def test_windowed_view_over_pushed_events(tmp_path: Path) -> None:
    w = WindowedFeatureView(
        "clicks",
        entities=[user],
        source=PushSource(created="written"),
        aggregations=[Aggregation(None, "count", "1h", name="n")],
    )
    spine = spine_of((1, at(30)))
    job = get_historical_features(spine, [ViewRequest(w, ("n",))], offline_dir=tmp_path)
    assert job.to_arrow().column("n").to_pylist() == [0]
    pushed = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "event_timestamp": [at(0), at(10), at(20)],
            "written": [at(0), at(10), at(40)],
        }
    )
    deltalake.write_deltalake(str(tmp_path / "clicks"), pushed)
    job = get_historical_features(spine, [ViewRequest(w, ("n",))], offline_dir=tmp_path)
    assert job.to_arrow().column("n").to_pylist() == [2]


def test_reserved_column_names_are_rejected(tmp_path: Path) -> None:
    rows = [{"user_id": 1, "event_timestamp": at(0), "event_ts": 1.0}]
    fv = view(ParquetSource(write_parquet(tmp_path / "f.parquet", rows)), "event_ts")
    with pytest.raises(InvalidInput, match="reserved"):
        check_view_source(fv, offline_dir=tmp_path)


@pytest.mark.parametrize("chunks", [1, 3])
def test_results_go_back_to_spine_order_whatever_the_column_type(chunks: int) -> None:
    """Fixed-width columns are scattered to their rows, others gathered: same result."""
    rng = np.random.default_rng(3)
    n = 40
    some_null = rng.random(n) < 0.3
    table = pa.table(
        {
            "f": pa.array(rng.random(n), mask=some_null),
            "i": pa.array(rng.integers(-5, 5, n)),
            "i32": pa.array(rng.integers(-5, 5, n).astype(np.int32), mask=~some_null),
            "b": pa.array(rng.random(n) < 0.5, mask=some_null),
            "s": pa.array([None if m else f"v{j}" for j, m in enumerate(some_null)]),
            "t": pa.array(rng.integers(0, 10**15, n), pa.timestamp("us")),
            "d": pa.array([None] * n, pa.float64()),
            ROW: pa.array(rng.permutation(n)),
        }
    )
    cut = np.linspace(0, n, chunks + 1).astype(int).tolist()
    table = pa.concat_tables([table.slice(a, b - a) for a, b in itertools.pairwise(cut)])
    got = in_spine_order(table, ROW, {})
    want = table.drop_columns([ROW]).take(np.argsort(table.column(ROW).to_numpy()))
    assert got.schema == want.schema
    assert got.equals(want)


@pytest.mark.parametrize("chunks", [1, 3])
def test_a_fresh_flag_nulls_its_columns_in_spine_order(chunks: int) -> None:
    """Columns named in ``fresh`` are null where their flag is false or NULL; others not."""
    rng = np.random.default_rng(4)
    n = 50
    own_null = rng.random(n) < 0.2
    flag = pa.array(rng.random(n) < 0.6, mask=rng.random(n) < 0.2)
    table = pa.table(
        {
            "a": pa.array(rng.random(n), mask=own_null),
            "b": pa.array(rng.random(n), mask=own_null),
            "c": pa.array(rng.random(n)),
            "s": pa.array([f"v{j}" for j in range(n)]),
            "other": pa.array(rng.random(n)),
            "__fresh": flag,
            ROW: pa.array(rng.permutation(n)),
        }
    )
    cut = np.linspace(0, n, chunks + 1).astype(int).tolist()
    table = pa.concat_tables([table.slice(a, b - a) for a, b in itertools.pairwise(cut)])
    named = dict.fromkeys(["a", "b", "c", "s"], "__fresh")
    got = in_spine_order(table, ROW, named)

    keep = pc.fill_null(table.column("__fresh"), False).combine_chunks()
    order = np.argsort(table.column(ROW).to_numpy())
    want = {}
    for name in ["a", "b", "c", "s", "other"]:
        column = table.column(name).combine_chunks()
        if name in named:
            column = pc.if_else(keep, column, pa.scalar(None, column.type))
        want[name] = column.take(pa.array(order))
    assert got.column_names == list(want)
    for name, column in want.items():
        assert got.column(name).combine_chunks().equals(column), name
    assert got.column("other").null_count == 0
