"""Pushed rows: checked against the view, appended to its Delta table, then served online.

The Delta append is one atomic commit, so offline readers see a whole push or none of
it; the online write that follows is one atomic batch per chunk of entities. A crash
between the two leaves the online store behind the offline one, never ahead of it, and
the next push or materialization of the view catches it up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput
from kiln.features._keys import convert_key
from kiln.features.definitions import FeatureView, WindowedFeatureView

__all__ = ["as_arrow", "offline_path", "offline_schema", "online_rows", "prepare", "write_offline"]

_ARROW = {
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us", "UTC"),
}


def as_arrow(rows: Any, owner: str) -> pa.Table:
    """A DataFrame, Arrow table, list of records or dict of columns as an Arrow table."""
    import pandas as pd

    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, pd.DataFrame):
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, Mapping):
        return pa.table({str(k): list(v) for k, v in rows.items()})
    if isinstance(rows, Sequence) and rows and all(isinstance(r, Mapping) for r in rows):
        return pa.Table.from_pylist([dict(r) for r in rows])
    raise InvalidInput(
        f"{owner}: push takes a DataFrame, an Arrow table, a list of records or a dict of "
        f"columns; got {type(rows).__name__}"
    )


def _utc(column: pa.ChunkedArray, name: str, owner: str) -> pa.ChunkedArray:
    if pa.types.is_null(column.type):  # only nulls, e.g. None in every record
        return pa.chunked_array([pa.nulls(len(column), pa.timestamp("us", "UTC"))])
    if not pa.types.is_timestamp(column.type):
        raise InvalidInput(f"{owner}: column {name!r} must be a timestamp; got {column.type}")
    if column.type.tz is None:
        column = pc.assume_timezone(column, "UTC")
    return pc.cast(column, pa.timestamp("us", "UTC"))


def _feature_columns(view: FeatureView | WindowedFeatureView) -> dict[str, pa.DataType | None]:
    if isinstance(view, FeatureView):
        return {f.name: _ARROW[f.dtype] for f in view.schema}
    return dict.fromkeys((a.column for a in view.aggregations if a.column is not None), None)


def _check_aggregated(view: WindowedFeatureView, name: str, kind: pa.DataType, owner: str) -> None:
    """The column an aggregation reads holds what both paths can aggregate alike."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if not (
        numeric
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_timestamp(kind)
    ):
        raise InvalidInput(
            f"{owner}: column {name!r} holds {kind}; aggregated columns hold numbers, "
            "booleans, strings or timestamps"
        )
    for agg in view.aggregations:
        if agg.column == name and agg.function in ("sum", "mean") and not numeric:
            raise InvalidInput(
                f"{owner}: aggregation {agg.name!r} takes the {agg.function} of column "
                f"{name!r}, which holds {kind}; sum and mean need integers or floats"
            )


