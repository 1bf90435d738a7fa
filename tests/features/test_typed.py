"""Typed features: declared dtypes checked against the source, inferred schemas, absolute
source paths, entity keys converted alike online and offline, per-view materialization."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import deltalake
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kiln.errors import InvalidInput, KilnError
from kiln.features import (
    Aggregation,
    DeltaSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    ParquetSource,
    PushSource,
    SQLSource,
    WindowedFeatureView,
)
from kiln.features.store import FeatureStore, MaterializeReport

NOW = datetime.now(UTC).replace(microsecond=0)
user = Entity("user", join_keys=["user_id"])
code = Entity("code", join_keys=["code"])


def _table(**columns: pa.Array) -> pa.Table:
    n = len(next(iter(columns.values())))
    times = pa.array([NOW - timedelta(hours=n - i) for i in range(n)], pa.timestamp("us", "UTC"))
    return pa.table(
        {"user_id": pa.array(range(n), pa.int64()), "event_timestamp": times, **columns}
    )


def _view(source: Any, *fields: Field, name: str = "stats", **kw: Any) -> FeatureView:
    return FeatureView(name, entities=[user], source=source, schema=fields or None, **kw)


# -- declared dtypes against the source's schema -------------------------------------------

REFUSED = [
    (pa.array(["1.5", "2"]), "float64", "VARCHAR"),
    (pa.array([1.5, 2.0]), "int64", "DOUBLE"),
    (pa.array([1.5, 2.0]), "float32", "DOUBLE"),
    (pa.array([NOW, NOW], pa.timestamp("us")), "int64", "TIMESTAMP"),
    (pa.array([1, 2], pa.int64()), "int32", "BIGINT"),
    (pa.array([1, 2], pa.int64()), "float64", "BIGINT"),
    (pa.array([1, 2], pa.int64()), "string", "BIGINT"),
    (pa.array([True, False]), "int64", "BOOLEAN"),
    (pa.array([1, 2], pa.int32()), "timestamp", "INTEGER"),
]
ACCEPTED = [
    (pa.array([1, 2], pa.int32()), "int64", [1, 2]),
    (pa.array([1, 2], pa.int32()), "float64", [1.0, 2.0]),
    (pa.array([1, 2], pa.int16()), "float32", [1.0, 2.0]),
    (pa.array([1.5, 2.5], pa.float32()), "float64", [1.5, 2.5]),
    (pa.array([1, 2], pa.uint32()), "int64", [1, 2]),
    (pa.array(["a", "b"]), "string", ["a", "b"]),
]


@pytest.mark.parametrize(("column", "declared", "source_type"), REFUSED)
def test_apply_refuses_casts_that_can_fail_or_change_values(
    tmp_path: Path, column: pa.Array, declared: str, source_type: str
) -> None:
    pq.write_table(_table(x=column), tmp_path / "s.parquet")
    fs = FeatureStore()
    view = _view(ParquetSource(str(tmp_path / "s.parquet")), Field("x", declared))
    with pytest.raises(InvalidInput) as caught:
        fs.apply([user, view])
    message = str(caught.value)
    assert "FeatureView 'stats'" in message and "field 'x'" in message
    assert f"declared {declared}" in message and f"is {source_type}" in message
    assert fs.list_definitions() == []


@pytest.mark.parametrize(("column", "declared", "values"), ACCEPTED)
def test_apply_accepts_widenings_that_keep_every_value(
    tmp_path: Path, column: pa.Array, declared: str, values: list[Any]
) -> None:
    pq.write_table(_table(x=column), tmp_path / "s.parquet")
    fs = FeatureStore()
    fs.apply([user, _view(ParquetSource(str(tmp_path / "s.parquet")), Field("x", declared))])
    spine = pd.DataFrame({"user_id": [0, 1], "event_timestamp": NOW})
    assert fs.get_historical_features(spine, ["stats:x"]).to_pandas()["x"].tolist() == values


def test_delta_and_sql_sources_are_checked_from_their_schema(tmp_path: Path) -> None:
    deltalake.write_deltalake(tmp_path / "d", _table(x=pa.array(["a", "b"])))
    pq.write_table(_table(x=pa.array(["a", "b"])), tmp_path / "s.parquet")
    fs = FeatureStore()
    delta = _view(DeltaSource(str(tmp_path / "d")), Field("x", "float64"))
    with pytest.raises(InvalidInput, match=r"field 'x' is declared float64.*is VARCHAR"):
        fs.apply([user, delta])
    sql = _view(
        SQLSource(
            "SELECT user_id, event_timestamp, x || '!' AS y FROM t",
            sources={"t": ParquetSource(str(tmp_path / "s.parquet"))},
        ),
        Field("y", "int64"),
    )
    with pytest.raises(InvalidInput, match=r"field 'y' is declared int64.*is VARCHAR"):
        fs.apply([user, sql])
    cast = _view(
        ParquetSource(str(tmp_path / "s.parquet")),
        Field("n", "int64"),
        transformation="SELECT *, length(x) AS n FROM source",
    )
    fs.apply([user, cast])  # a conversion written in the transformation is the user's choice


def test_a_declared_field_missing_from_the_source_names_the_columns(tmp_path: Path) -> None:
    pq.write_table(_table(x=pa.array([1.0, 2.0])), tmp_path / "s.parquet")
    view = _view(ParquetSource(str(tmp_path / "s.parquet")), Field("y", "float64"))
    with pytest.raises(
        InvalidInput,
        match=r"FeatureView 'stats': its source has no column 'y' \(feature\); it has "
        r"user_id, event_timestamp, x",
    ):
        FeatureStore().apply([user, view])


# -- inferred schemas ---------------------------------------------------------------------


def test_schema_is_inferred_from_the_source_and_shown_by_plan(tmp_path: Path) -> None:
    table = _table(
        spend=pa.array([1.5, 2.5]),
        count=pa.array([3, 4], pa.int64()),
        country=pa.array(["NL", "DE"]),
        flagged=pa.array([True, False]),
        seen=pa.array([NOW, NOW], pa.timestamp("ns")),
    ).append_column("created", pa.array([NOW, NOW], pa.timestamp("us", "UTC")))
    pq.write_table(table, tmp_path / "s.parquet")
    view = _view(ParquetSource(str(tmp_path / "s.parquet"), created="created"))
    assert view.schema == () and view.feature_names == ()
    fs = FeatureStore()
    plan = fs.plan([user, view])
    (change,) = [c for c in plan.changes if c.name == "stats"]
    expected = (
        "spend: float64",
        "count: int64",
        "country: string",
        "flagged: bool",
        "seen: timestamp",
    )
    assert change.inferred == expected
    assert "inferred spend: float64" in str(plan)
    assert plan.to_dict()[1]["inferred"] == list(expected)
    fs.apply([user, view, FeatureService("svc", features=["stats:count"])])
    stored = fs.get("stats")
    assert isinstance(stored, FeatureView)
    assert [f"{f.name}: {f.dtype}" for f in stored.schema] == list(expected)
    # Applying the same schema-less definition again changes nothing.
    assert not fs.apply([user, view]).has_changes
    spine = pd.DataFrame({"user_id": [1], "event_timestamp": NOW})
    assert fs.get_historical_features(spine, "svc").to_pandas()["count"].tolist() == [4]


def test_inference_refuses_what_no_dtype_holds(tmp_path: Path) -> None:
    pq.write_table(_table(tags=pa.array([[1], [2]])), tmp_path / "s.parquet")
    with pytest.raises(InvalidInput, match=r"column 'tags' of its source is BIGINT\[\]"):
        FeatureStore().plan([user, _view(ParquetSource(str(tmp_path / "s.parquet")))])
    with pytest.raises(InvalidInput, match="needs schema="):
        _view(PushSource())
    with pytest.raises(InvalidInput, match="list its features as 'stats:feature'"):
        FeatureService("svc", features=[_view(ParquetSource("s.parquet"))])


# -- relative source paths ----------------------------------------------------------------


def test_relative_paths_are_stored_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    elsewhere.mkdir()
    pq.write_table(_table(x=pa.array([1.0, 2.0])), project / "data" / "s.parquet")
    monkeypatch.chdir(project)
    relative = ParquetSource("data/s.parquet")
    sql = SQLSource("SELECT * FROM t", sources={"t": ParquetSource("data/*.parquet")})
    FeatureStore().apply([user, _view(relative), _view(sql, name="by_sql")])

    monkeypatch.chdir(elsewhere)
    fs = FeatureStore()
    stats, by_sql = fs.get("stats"), fs.get("by_sql")
    assert isinstance(stats, FeatureView) and isinstance(by_sql, FeatureView)
    assert stats.source == ParquetSource(str(project / "data" / "s.parquet"))
    assert isinstance(by_sql.source, SQLSource)
    assert by_sql.source.sources["t"] == ParquetSource(str(project / "data" / "*.parquet"))
    report = fs.materialize(end=NOW)
    assert report.ok and {r.view: r.entities for r in report} == {"stats": 2, "by_sql": 2}
    assert fs.get_online_features([{"user_id": 1}], ["stats:x"])["x"] == [2.0]
    # An explicit base, as the CLI passes the definitions file's directory.
    plan = fs.plan([user, _view(ParquetSource("data/s.parquet"))], base=project)
    assert not plan.has_changes


# -- entity keys ----------------------------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path) -> FeatureStore:
    """``stats`` keyed by an int64 user_id, ``codes`` keyed by a string code."""
    pq.write_table(_table(x=pa.array([10.0, 11.0, 17.0])), tmp_path / "users.parquet")
    codes = pa.table(
        {
            "code": pa.array(["7", "abc", "8"]),
            "event_timestamp": pa.array([NOW - timedelta(hours=1)] * 3, pa.timestamp("us")),
            "y": pa.array([70.0, 1.0, 80.0]),
        }
    )
    pq.write_table(codes, tmp_path / "codes.parquet")
    fs = FeatureStore()
    fs.apply(
        [
            user,
            code,
            _view(ParquetSource(str(tmp_path / "users.parquet"))),
            FeatureView(
                "codes", entities=[code], source=ParquetSource(str(tmp_path / "codes.parquet"))
            ),
        ]
    )
    assert fs.materialize(end=NOW).ok
    return fs


def _offline(fs: FeatureStore, key: str, values: list[Any], feature: str) -> list[Any]:
    spine = pd.DataFrame({key: values, "event_timestamp": [NOW] * len(values)})
    column = fs.get_historical_features(spine, [feature]).to_pandas().iloc[:, -1]
    return [None if pd.isna(v) else v for v in column]


def _online(fs: FeatureStore, key: str, values: list[Any], feature: str) -> list[Any]:
    return list(fs.get_online_features({key: values}, [feature]).values())[-1]


def test_key_types_are_recorded_at_apply(keyed: FeatureStore) -> None:
    stats, codes = keyed.get("stats"), keyed.get("codes")
    assert isinstance(stats, FeatureView) and isinstance(codes, FeatureView)
    assert stats.key_types == {"user_id": "int64"} and codes.key_types == {"code": "string"}


@pytest.mark.parametrize(
    ("key", "feature", "given", "expected"),
    [
        (
            "user_id",
            "stats:x",
            [1, "1", "002", 2.0, None, 99, "99"],
            [11.0, 11.0, 17.0, 17.0, None, None, None],
        ),
        ("code", "codes:y", ["7", 7, 8, "abc", None, 9], [70.0, 70.0, 80.0, 1.0, None, None]),
    ],
)
def test_the_same_keys_find_the_same_rows_online_and_offline(
    keyed: FeatureStore, key: str, feature: str, given: list[Any], expected: list[Any]
) -> None:
    assert _online(keyed, key, given, feature) == expected
    assert _offline(keyed, key, given, feature) == expected
    # Row by row, as a server asks, and as one request of rows.
    for value, want in zip(given, expected, strict=True):
        assert list(keyed.get_online_features([{key: value}], [feature]).values())[-1] == [want]


@pytest.mark.parametrize(
    ("key", "feature", "given", "bad"),
    [
        ("user_id", "stats:x", [1, 7.5], "7.5"),
        ("user_id", "stats:x", [1, "7.0"], "'7.0'"),
        ("user_id", "stats:x", [1, "abc"], "'abc'"),
        ("user_id", "stats:x", [1, True], "True"),
        ("code", "codes:y", ["7", 7.5], "7.5"),
    ],
)
def test_keys_that_do_not_convert_exactly_are_refused_on_both_paths(
    keyed: FeatureStore, key: str, feature: str, given: list[Any], bad: str
) -> None:
    message = rf"entity key '{key}', row 1: {bad} does not convert"
    with pytest.raises(InvalidInput, match=message):
        _online(keyed, key, given, feature)
    with pytest.raises(InvalidInput, match=message):
        keyed.get_online_features([{key: v} for v in given], [feature])
    with pytest.raises(InvalidInput, match=message):
        _offline(keyed, key, given, feature)


def test_views_that_type_one_key_differently_are_refused_together(
    keyed: FeatureStore, tmp_path: Path
) -> None:
    table = _table(z=pa.array([1.0])).set_column(0, "user_id", pa.array(["0"]))
    pq.write_table(table, tmp_path / "text_users.parquet")
    keyed.apply([_view(ParquetSource(str(tmp_path / "text_users.parquet")), name="text_stats")])
    with pytest.raises(InvalidInput, match=r"hold join key 'user_id' as int64 and string"):
        keyed.get_online_features([{"user_id": 1}], ["stats:x", "text_stats:z"])
    spine = pd.DataFrame({"user_id": [1], "event_timestamp": [NOW]})
    with pytest.raises(InvalidInput, match=r"hold join key 'user_id' as int64 and string"):
        keyed.get_historical_features(spine, ["stats:x", "text_stats:z"])


# -- materialization, view by view ------------------------------------------------------------


def test_one_failing_view_does_not_stop_the_others(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        pq.write_table(_table(x=pa.array([1.0, 2.0])), tmp_path / f"{name}.parquet")
    fs = FeatureStore()
    fs.apply([user, *(_view(ParquetSource(str(tmp_path / f"{n}.parquet")), name=n) for n in "abc")])
    os.remove(tmp_path / "b.parquet")
    report = fs.materialize(end=NOW)
    assert isinstance(report, MaterializeReport) and not report.ok
    assert [r.view for r in report] == ["a", "c"] and len(report) == 2
    (failure,) = report.failures
    assert failure.view == "b" and "b.parquet" in failure.error
    for view in ("a", "c"):
        assert fs.get_online_features([{"user_id": 1}], [f"{view}:x"])["x"] == [2.0]
    with pytest.raises(KilnError, match=r"failed for 1 view\(s\): b: .*b\.parquet"):
        report.raise_for_failures()
    incremental = fs.materialize_incremental(end=NOW + timedelta(seconds=1))
    assert [f.view for f in incremental.failures] == ["b"] and len(incremental) == 2


def test_windowed_views_convert_keys_alike(tmp_path: Path) -> None:
    pq.write_table(_table(amount=pa.array([1.0, 2.0, 4.0])), tmp_path / "tx.parquet")
    windowed = WindowedFeatureView(
        "tx",
        entities=[user],
        source=ParquetSource(str(tmp_path / "tx.parquet")),
        aggregations=[Aggregation("amount", "sum", "1d", name="spend")],
    )
    fs = FeatureStore()
    fs.apply([user, windowed])
    assert fs.get("tx").key_types == {"user_id": "int64"}  # type: ignore[union-attr]
    assert fs.materialize(end=NOW).ok
    given = ["2", 2.0, None]
    assert _online(fs, "user_id", given, "tx:spend") == [4.0, 4.0, None]
    assert _offline(fs, "user_id", given, "tx:spend") == [4.0, 4.0, None]


def test_declared_key_types_must_match_the_source(tmp_path: Path) -> None:
    pq.write_table(_table(x=pa.array([1.0])), tmp_path / "s.parquet")
    view = _view(ParquetSource(str(tmp_path / "s.parquet")), key_types={"user_id": "string"})
    with pytest.raises(InvalidInput, match="join key 'user_id' is declared string, but its source"):
        FeatureStore().apply([user, view])


def test_pushed_keys_are_stored_as_requests_find_them(keyed: FeatureStore) -> None:
    pushed = {"user_id": ["5", "6"], "event_timestamp": [NOW, NOW], "x": [50.0, 60.0]}
    assert keyed.push("stats", pushed) == 2
    assert _online(keyed, "user_id", [5, "6"], "stats:x") == [50.0, 60.0]
    assert _offline(keyed, "user_id", [5, "6"], "stats:x") == [50.0, 60.0]
    with pytest.raises(InvalidInput, match=r"entity key 'user_id', row 1: 'x' does not convert"):
        keyed.push("stats", {**pushed, "user_id": ["5", "x"]})
