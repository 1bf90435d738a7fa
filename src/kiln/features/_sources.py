"""The offline engine's SQL: a view's rows, and the joins that answer a spine from them.

Every reader of a view (point-in-time joins, windows, materialization) sees the same
normalized rows, so the semantics of a source cannot differ between those paths: join
keys, ``event_ts`` and ``created_ts`` as naive UTC ``TIMESTAMP`` (microseconds), then the
feature columns. Naive UTC is used internally because converting either kind of input
to it is plain arithmetic, independent of the connection's time zone, and a column that
already is a naive ``TIMESTAMP`` passes through untouched, which keeps DuckDB's ASOF
join on the raw column.

User data (paths, values) never enters SQL text: files and tables are registered on the
connection under generated names, and durations are bound parameters. Identifiers are
always quoted.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from kiln.core import InvalidInput, NotFound
from kiln.features._types import cast_problem
from kiln.features.definitions import (
    Aggregation,
    DeltaSource,
    FeatureView,
    ParquetSource,
    PushSource,
    SQLSource,
    WindowedFeatureView,
)

EVENT_TS = "event_ts"
CREATED_TS = "created_ts"
RESERVED = (EVENT_TS, CREATED_TS)
ROW = "__kiln_row"  # spine row number, to put results back in spine order
T = "__kiln_t"  # spine time, naive UTC
_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
# What sum and mean take: DuckDB also sums BOOLEAN (to a DECIMAL) and averages TIMESTAMP,
# which the online path does not, so those are refused up front.
_NUMERIC = {*_INTEGERS, "UBIGINT", "HUGEINT", "UHUGEINT", "FLOAT", "DOUBLE", "NULL"}

_DUCK_TYPES = {
    "float64": "DOUBLE",
    "float32": "FLOAT",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "bool": "BOOLEAN",
    "string": "VARCHAR",
    "timestamp": "TIMESTAMP",
}
_ids = itertools.count()

View = FeatureView | WindowedFeatureView


def quote(name: str) -> str:
    """A DuckDB identifier, whatever characters ``name`` holds."""
    return '"' + name.replace('"', '""') + '"'


def fresh_name(prefix: str) -> str:
    """Names registered objects so that views with same-named sub-sources cannot collide."""
    return f"__kiln_{prefix}_{next(_ids)}"


def describe(view: View) -> str:
    kind = "FeatureView" if isinstance(view, FeatureView) else "WindowedFeatureView"
    return f"{kind} {view.name!r}"


def is_temporal(duck_type: str) -> bool:
    t = duck_type.upper()
    return t == "DATE" or t.startswith("TIMESTAMP")


def utc_expr(column_sql: str, duck_type: str) -> str | None:
    """SQL turning a time column into naive UTC microseconds, or None if it is not a time.

    Naive inputs already mean UTC; aware ones are instants, whose epoch offset is UTC.
    """
    t = duck_type.upper()
    if not is_temporal(t):
        return None
    if "TIME ZONE" in t or t.startswith("TIMESTAMPTZ"):
        return f"make_timestamp(epoch_us(CAST({column_sql} AS TIMESTAMPTZ)))"
    return f"CAST({column_sql} AS TIMESTAMP)"


@dataclass(frozen=True)
class Rows:
    """SQL for a view's normalized rows, with the DuckDB type of each feature column."""

    sql: str
    keys: tuple[str, ...]
    features: tuple[str, ...]
    types: dict[str, str]
    has_created: bool
    fingerprint: str | None = None  # identifies the rows' content; None when unknowable


def _clean(query: str) -> str:
    # A newline before the closing parenthesis keeps a trailing ``--`` comment harmless.
    text = query.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


_SETTLED_NS = 2_000_000_000


def _parquet_state(path: str) -> list[Any] | None:
    """Each matching file's identity, size and change time; None if not to be trusted.

    The change time (ctime) moves on every write and, unlike mtime, cannot be set back by
    a copy that preserves times, so a file with the same inode, size and ctime holds the
    same rows, provided that ctime was already in the past when read: file systems stamp
    times at a clock tick of a few milliseconds, and a file rewritten within the tick it
    was last written in keeps its ctime. A file changed in the last two seconds, or a
    remote one, gives None and is never served from a cache.
    """
    if "://" in path:
        return None
    files = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
    now = time.time_ns()
    state: list[Any] = []
    for name in files:
        try:
            st = os.stat(name)
        except OSError:
            return None
        if now - st.st_ctime_ns < _SETTLED_NS:
            return None
        state.append([os.path.realpath(name), st.st_ino, st.st_size, st.st_ctime_ns])
    return state


