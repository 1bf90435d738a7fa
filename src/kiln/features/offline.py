"""Point-in-time-correct training data, computed by DuckDB over Arrow and Parquet.

Training data must contain, for every example, only the feature values that were known
when the example happened; anything later leaks the label into the features and the
model looks better offline than it will be in production. The rules below are the
contract that makes that true, and that the online store and materialization follow too.

**A view's rows.** The source's rows (``ParquetSource``: the files matching the path or
glob; ``DeltaSource``: the table, at ``version`` when pinned; ``SQLSource``: the query,
each named sub-source visible under its name; ``PushSource``: none), with the view's
``transformation`` applied (the rows visible as the table ``source``), UNION ALL the rows
pushed into the Delta table at ``offline_dir / view.name`` when there is one. Columns are
selected by name: the join keys, the source's ``timestamp`` column (event time), its
``created`` column when it has one (when the row was written), and the features, cast to
the view's declared dtypes. A pushed table that lacks a feature column gives NULL for it.

**Time.** Naive timestamps mean UTC; aware ones are converted to UTC; spine and sources
alike. Times are compared at microsecond precision. Rows whose event time is NULL, or
whose ``created`` is NULL when the source has that column, are never used: an unknown
write time cannot be shown to precede an example.

**FeatureView.** For each spine row (join keys, time ``t``) the answer is the row of the
same entity with the greatest ``(event_ts, created)`` among rows with ``event_ts <= t``
and, when the source has ``created``, ``created <= t`` (a backfill written after ``t``
is invisible at ``t`` even if its event time is earlier). If ``ttl`` is set and that
row's ``event_ts < t - ttl`` the features are NULL; ``event_ts == t - ttl`` is still
valid. No such row, a NULL key or a NULL ``t`` gives NULLs. Rows that tie on both event
time and created time (on event time alone without a created column) are
interchangeable: which one is used is unspecified.

**WindowedFeatureView.** Each aggregation covers the entity's rows with
``t - window < event_ts <= t`` (and ``created <= t`` when the source has it): ``count`` is
the number of rows (of non-NULL values when it names a column), 0 when there are none;
``sum``/``mean``/``min``/``max`` ignore NULL values and are NULL when nothing is left;
``last`` is the value (NULL included) of the row with the greatest ``(event_ts,
created)``. NaN is a value: ``min`` and ``max`` rank it above every number, as DuckDB
does. ``sum`` and ``mean`` take integer and float columns only. Windows are exact
microseconds. Output columns are the aggregation names.

**Output.** Exactly one row per spine row, in spine order: the spine's columns unchanged
(values, dtypes, time zones; ``to_pandas`` keeps the spine's index), then the requested
features, named ``feature`` or, with ``full_feature_names``, ``view__feature``. A name
produced twice, or one that is already a spine column, is an error.

**How.** Per view, the spine is ASOF-joined to the rows on the join keys; FeatureViews
are joined one after another, each onto the previous one's result, so no per-view
results need matching up again. Without a created column the join is on
``t >= event_ts`` and its match is the answer. With one, a row counts from the time it
is both past and written, ``greatest(event_ts, created)``, and the join is on that: its
match is the row that became visible last, which is the answer unless a row with a
greater ``(event_ts, created)`` was already visible (a late backfill, or an older version
of the same event time). Such superseded rows are found once per source content (one
sort of keys and times, then linear scans: ``kiln.features._superseded``) and swapped for
the best row they stand for before the join, so every spine row is answered by one ASOF
lookup. Each join's projection says whether its match is within the TTL (one boolean
per view), and results are put back in spine order by row number, nulling what is too
old on the way (``kiln.features._spine_order``). User data reaches SQL only through
registered tables and bound parameters; identifiers are quoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from kiln.core import InvalidInput
from kiln.features import _sources, _superseded
from kiln.features._keys import key_types, readable_keys, spine_keys
from kiln.features._pages import ordinary_pages
from kiln.features._sources import CREATED_TS, EVENT_TS, ROW, T, quote
from kiln.features._spine_order import in_spine_order
from kiln.features.definitions import FeatureView, WindowedFeatureView

__all__ = [
    "RetrievalJob",
    "ViewRequest",
    "check_view_source",
    "get_historical_features",
    "latest_per_entity",
    "view_rows",
]

_UTC = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class ViewRequest:
    """Which features of one view a training set needs, in output order."""

    view: FeatureView | WindowedFeatureView
    features: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.view, FeatureView | WindowedFeatureView):
            raise InvalidInput(
                "The 'view' parameter of ViewRequest must be a FeatureView or "
                f"WindowedFeatureView. Got {self.view!r} instead."
            )
        feats = self.features
        if isinstance(feats, str) or not all(isinstance(f, str) for f in feats) or not feats:
            raise InvalidInput(
                f"The 'features' parameter of ViewRequest for view {self.view.name!r} must be "
                f"a non-empty list of feature names. Got {feats!r} instead."
            )
        feats = tuple(feats)
        unknown = [f for f in feats if f not in self.view.feature_names]
        if unknown:
            raise InvalidInput(
                f"View {self.view.name!r} has no feature {unknown[0]!r}; it has "
                f"{', '.join(self.view.feature_names)}"
            )
        dupes = sorted({f for f in feats if feats.count(f) > 1})
        if dupes:
            raise InvalidInput(f"ViewRequest for view {self.view.name!r} lists {dupes[0]!r} twice")
        object.__setattr__(self, "features", feats)


def _connect() -> duckdb.DuckDBPyConnection:
    # Nothing may be downloaded at run time: a path needing an extension fails instead.
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    con.execute("SET TimeZone = 'UTC'")
    return con


def view_rows(
    con: duckdb.DuckDBPyConnection,
    view: FeatureView | WindowedFeatureView,
    offline_dir: Path | str,
) -> duckdb.DuckDBPyRelation:
    """All rows of ``view``: join keys, ``event_ts``, ``created_ts`` (or NULL), features.

    Times are naive UTC. The relation is lazy and stays valid while ``con`` is open.
    """
    return con.sql(_sources.rows(con, view, Path(offline_dir)).sql)


def check_view_source(view: FeatureView | WindowedFeatureView, *, offline_dir: Path | str) -> None:
    """Raise if ``view`` cannot be read as declared, reading only schemas, not rows.

    ``apply`` calls this so that a missing column, a non-timestamp event time or broken
    SQL is reported when a definition is stored rather than when training data is built.
    """
    con = _connect()
    try:
        con.sql(_sources.rows(con, view, Path(offline_dir)).sql)
    except duckdb.Error as exc:
        raise InvalidInput(f"{_sources.describe(view)} cannot be read: {exc}") from exc
    finally:
        con.close()


# -- retrieval ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    requests: tuple[ViewRequest, ...]
    names: tuple[tuple[str, ...], ...]  # output names per request
    keys: tuple[str, ...]  # every join key the spine must supply
    timestamp: str
    offline_dir: Path


def _compute(plan: _Plan, narrow: pa.Table) -> pa.Table:
    con = _connect()
    try:
        spine_name = _sources.fresh_name("spine")
        con.register(spine_name, narrow)
        bound = con.sql(f"SELECT * FROM {quote(spine_name)}")
        ts_type = str(bound.types[bound.columns.index(plan.timestamp)])
        ts_expr = _sources.utc_expr(quote(plan.timestamp), ts_type)
        keys = "".join(f"{quote(k)}, " for k in plan.keys)
        q = _sources.Query()
        q.cte("spine", f"SELECT {ROW}, {keys}{ts_expr} AS {T} FROM {quote(spine_name)}")
        outputs: list[str] = []
        stamps: list[str] = []
        fresh: dict[str, str] = {}  # output column -> the column saying where it is fresh
        chain = _sources.Chain("spine")
        windows: list[str] = []
        for i, (req, names) in enumerate(zip(plan.requests, plan.names, strict=True)):
            rows = _sources.rows(con, req.view, plan.offline_dir)
            if isinstance(req.view, FeatureView):
                replaced = _superseded.superseded(con, rows) if rows.has_created else None
                exprs, recent = _sources.point_in_time(
                    q, f"v{i}", rows, req.features, req.view.ttl, chain, replaced
                )
                if recent is not None:
                    flag = f"__kiln_fresh_{i}"
                    outputs.append(f"{recent} AS {flag}")
                    fresh.update(dict.fromkeys(names, flag))
                dtypes = {f.name: f.dtype for f in req.view.schema}
                stamps += [
                    n for f, n in zip(req.features, names, strict=True) if dtypes[f] == "timestamp"
                ]
            else:
                exprs = _sources.windowed(q, f"v{i}", rows, req.view, req.features)
                windows.append(f"v{i}")
            outputs += [f"{e} AS {quote(n)}" for e, n in zip(exprs, names, strict=True)]
        base, alias = f"{chain.name} c", "c"
        if chain.name == "spine" and windows:
            # Windowed views only: the first one's result already has every spine row.
            alias = windows.pop(0)
            base = f"{alias}_res {alias}"
        joins = "".join(f"\nLEFT JOIN {w}_res {w} ON {alias}.{ROW} = {w}.{ROW}" for w in windows)
        sql = (
            f"WITH {', '.join(q.ctes)}\n"
            f"SELECT {', '.join(outputs)}, {alias}.{ROW}\nFROM {base}{joins}"
        )
        try:
            table = con.sql(sql, params=q.params).to_arrow_table()
        except (duckdb.BinderException, duckdb.ConversionException) as exc:
            views = ", ".join(repr(r.view.name) for r in plan.requests)
            raise InvalidInput(
                f"Historical features for {views} cannot be computed: {exc}"
            ) from exc
    finally:
        con.close()
    return _as_utc(in_spine_order(table, ROW, fresh), stamps)


def _as_utc(table: pa.Table, names: Sequence[str]) -> pa.Table:
    for name in names:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, pa.field(name, _UTC), table.column(i).cast(_UTC))
    return table


class RetrievalJob:
    """A training set that is computed on first conversion and then kept.

    Lazy so that a caller can inspect ``columns`` or hand the job on without paying for
    the joins; cached so that ``to_arrow`` and ``to_pandas`` agree and run once.
    """

    def __init__(self, spine: pd.DataFrame | pa.Table, narrow: pa.Table, plan: _Plan) -> None:
        self._spine = spine
        self._narrow = narrow
        self._plan = plan
        self._features: pa.Table | None = None

    @property
    def columns(self) -> list[str]:
        spine = self._spine.columns if isinstance(self._spine, pd.DataFrame) else None
        head = list(spine) if spine is not None else list(self._spine.column_names)
        return head + [n for names in self._plan.names for n in names]

    def _result(self) -> pa.Table:
        if self._features is None:
            if self._plan.requests:
                with ordinary_pages():
                    self._features = _compute(self._plan, self._narrow)
            else:
                self._features = pa.table({})
        return self._features

    def to_arrow(self) -> pa.Table:
        features = self._result()
        spine = self._spine
        table = (
            pa.Table.from_pandas(spine, preserve_index=False)
            if isinstance(spine, pd.DataFrame)
            else spine
        )
        for i, field in enumerate(features.schema):
            table = table.append_column(field, features.column(i))
        return table

    def to_pandas(self) -> pd.DataFrame:
        result = self._result()
        spine = self._spine
        head = spine.copy(deep=False) if isinstance(spine, pd.DataFrame) else spine.to_pandas()
        if result.num_columns == 0:
            return head
        features = result.to_pandas()
        features.index = head.index
        return pd.concat([head, features], axis=1)


def _check_spine(
    columns: Sequence[Any], requests: Sequence[ViewRequest], timestamp: str
) -> tuple[str, ...]:
    present = set(columns)
    views = ", ".join(repr(r.view.name) for r in requests) or "no view"
    if timestamp not in present:
        raise InvalidInput(
            f"The spine has no timestamp column {timestamp!r}, which views {views} need; "
            "pass timestamp= naming the column that holds each example's time"
        )
    keys: dict[str, None] = {}
    for req in requests:
        for key in req.view.join_keys:
            if key not in present:
                raise InvalidInput(
                    f"The spine has no column {key!r}, the join key that view "
                    f"{req.view.name!r} needs"
                )
            keys[key] = None
    keys.pop(timestamp, None)
    return tuple(keys)


def _output_names(
    requests: Sequence[ViewRequest], spine_columns: Sequence[Any], full: bool
) -> tuple[tuple[str, ...], ...]:
    owner: dict[str, str] = {}
    result = []
    for req in requests:
        names = tuple(f"{req.view.name}__{f}" if full else f for f in req.features)
        for name in names:
            if name in owner:
                raise InvalidInput(
                    f"Views {owner[name]!r} and {req.view.name!r} both produce the column "
                    f"{name!r}; pass full_feature_names=True to get view__feature names"
                )
            if name in spine_columns:
                raise InvalidInput(
                    f"The spine already has a column {name!r}, which view {req.view.name!r} "
                    "would also produce; rename it or pass full_feature_names=True"
                )
            owner[name] = req.view.name
        result.append(names)
    return tuple(result)


def _narrow_spine(spine: pd.DataFrame | pa.Table, keys: Sequence[str], timestamp: str) -> pa.Table:
    columns = [*keys, timestamp]
    try:
        if isinstance(spine, pd.DataFrame):
            narrow = pa.Table.from_pandas(spine[columns], preserve_index=False)
        else:
            narrow = spine.select(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInput(f"The spine's columns {columns} cannot be read: {exc}") from exc
    kind = narrow.schema.field(timestamp).type
    if not pa.types.is_timestamp(kind):
        raise InvalidInput(
            f"The spine's timestamp column {timestamp!r} must hold timestamps (naive ones "
            f"mean UTC); it holds {kind}"
        )
    rows = pa.array(np.arange(narrow.num_rows, dtype=np.int64))
    return narrow.append_column(ROW, rows)


def get_historical_features(
    spine: pd.DataFrame | pa.Table,
    requests: Sequence[ViewRequest],
    *,
    offline_dir: Path | str,
    timestamp: str = "event_timestamp",
    full_feature_names: bool = False,
) -> RetrievalJob:
    """Features as of each spine row's time, by the rules in this module's docstring.

    The spine and requests are checked now, so mistakes surface before any data is read;
    the sources are read only when the job is converted.
    """
    if isinstance(spine, pd.DataFrame):
        # With copy-on-write this is a snapshot: later edits to the caller's frame
        # cannot make the spine columns disagree with the features computed for them.
        spine = spine.copy(deep=False)
        columns: list[Any] = list(spine.columns)
    elif isinstance(spine, pa.Table):
        columns = list(spine.column_names)
    else:
        raise InvalidInput(
            "The 'spine' parameter of get_historical_features must be a pandas DataFrame "
            f"or a pyarrow Table. Got {type(spine).__name__} instead."
        )
    reqs = tuple(requests)
    bad = [r for r in reqs if not isinstance(r, ViewRequest)]
    if bad:
        raise InvalidInput(
            "The 'requests' parameter of get_historical_features takes ViewRequest "
            f"objects. Got {bad[0]!r}."
        )
    keys = _check_spine(columns, reqs, timestamp)
    names = _output_names(reqs, columns, full_feature_names)
    plan = _Plan(reqs, names, keys, timestamp, Path(offline_dir))
    # Keys converted as online requests are (kiln.features._keys), so both find one row.
    types = key_types(r.view for r in reqs)
    narrow = spine_keys(_narrow_spine(readable_keys(spine, types), keys, timestamp), types)
    return RetrievalJob(spine, narrow, plan)


# -- materialization ----------------------------------------------------------------------


def _utc_param(value: Any, param: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(
            f"The {param!r} parameter of latest_per_entity must be a datetime. Got {value!r}."
        )
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    v = value
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)


def latest_per_entity(
    view: FeatureView,
    *,
    end: datetime,
    start: datetime | None = None,
    arrived_after: datetime | None = None,
    offline_dir: Path | str,
) -> pa.Table:
    """Per entity, the row the online store should hold as of ``end``.

    ``arrived_after`` keeps only rows that arrived after a previous run (by ``created``
    when the source records it, else by event time): what an incremental run needs,
    since a row can arrive late with an event time before the previous run's end.

    That is the row with the greatest ``(event_ts, created)`` among rows with
    ``start < event_ts <= end`` (no lower bound when ``start`` is None) and, when the
    source has ``created``, ``created <= end``: the same choice a point-in-time join makes
    at ``end``, so online values match what training saw. TTL is not applied; the online
    store applies it when read. Columns: join keys, ``event_ts``, ``created_ts`` (both
    ``timestamp[us, tz=UTC]``, ``created_ts`` NULL without a created column), then the
    view's features in schema order; rows are ordered by the join keys.
    """
    if not isinstance(view, FeatureView):
        raise InvalidInput(
            f"The 'view' parameter of latest_per_entity must be a FeatureView. Got {view!r}."
        )
    params = {"end": _utc_param(end, "end")}
    con = _connect()
    try:
        rows = _sources.rows(con, view, Path(offline_dir))
        keys = ", ".join(quote(k) for k in view.join_keys)
        where = [f"{quote(k)} IS NOT NULL" for k in view.join_keys]
        where.append(f"{EVENT_TS} <= $end")
        if start is not None:
            params["start"] = _utc_param(start, "start")
            where.append(f"{EVENT_TS} > $start")
        if arrived_after is not None:
            params["arrived"] = _utc_param(arrived_after, "arrived_after")
            where.append(f"{CREATED_TS if rows.has_created else EVENT_TS} > $arrived")
        order = EVENT_TS
        if rows.has_created:
            where.append(f"{CREATED_TS} <= $end")
            order = f"struct_pack(e := {EVENT_TS}, c := {CREATED_TS})"
        pack = ", ".join(f"f{j} := {quote(f)}" for j, f in enumerate(view.feature_names))
        unpack = ", ".join(f"g.__v.f{j} AS {quote(f)}" for j, f in enumerate(view.feature_names))
        sql = (
            f"SELECT {', '.join(f'g.{quote(k)}' for k in view.join_keys)}, "
            f"g.__v.e AS {EVENT_TS}, g.__v.c AS {CREATED_TS}, {unpack}\n"
            f"FROM (SELECT {keys}, arg_max_null(struct_pack(e := {EVENT_TS}, "
            f"c := {CREATED_TS}, {pack}), {order}) AS __v\n"
            f"FROM ({rows.sql}) WHERE {' AND '.join(where)} GROUP BY {keys}) g\n"
            f"ORDER BY {keys}"
        )
        table = con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
    stamps = [EVENT_TS, CREATED_TS, *(f.name for f in view.schema if f.dtype == "timestamp")]
    return _as_utc(table, stamps)


def recent_events(view: WindowedFeatureView, *, end: datetime, offline_dir: Path | str) -> pa.Table:
    """The events an online window list holds as of ``end``: those inside the widest window.

    Rows with ``end - widest window < event_ts <= end`` (and ``created <= end`` when the
    source has it), as join keys, ``event_ts``, ``created_ts`` (UTC) and the columns the
    aggregations read: materializing a windowed view replaces each entity's list with
    exactly what a point-in-time read at ``end`` would aggregate.
    """
    if not isinstance(view, WindowedFeatureView):
        raise InvalidInput(
            f"The 'view' parameter of recent_events must be a WindowedFeatureView. Got {view!r}."
        )
    end_utc = _utc_param(end, "end")
    params = {"end": end_utc, "start": end_utc - view.max_window}
    con = _connect()
    try:
        rows = _sources.rows(con, view, Path(offline_dir))
        where = [f"{quote(k)} IS NOT NULL" for k in view.join_keys]
        where += [f"{EVENT_TS} <= $end", f"{EVENT_TS} > $start"]
        if rows.has_created:
            where.append(f"{CREATED_TS} <= $end")
        columns = ", ".join(
            quote(c) for c in (*view.join_keys, EVENT_TS, CREATED_TS, *rows.features)
        )
        sql = f"SELECT {columns} FROM ({rows.sql}) WHERE {' AND '.join(where)}"
        table = con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
    return _as_utc(table, [EVENT_TS, CREATED_TS])
