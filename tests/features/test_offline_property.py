"""The offline engine against a brute-force reference of the same contract.

The reference loops over spine rows, filters the feature rows by the rules written in
``kiln.features.offline`` and picks the maximum: no joins, no time-zone tricks, so a
disagreement means the SQL (ASOF join, late-row correction, windows) is wrong. Times are
drawn from a coarse grid so that duplicates, TTL boundaries and ``created == t`` happen
often; late rows are created far after their event.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import deltalake
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.features import (
    Aggregation,
    Entity,
    FeatureView,
    Field,
    ParquetSource,
    WindowedFeatureView,
)
from kiln.features.offline import ViewRequest, get_historical_features

T0 = datetime(2024, 3, 10, 6, 0)  # a DST change in New York that day
ZONES = [None, "UTC", "America/New_York", "Asia/Kolkata"]
user = Entity("user", join_keys=["user_id"])
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Row:
    key: int
    ev: datetime | None
    cr: datetime | None
    x: float | None


def minute(m: int | None, micros: int = 0) -> datetime | None:
    return None if m is None else T0 + timedelta(minutes=m, microseconds=micros)


def _pick(options: list[Any]) -> st.SearchStrategy[Any]:
    """Each option about equally likely (``one_of`` leans towards the first, simplest)."""
    return st.integers(0, len(options) - 1).map(lambda i: options[i])


def row_strategy(with_created: bool) -> st.SearchStrategy[Row]:
    # Created relative to the event: mostly soon after, sometimes at the same instant,
    # sometimes far later (a backfill), rarely unknown.
    lag = _pick([0, 1, 2, 3, 4, 0, 2, 150, 155, None])
    event = _pick([*range(8), None])
    value = _pick([*(float(v) for v in range(-4, 5)), None])

    def build(key: int, ev: int | None, lag: int | None, x: float | None) -> Row:
        cr = None if ev is None or lag is None or not with_created else minute(ev + lag)
        return Row(key, minute(ev), cr, x)

    return st.builds(build, _pick([1, 2]), event, lag, value)


def rows_strategy(with_created: bool) -> st.SearchStrategy[list[Row]]:
    # Rows tying on (event, created) are interchangeable by contract; keep them out.
    def identity(r: Row) -> tuple[Any, ...]:
        return (r.key, r.ev, r.cr) if with_created else (r.key, r.ev)

    return st.lists(row_strategy(with_created), min_size=8, max_size=30, unique_by=identity)


spine_rows = st.lists(
    st.tuples(
        _pick([1, 2, 1, 2, 3, None]),
        st.builds(
            lambda m, micros: None if m is None else minute(m, micros),
            _pick([*range(13), 160, None]),
            _pick([0, 0, 1, -1]),
        ),
    ),
    min_size=6,
    max_size=20,
)


def in_zone(values: list[datetime | None], zone: str | None) -> pa.Array:
    """The same instants (naive values are UTC) written in ``zone``."""
    if zone is None:
        return pa.array(values, pa.timestamp("us"))
    utc = pd.Series(pd.to_datetime(values)).dt.tz_localize("UTC")
    return pa.Array.from_pandas(utc.dt.tz_convert(zone)).cast(pa.timestamp("us", tz=zone))


def source_table(rows: list[Row], ev_zone: str | None, cr_zone: str | None) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([r.key for r in rows], pa.int64()),
            "ts": in_zone([r.ev for r in rows], ev_zone),
            "written": in_zone([r.cr for r in rows], cr_zone),
            "x": pa.array([r.x for r in rows], pa.float64()),
            "rid": pa.array(range(len(rows)), pa.int64()),
        }
    )


def spine_frame(spine: list[tuple[int | None, datetime | None]], zone: str | None) -> pd.DataFrame:
    times = pd.Series(pd.to_datetime([t for _, t in spine])).astype("datetime64[us]")
    if zone is not None:
        times = times.dt.tz_localize("UTC").dt.tz_convert(zone)
    return pd.DataFrame(
        {
            "user_id": pd.array([k for k, _ in spine], dtype="Int64"),
            "when": times,
            "label": range(len(spine)),
        }
    )


def reference(
    rows: list[Row],
    spine: list[tuple[int | None, datetime | None]],
    ttl: timedelta | None,
    with_created: bool,
) -> list[tuple[float | None, int | None]]:
    out: list[tuple[float | None, int | None]] = []
    for key, t in spine:
        best: tuple[Any, ...] | None = None
        for rid, r in enumerate(rows):
            if key is None or t is None or r.key != key or r.ev is None or r.ev > t:
                continue
            if with_created and (r.cr is None or r.cr > t):
                continue
            rank = (r.ev, r.cr) if with_created else (r.ev,)
            if best is None or rank > best[0]:
                best = (rank, r, rid)
        if best is None or (ttl is not None and t is not None and best[1].ev < t - ttl):
            out.append((None, None))
        else:
            out.append((best[1].x, best[2]))
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    with_created = draw(st.booleans())
    return {
        "with_created": with_created,
        "rows": draw(rows_strategy(with_created)),
        "spine": draw(spine_rows),
        "ttl": draw(_pick([None, 1, 3, 5, 10])),
        "zones": draw(st.tuples(*[st.sampled_from(ZONES)] * 3)),
        "pushed": draw(st.integers(0, 25)),  # rows from this index on are pushed
        "push_utc": draw(st.booleans()),
    }


@SETTINGS
@given(scenarios())
def test_point_in_time_join_matches_brute_force(case: dict[str, Any]) -> None:
    rows: list[Row] = case["rows"]
    spine_zone, ev_zone, cr_zone = case["zones"]
    ttl = timedelta(minutes=case["ttl"]) if case["ttl"] else None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = source_table(rows, ev_zone, cr_zone)
        cut = min(case["pushed"], len(rows))
        pq.write_table(table.slice(0, cut), root / "rows.parquet")
        if cut < len(rows):
            zone = "UTC" if case["push_utc"] else None
            pushed = source_table(rows, zone, zone).slice(cut)
            deltalake.write_deltalake(str(root / "offline" / "fv"), pushed)
        source = ParquetSource(
            str(root / "rows.parquet"),
            timestamp="ts",
            created="written" if case["with_created"] else None,
        )
        fv = FeatureView(
            "fv",
            entities=[user],
            source=source,
            schema=[Field("x", "float64"), Field("rid", "int64")],
            ttl=ttl,
        )
        spine = spine_frame(case["spine"], spine_zone)
        got = get_historical_features(
            spine, [ViewRequest(fv, ("x", "rid"))], offline_dir=root / "offline", timestamp="when"
        ).to_arrow()
    expected = reference(rows, case["spine"], ttl, case["with_created"])
    pairs = zip(got.column("x").to_pylist(), got.column("rid").to_pylist(), strict=True)
    assert list(pairs) == expected
    assert got.column("label").to_pylist() == list(range(len(case["spine"])))


AGGS = [
    Aggregation(None, "count", "3m", name="n"),
    Aggregation("x", "count", "5m", name="n_x"),
    Aggregation("x", "sum", "3m", name="total"),
    Aggregation("x", "mean", "5m", name="avg"),
    Aggregation("x", "min", "2m", name="lo"),
    Aggregation("x", "max", "4m", name="hi"),
    Aggregation("x", "last", "3m", name="last"),
]


def window_reference(
    rows: list[Row], key: int | None, t: datetime | None, agg: Aggregation, with_created: bool
) -> Any:
    inside = [
        r
        for r in rows
        if key is not None
        and t is not None
        and r.key == key
        and r.ev is not None
        and t - agg.window < r.ev <= t
        and (not with_created or (r.cr is not None and r.cr <= t))
    ]
    values = [r.x for r in inside if r.x is not None]
    if agg.function == "count":
        return len(inside) if agg.column is None else len(values)
    if agg.function == "last":
        if not inside:
            return None
        return max(inside, key=lambda r: (r.ev, r.cr) if with_created else (r.ev,)).x
    if not values:
        return None
    return {"sum": sum, "mean": lambda v: sum(v) / len(v), "min": min, "max": max}[agg.function](
        values
    )


@SETTINGS
@given(
    st.booleans().flatmap(lambda c: st.tuples(st.just(c), rows_strategy(c))),
    spine_rows,
    st.tuples(st.sampled_from(ZONES), st.sampled_from(ZONES)),
)
def test_windowed_aggregations_match_brute_force(
    drawn: tuple[bool, list[Row]],
    spine: list[tuple[int | None, datetime | None]],
    zones: tuple[str | None, str | None],
) -> None:
    with_created, rows = drawn
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        pq.write_table(source_table(rows, zones[0], zones[0]), path)
        source = ParquetSource(
            str(path), timestamp="ts", created="written" if with_created else None
        )
        view = WindowedFeatureView("w", entities=[user], source=source, aggregations=AGGS)
        got = get_historical_features(
            spine_frame(spine, zones[1]),
            [ViewRequest(view, view.feature_names)],
            offline_dir=Path(tmp),
            timestamp="when",
        ).to_arrow()
    for agg in AGGS:
        actual = got.column(agg.name).to_pylist()
        for i, (key, t) in enumerate(spine):
            want = window_reference(rows, key, t, agg, with_created)
            if isinstance(want, float) and actual[i] is not None:
                assert math.isclose(actual[i], want), (agg.name, i)
            else:
                assert actual[i] == want, (agg.name, i, actual[i], want)