def _leaf(
    con: duckdb.DuckDBPyConnection,
    source: ParquetSource | DeltaSource,
    owner: str,
    states: list[Any],
) -> str:
    """Registers one file source and appends what identifies its content to ``states``."""
    name = fresh_name("src")
    try:
        if isinstance(source, ParquetSource):
            con.read_parquet(source.path, union_by_name=True).create_view(name)
            states.append(_parquet_state(source.path))
        else:
            states.append(_register_delta(con, name, source.path, source.version))
    except (duckdb.IOException, FileNotFoundError) as exc:
        raise NotFound(f"{owner}: cannot read {source.path!r}: {exc}") from exc
    return f"SELECT * FROM {quote(name)}"


def _register_delta(
    con: duckdb.DuckDBPyConnection, name: str, path: str, version: int | None
) -> list[Any] | None:
    """Registers the table; returns its path and the version read (None if remote)."""
    import deltalake

    try:
        table = deltalake.DeltaTable(path, version=version)
    except deltalake.exceptions.DeltaError as exc:
        at = "" if version is None else f" at version {version}"
        raise FileNotFoundError(f"no Delta table{at} at {path!r} ({exc})") from exc
    con.register(name, table.to_pyarrow_dataset())
    if "://" in path:
        return None
    return [os.path.realpath(path), table.version()]


def _source_sql(con: duckdb.DuckDBPyConnection, view: View, states: list[Any]) -> str | None:
    src = view.source
    owner = describe(view)
    if isinstance(src, PushSource):
        return None
    if isinstance(src, SQLSource):
        ctes = ", ".join(
            f"{quote(n)} AS ({_leaf(con, s, owner, states)})" for n, s in src.sources.items()
        )
        sql = f"WITH {ctes} SELECT * FROM (\n{_clean(src.query)}\n)"
    else:
        sql = _leaf(con, src, owner, states)
    transformation = getattr(view, "transformation", None)
    if transformation:
        sql = f"WITH source AS ({sql}) SELECT * FROM (\n{_clean(transformation)}\n)"
    return sql


def _pushed_sql(
    con: duckdb.DuckDBPyConnection, view: View, offline_dir: Path, states: list[Any]
) -> str | None:
    import deltalake

    path = Path(offline_dir) / view.name
    if not path.is_dir() or not deltalake.DeltaTable.is_deltatable(str(path)):
        return None
    name = fresh_name("pushed")
    states.append(_register_delta(con, name, str(path), None))
    return f"SELECT * FROM {quote(name)}"


def _declared(view: View) -> list[tuple[str, str | None]]:
    if isinstance(view, FeatureView):
        return [(f.name, f.dtype) for f in view.schema]
    columns = dict.fromkeys(a.column for a in view.aggregations if a.column is not None)
    return [(c, None) for c in columns]


def _bind(con: duckdb.DuckDBPyConnection, sql: str, view: View, what: str) -> dict[str, str]:
    """Each column's DuckDB type; binding reads schemas (Parquet footers), never rows."""
    try:
        rel = con.sql(sql)
        return {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}
    except duckdb.IOException as exc:
        raise NotFound(f"{describe(view)}: cannot read {what}: {exc}") from exc
    except duckdb.Error as exc:
        raise InvalidInput(f"{describe(view)}: the SQL for {what} does not run: {exc}") from exc


def source_types(con: duckdb.DuckDBPyConnection, view: View) -> dict[str, str] | None:
    """The columns of the view's source (after its transformation) and their DuckDB types.

    None for a push source, which has no columns until its first push.
    """
    sql = _source_sql(con, view, [])
    return None if sql is None else _bind(con, sql, view, "its source")