def _as_offline(
    column: pa.ChunkedArray, name: str, offline: pa.Schema, kind: str, owner: str
) -> pa.ChunkedArray:
    """``column`` in the type its offline table already has, if that changes no value."""
    if name not in offline.names or column.type == offline.field(name).type:
        return column
    want = offline.field(name).type
    try:
        return pc.cast(column, want, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise InvalidInput(
            f"{owner}: column {name!r} is {want} in the {kind}'s offline table; the pushed "
            f"{column.type} values cannot be cast to {want} without changing them. Push "
            f"{want} values (or define a new view for the new type)."
        ) from None


def prepare(
    view: FeatureView | WindowedFeatureView, rows: Any, *, offline: pa.Schema | None = None
) -> pa.Table:
    """Rows in the view's offline layout: keys, event time, created time, features.

    A missing ``created`` column is filled with the push time: that is when the rows
    became known, which is what point-in-time reads compare against. A null created time
    is refused, as a null event time is: reads never use such a row, so it could only
    make the online value differ from the offline one.

    ``offline`` is the schema of the view's offline table, when it has one: columns are
    cast to it, and only where no value changes (an int64 column takes 2.0, not 2.5), so
    the online store and the offline table hold the same values. A column pushed with
    only nulls and no type, before the offline table gives it one, is refused for a
    windowed view (a feature view types it from its schema).
    """
    kind = "feature view" if isinstance(view, FeatureView) else "windowed view"
    owner = f"{kind} {view.name!r}"
    table = as_arrow(rows, owner)
    src = view.source
    features = _feature_columns(view)
    wanted = [*view.join_keys, src.timestamp, *([src.created] if src.created else []), *features]
    missing = [c for c in wanted if c not in table.column_names and c != src.created]
    if missing:
        raise InvalidInput(
            f"{owner}: pushed rows have no column {missing[0]!r}; expected columns "
            f"{', '.join(wanted)}"
        )
    extra = [c for c in table.column_names if c not in wanted]
    if extra:
        raise InvalidInput(
            f"{owner}: pushed rows have an unexpected column {extra[0]!r}; expected columns "
            f"{', '.join(wanted)}"
        )
    if table.num_rows == 0:
        raise InvalidInput(f"{owner}: nothing to push (no rows)")
    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    for key in view.join_keys:
        column = table.column(key)
        if column.null_count:
            raise InvalidInput(f"{owner}: join key {key!r} is null in {column.null_count} row(s)")
        # Stored under the key requests are converted to, so both paths find the rows.
        dtype = view.key_types.get(key)
        out[key] = column if dtype is None else convert_key(column, dtype, key)
    event = _utc(table.column(src.timestamp), src.timestamp, owner)
    if event.null_count:
        raise InvalidInput(f"{owner}: event time {src.timestamp!r} is null in some rows")
    out[src.timestamp] = event
    if src.created:
        if src.created in table.column_names:
            created = _utc(table.column(src.created), src.created, owner)
            if created.null_count:
                raise InvalidInput(
                    f"{owner}: created time {src.created!r} is null in {created.null_count} "
                    "row(s); reads never use a row without one. Give every row its created "
                    "time, or leave the column out to use the push time."
                )
            out[src.created] = created
        else:
            now = pa.scalar(datetime.now(UTC), pa.timestamp("us", "UTC"))
            out[src.created] = pa.array([now.as_py()] * table.num_rows, pa.timestamp("us", "UTC"))
    for name, arrow_type in features.items():
        column = table.column(name)
        if arrow_type is not None:
            try:
                column = (
                    _utc(column, name, owner)
                    if pa.types.is_timestamp(arrow_type)
                    else pc.cast(column, arrow_type, safe=True)
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InvalidInput(
                    f"{owner}: column {name!r} holds {column.type}, which cannot be safely "
                    f"cast to the declared {arrow_type}"
                ) from None
        elif pa.types.is_timestamp(column.type):
            column = _utc(column, name, owner)  # naive times mean UTC, as everywhere
        out[name] = column
    if offline is not None:
        out = {name: _as_offline(col, name, offline, kind, owner) for name, col in out.items()}
    if isinstance(view, WindowedFeatureView):
        for name in features:
            column_type = out[name].type
            if pa.types.is_null(column_type):
                raise InvalidInput(
                    f"{owner}: column {name!r} holds only nulls and has no type yet (its "
                    "offline table does not have it); push it typed the first time, as a "
                    "typed Arrow array or DataFrame column (float64, int64, string...)"
                )
            _check_aggregated(view, name, column_type, owner)
    return pa.table(out)


def offline_path(offline_dir: Path, view: FeatureView | WindowedFeatureView) -> Path:
    return Path(offline_dir) / view.name


def offline_schema(offline_dir: Path, view: FeatureView | WindowedFeatureView) -> pa.Schema | None:
    """The schema of the view's offline table; None before its first push."""
    import deltalake

    path = str(offline_path(offline_dir, view))
    if not Path(path).is_dir() or not deltalake.DeltaTable.is_deltatable(path):
        return None
    return pa.schema(deltalake.DeltaTable(path).schema().to_arrow())


def write_offline(
    offline_dir: Path, view: FeatureView | WindowedFeatureView, table: pa.Table
) -> None:
    """Append to the view's Delta table in one commit (created on the first push)."""
    import deltalake

    path = offline_path(offline_dir, view)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        deltalake.write_deltalake(str(path), table, mode="append")
    except Exception as exc:  # a schema that no longer matches earlier pushes
        if "schema" not in str(exc).lower():
            raise
        raise InvalidInput(
            f"view {view.name!r}: pushed columns do not match its offline table "
            f"({str(exc).splitlines()[0]})"
        ) from None


def online_rows(view: FeatureView | WindowedFeatureView, table: pa.Table) -> pa.Table:
    """A prepared push in the online layout: keys, ``event_ts``, ``created_ts``, then the
    feature columns (for a windowed view, the columns its aggregations read)."""
    src = view.source
    created = (
        table.column(src.created)
        if src.created
        else pa.nulls(table.num_rows, pa.timestamp("us", "UTC"))
    )
    columns: dict[str, Any] = {k: table.column(k) for k in view.join_keys}
    columns["event_ts"] = table.column(src.timestamp)
    columns["created_ts"] = created
    for name in _feature_columns(view):
        columns[name] = table.column(name)
    return pa.table(columns)
