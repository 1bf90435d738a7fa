"""Superseded rows (kiln.features._superseded) against their definition, row by row.

A row is superseded when a row of the same entity with a greater ``(event, created)``
became visible (``max(event, created)``) no later; it then stands for the greatest
``(event, created)`` visible by its own visibility time. The reference below reads that
definition literally, over every pair of rows; the engine sorts once and scans. Times
come from a small grid (ties, created before event, equal visibility times) plus the
infinities; keys are ints (near and far apart), strings, floats or two columns.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.features import _superseded
from kiln.features._sources import BEST_CREATED, BEST_EV, CREATED_TS, EVENT_TS, VISIBLE, Rows

T0 = datetime(2024, 1, 1)
INF, NINF = 2**63 - 1, -(2**63 - 1)  # DuckDB's infinite timestamps, as microseconds
KEYS = {
    "int": (("k",), st.integers(1, 3).map(lambda k: (k,))),
    "str": (("k",), st.sampled_from(["a", "b", "ç"]).map(lambda k: (k,))),
    "pair": (("k1", "k2"), st.tuples(st.integers(1, 2), st.sampled_from(["x", "y"]))),
    # Keys far apart are ranked rather than offset; float keys are sorted by DuckDB.
    "wide": (("k",), st.sampled_from([-(2**62), 0, 2**62]).map(lambda k: (k,))),
    "float": (("k",), st.sampled_from([1.5, 2.5, 1e300]).map(lambda k: (k,))),
}
TIMES = st.one_of(st.integers(0, 6), st.sampled_from(["inf", "-inf"]))


def micros(t: int | str) -> int:
    if t == "inf":
        return INF
    if t == "-inf":
        return NINF
    return int((T0 + timedelta(minutes=int(t)) - datetime(1970, 1, 1)).total_seconds()) * 10**6


def ts_sql(column: str) -> str:
    return (
        f"CASE WHEN {column} = {INF} THEN 'infinity'::TIMESTAMP "
        f"WHEN {column} = {NINF} THEN '-infinity'::TIMESTAMP ELSE make_timestamp({column}) END"
    )


def reference(
    data: list[tuple[tuple[Any, ...], int, int]],
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """(keys, event, created) of each superseded row -> (event, created) of its best row."""
    out: dict[tuple[Any, ...], tuple[int, int]] = {}
    for key, e, c in data:
        vis = max(e, c)
        top = max((e2, c2) for k2, e2, c2 in data if k2 == key and max(e2, c2) <= vis)
        if (e, c) < top:
            out[(*key, e, c)] = top
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(sorted(KEYS)))
def test_superseded_rows_match_the_definition(data: st.DataObject, kind: str) -> None:
    names, key_strategy = KEYS[kind]
    rows = data.draw(
        st.lists(st.tuples(key_strategy, TIMES, TIMES), min_size=0, max_size=25), label="rows"
    )
    table_rows = [(k, micros(e), micros(c)) for k, e, c in rows]
    # A row with a NULL key takes part in nothing.
    columns: dict[str, Any] = {
        n: [r[0][j] for r in table_rows] + [None] for j, n in enumerate(names)
    }
    columns["e"] = [r[1] for r in table_rows] + [micros(0)]
    columns["c"] = [r[2] for r in table_rows] + [micros(0)]
    columns["x"] = [float(i) for i in range(len(table_rows) + 1)]
    con = duckdb.connect()
    con.register("raw", pa.table(columns))
    keys = ", ".join(names)
    view = Rows(
        sql=f"SELECT {keys}, {ts_sql('e')} AS {EVENT_TS}, {ts_sql('c')} AS {CREATED_TS}, x "
        "FROM raw",
        keys=names,
        features=("x",),
        types={"x": "DOUBLE"},
        has_created=True,
    )
    got = _superseded.find(con, view)
    want = reference(table_rows)

    for name in (EVENT_TS, CREATED_TS, VISIBLE, BEST_EV, BEST_CREATED):  # infinities
        i = got.schema.get_field_index(name)
        got = got.set_column(i, name, got.column(i).cast(pa.int64()))
    found: dict[tuple[Any, ...], tuple[int, int]] = {}
    for row in got.to_pylist():
        ident = (*(row[n] for n in names), row[EVENT_TS], row[CREATED_TS])
        assert row[VISIBLE] == max(row[EVENT_TS], row[CREATED_TS])
        found[ident] = (row[BEST_EV], row[BEST_CREATED])
    assert len(found) == got.num_rows or len(set(rows)) < len(rows)
    assert found == want


def test_no_rows_and_no_superseded_rows() -> None:
    con = duckdb.connect()
    con.register(
        "raw",
        pa.table(
            {
                "k": pa.array([1, 1, 2], pa.int64()),
                "e": pa.array(np.array([1, 2, 1]) * 60_000_000, pa.timestamp("us")),
                "x": [1.0, 2.0, 3.0],
            }
        ),
    )
    for where in ("", "WHERE false"):
        view = Rows(
            sql=f"SELECT k, e AS {EVENT_TS}, e AS {CREATED_TS}, x FROM raw {where}",
            keys=("k",),
            features=("x",),
            types={"x": "DOUBLE"},
            has_created=True,
        )
        got = _superseded.find(con, view)
        assert got.num_rows == 0
        assert got.column_names == ["k", EVENT_TS, CREATED_TS, VISIBLE, BEST_EV, BEST_CREATED]