def _select(
    con: duckdb.DuckDBPyConnection, sql: str, view: View, what: str, *, pushed: bool
) -> tuple[str, dict[str, str]]:
    owner = describe(view)
    found = _bind(con, sql, view, what)

    def need(column: str, role: str) -> str:
        if column not in found:
            raise InvalidInput(
                f"{owner}: {what} has no column {column!r} ({role}); it has "
                f"{', '.join(found) or 'no columns'}"
            )
        return found[column]

    def time(column: str, role: str) -> str:
        expr = utc_expr(quote(column), need(column, role))
        if expr is None:
            raise InvalidInput(
                f"{owner}: column {column!r} ({role}) of {what} must be a timestamp; "
                f"it is {found[column]}"
            )
        return expr

    src = view.source
    items = [quote(k) for k in view.join_keys]
    for k in view.join_keys:
        need(k, "join key")
    items.append(f"{time(src.timestamp, 'event time')} AS {EVENT_TS}")
    created = time(src.created, "created time") if src.created else "CAST(NULL AS TIMESTAMP)"
    items.append(f"{created} AS {CREATED_TS}")
    types: dict[str, str] = {}
    for name, dtype in _declared(view):
        if name not in found and pushed:
            # Rows pushed before a feature was added: NULL, typed by the source if possible.
            duck = _DUCK_TYPES[dtype] if dtype else "NULL"
            items.append(
                f"CAST(NULL AS {duck}) AS {quote(name)}" if dtype else f"NULL AS {quote(name)}"
            )
            types[name] = duck
            continue
        actual = need(name, "feature")
        problem = cast_problem(actual, dtype) if dtype is not None else None
        if problem is not None:
            raise InvalidInput(
                f"{owner}: field {name!r} is declared {dtype}, but column {name!r} of {what} "
                f"is {actual}: {problem}"
            )
        if dtype == "timestamp":
            items.append(f"{time(name, 'feature')} AS {quote(name)}")
            types[name] = "TIMESTAMP"
        elif dtype is not None:
            items.append(f"CAST({quote(name)} AS {_DUCK_TYPES[dtype]}) AS {quote(name)}")
            types[name] = _DUCK_TYPES[dtype]
        else:
            items.append(quote(name))
            types[name] = actual
    return f"SELECT {', '.join(items)} FROM ({sql})", types


def rows(con: duckdb.DuckDBPyConnection, view: View, offline_dir: Path) -> Rows:
    """The view's rows from its source UNION ALL the rows pushed into the offline store."""
    owner = describe(view)
    features = [name for name, _ in _declared(view)]
    clash = [c for c in (*view.join_keys, *features) if c in RESERVED]
    if clash:
        raise InvalidInput(
            f"{owner}: {clash[0]!r} is reserved for the normalized event/created time; "
            "rename that column in the source or transformation"
        )
    parts: list[tuple[str, dict[str, str]]] = []
    states: list[Any] = []
    base = _source_sql(con, view, states)
    if base is not None:
        parts.append(_select(con, base, view, "its source", pushed=False))
    pushed = _pushed_sql(con, view, offline_dir, states)
    if pushed is not None:
        parts.append(_select(con, pushed, view, "its pushed rows", pushed=True))
    if not parts:
        # A push source before its first push: no rows, but the right columns.
        empty = [f"NULL AS {quote(k)}" for k in view.join_keys]
        empty += [f"CAST(NULL AS TIMESTAMP) AS {c}" for c in RESERVED]
        types = {n: _DUCK_TYPES[d] if d else "DOUBLE" for n, d in _declared(view)}
        empty += [f"CAST(NULL AS {t}) AS {quote(n)}" for n, t in types.items()]
        parts.append((f"SELECT {', '.join(empty)} WHERE false", types))
    sql = "\nUNION ALL\n".join(p for p, _ in parts)
    types = parts[0][1]
    if len(parts) > 1:
        rel = con.sql(sql)
        types = {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True) if c in types}
    if isinstance(view, WindowedFeatureView):
        _check_aggregations(view, types)
    return Rows(
        sql=sql,
        keys=view.join_keys,
        features=tuple(features),
        types=types,
        has_created=view.source.created is not None,
        fingerprint=_fingerprint(view, states),
    )


def _check_aggregations(view: WindowedFeatureView, types: dict[str, str]) -> None:
    """Every aggregation can run on its column's type (``apply`` checks this too)."""
    for agg in view.aggregations:
        if agg.function not in ("sum", "mean") or agg.column is None:
            continue
        kind = types.get(agg.column, "NULL")
        if kind.upper() not in _NUMERIC and not kind.upper().startswith("DECIMAL"):
            raise InvalidInput(
                f"{describe(view)}: aggregation {agg.name!r} takes the {agg.function} of "
                f"column {agg.column!r}, which holds {kind}; sum and mean need integers or "
                "floats"
            )


def _fingerprint(view: View, states: list[Any]) -> str | None:
    if any(state is None for state in states):
        return None
    spec = {
        "source": view.source.spec(),
        "transformation": getattr(view, "transformation", None),
        "keys": view.join_keys,
        "schema": _declared(view),
        "states": states,
    }
    return json.dumps(spec, sort_keys=True, default=str)


VISIBLE = "__kiln_visible"  # when a row is both past and written: greatest(event, created)
BEST_EV = "__best_ev"  # a superseded row's stand-in: the event time of the best row
BEST_CREATED = "__best_created"  # ... and its created time


# -- point-in-time SQL over the CTE ``spine`` (ROW, join keys, T) ----------------------


class Query:
    def __init__(self) -> None:
        self.ctes: list[str] = []
        self.params: dict[str, Any] = {}

    def cte(self, name: str, sql: str) -> None:
        self.ctes.append(f"{name} AS (\n{sql}\n)")

    def param(self, name: str, value: Any) -> str:
        self.params[name] = value
        return f"${name}"


def _keys_equal(rows: Rows, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote(k)} = {right}.{quote(k)}" for k in rows.keys)


def _usable(rows: Rows) -> str:
    usable = f"SELECT * FROM ({rows.sql}) WHERE {EVENT_TS} IS NOT NULL"
    return usable + (f" AND {CREATED_TS} IS NOT NULL" if rows.has_created else "")


@dataclass
class Chain:
    """The relation FeatureViews are joined onto one after another.

    Each view's ASOF join takes the previous view's result as its left side, so the
    views' answers never have to be matched up again by row number.
    """

    name: str


def point_in_time(
    q: Query,
    v: str,
    rows: Rows,
    features: Sequence[str],
    ttl: timedelta | None,
    chain: Chain,
    replaced: str | None = None,
) -> tuple[list[str], str | None]:
    """CTEs answering one FeatureView onto ``chain``: output expressions over ``c``, fresh.

    Without a created column the ASOF join on event time is the answer. With one it
    joins on visibility, ``greatest(event_ts, created)``, after the superseded rows
    (``replaced``, from ``kiln.features._superseded``; None when there are none) have
    been swapped for the best rows they stand for, so no spine row needs a second look.
    One join of the rows against their identities does it: a superseded row is dropped,
    a best row is kept and copied once per row it stands for, with that row's
    visibility. With a TTL, the ASOF join's projection adds one boolean, whether the
    match is recent enough (``fresh``, returned; NULL without a match), which the caller
    applies to every feature of the view: one comparison per row, not one per feature,
    and no event time carried to the end.
    """
    fs = [f"__kiln_{v}_f{j}" for j in range(len(features))]
    on = _keys_equal(rows, "l", "d")
    if not rows.has_created:
        q.cte(f"{v}_rows", _usable(rows))
        at = EVENT_TS
    else:
        keys = ", ".join(quote(k) for k in rows.keys)
        feats = "".join(f", u.{quote(f)}" for f in features)
        seen = f"greatest(u.{EVENT_TS}, u.{CREATED_TS})"
        if replaced is None:
            visible = (
                f"SELECT {', '.join(f'u.{quote(k)}' for k in rows.keys)}, u.{EVENT_TS}, "
                f"{seen} AS {VISIBLE}{feats} FROM ({_usable(rows)}) u"
            )
        else:
            # Identities: 0 drops a superseded row; 1 copies a best row as the stand-in
            # of the row it replaces, with that row's visibility; 2 keeps the best row.
            x = quote(replaced)
            q.cte(
                f"{v}_ids",
                f"SELECT {keys}, {EVENT_TS}, {CREATED_TS}, 0 AS __kind, "
                f"CAST(NULL AS TIMESTAMP) AS {VISIBLE} FROM {x}\nUNION ALL\n"
                f"SELECT {keys}, {BEST_EV}, {BEST_CREATED}, 1, {VISIBLE} FROM {x}\n"
                f"UNION ALL\nSELECT DISTINCT {keys}, {BEST_EV}, {BEST_CREATED}, 2, "
                f"CAST(NULL AS TIMESTAMP) FROM {x}",
            )
            same_row = " AND ".join(
                f"u.{quote(c)} = i.{quote(c)}" for c in (*rows.keys, EVENT_TS, CREATED_TS)
            )
            visible = (
                f"SELECT {', '.join(f'u.{quote(k)}' for k in rows.keys)}, u.{EVENT_TS}, "
                f"CASE WHEN i.__kind = 1 THEN i.{VISIBLE} ELSE {seen} END AS {VISIBLE}{feats}\n"
                f"FROM ({_usable(rows)}) u LEFT JOIN {v}_ids i ON {same_row}\n"
                "WHERE i.__kind IS DISTINCT FROM 0"
            )
        q.cte(f"{v}_rows", visible)
        at = VISIBLE
    cols = [f"d.{quote(f)} AS {n}" for f, n in zip(features, fs, strict=True)]
    fresh = None
    if ttl is not None:
        fresh = f"__kiln_{v}_fresh"
        cols.append(f"d.{EVENT_TS} >= l.{T} - {q.param(f'{v}_ttl', ttl)} AS {fresh}")
    q.cte(
        f"{v}_res",
        f"SELECT l.*, {', '.join(cols)}\nFROM {chain.name} l ASOF LEFT JOIN "
        f"{v}_rows d\nON {on} AND l.{T} >= d.{at}",
    )
    chain.name = f"{v}_res"
    return [f"c.{f}" for f in fs], None if fresh is None else f"c.{fresh}"


def _aggregate(agg: Aggregation, rows: Rows, window: str) -> str:
    col = f"r.{quote(agg.column)}" if agg.column is not None else f"r.{EVENT_TS}"
    kind = rows.types.get(agg.column or "", "")
    if kind == "NULL":
        col = f"CAST({col} AS DOUBLE)"
    within = f"FILTER (WHERE r.{EVENT_TS} > s.{T} - {window})"
    if agg.function == "last":
        order = (
            f"struct_pack(e := r.{EVENT_TS}, c := r.{CREATED_TS})"
            if rows.has_created
            else f"r.{EVENT_TS}"
        )
        return f"arg_max_null({col}, {order}) {within}"
    func = {"mean": "avg"}.get(agg.function, agg.function)
    expr = f"{func}({col}) {within}"
    if agg.function == "sum" and kind in _INTEGERS:
        expr = f"CAST({expr} AS BIGINT)"
    return expr


def windowed(
    q: Query, v: str, rows: Rows, view: WindowedFeatureView, features: Sequence[str]
) -> list[str]:
    """CTEs answering one WindowedFeatureView; returns the output expressions over ``v``."""
    q.cte(f"{v}_rows", _usable(rows))
    by_name = {a.name: a for a in view.aggregations}
    aggs = [by_name[f] for f in features]
    widest = q.param(f"{v}_w", max(a.window for a in aggs))
    on = (
        f"{_keys_equal(rows, 's', 'r')} AND r.{EVENT_TS} <= s.{T} "
        f"AND r.{EVENT_TS} > s.{T} - {widest}"
    )
    if rows.has_created:
        on += f" AND r.{CREATED_TS} <= s.{T}"
    exprs = ", ".join(
        f"{_aggregate(a, rows, q.param(f'{v}_w{j}', a.window))} AS __a{j}"
        for j, a in enumerate(aggs)
    )
    q.cte(
        f"{v}_res",
        f"SELECT s.{ROW}, s.{T}, {exprs}\n"
        f"FROM spine s LEFT JOIN {v}_rows r ON {on}\nGROUP BY s.{ROW}, s.{T}",
    )
    return [f"{v}.__a{j}" for j in range(len(aggs))]
