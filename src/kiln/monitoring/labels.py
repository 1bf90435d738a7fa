"""Delayed labels: the truth about predictions, arriving hours or days after them.

A label names the prediction it belongs to by its request id (and row, for a request of
several rows), or by the entity keys and the event's time, as a chargeback names a card
and a transaction time. Batches are kept as Parquet files published whole beside the
prediction log (``<offline_dir>/labels/deployment=<name>/``), so logging a label is
atomic and a crash loses nothing acknowledged. A label logged again for the same
prediction replaces the earlier one when read (the later ``logged_at`` wins).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput, get_settings, new_id, now_millis

__all__ = ["LabelBatch", "labels_root", "log_labels", "read_labels"]

LABEL = "label"
REQUEST_ID = "request_id"
ROW = "row"
EVENT_TIME = "event_time"
LOGGED_AT = "logged_at"


@dataclass(frozen=True)
class LabelBatch:
    """What one ``log_labels`` call stored."""

    deployment: str
    rows: int
    by: str  # "request" or "entity"
    keys: tuple[str, ...]  # the entity keys, for labels by entity
    path: Path


def labels_root() -> Path:
    settings = get_settings()
    return (settings.offline_dir or settings.home / "offline") / "labels"


def log_labels(
    deployment: str,
    labels: Any,
    *,
    keys: Sequence[str] | None = None,
    label: str = LABEL,
) -> LabelBatch:
    """Store the true outcome of predictions ``deployment`` answered.

    ``labels`` (a DataFrame, Arrow table or list of dicts) has a ``label`` column (0/1 or
    booleans; ``label=`` names another) and either ``request_id`` (with ``row`` for
    requests of several rows) or, with ``keys=["card_id"]``, those entity keys and
    ``event_time``: the label then belongs to the latest prediction for those keys made
    at or before that time.
    """
    from kiln.serving.specs import check_name
    from kiln.store import write_atomically

    check_name(deployment)
    table = _table(labels)
    if label not in table.column_names:
        raise InvalidInput(
            f"labels need a {label!r} column; they have: {', '.join(table.column_names)}"
        )
    values = _binary(table.column(label), label)
    key_names: tuple[str, ...] = ()
    if keys is None:
        by, columns = "request", _by_request(table)
    else:
        by, key_names = "entity", _key_names(keys)
        columns = _by_entity(table, key_names)
    out = pa.table(
        {
            **columns,
            LABEL: values,
            LOGGED_AT: pa.array(
                np.full(table.num_rows, now_millis() * 1000), pa.timestamp("us", tz="UTC")
            ),
        }
    )
    directory = labels_root() / f"deployment={deployment}"
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{by}-{new_id()}.parquet"
    write_atomically(directory, name, out)
    return LabelBatch(deployment, out.num_rows, by, key_names, directory / name)


def read_labels(deployment: str, by: str) -> pa.Table | None:
    """Every label of ``deployment`` logged ``by`` request or entity, or None."""
    import duckdb

    directory = labels_root() / f"deployment={deployment}"
    files = sorted(str(p) for p in directory.glob(f"part-{by}-*.parquet"))
    if not files:
        return None
    con = duckdb.connect()
    try:
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        scan = f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"
        return con.sql(f"SELECT * FROM {scan}").to_arrow_table()
    finally:
        con.close()


def _table(labels: Any) -> pa.Table:
    if isinstance(labels, pa.Table):
        return labels
    if isinstance(labels, list) and all(isinstance(r, dict) for r in labels):
        if not labels:
            raise InvalidInput("labels is empty: give at least one label")
        return pa.Table.from_pylist(labels)
    if type(labels).__name__ == "DataFrame" and type(labels).__module__.startswith("pandas"):
        return pa.Table.from_pandas(labels, preserve_index=False)
    raise InvalidInput(
        "labels must be a pandas DataFrame, a pyarrow Table or a list of dicts; "
        f"got {type(labels).__name__}"
    )


def _binary(column: pa.ChunkedArray, name: str) -> pa.Array:
    """Labels as 0.0/1.0; anything else is named and refused."""
    if column.null_count:
        raise InvalidInput(f"labels column {name!r} has {column.null_count} missing value(s)")
    if pa.types.is_boolean(column.type):
        return pc.cast(column, pa.float64()).combine_chunks()
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise InvalidInput(f"labels column {name!r} must hold 0/1 or booleans; got {column.type}")
    values = column.to_numpy().astype(np.float64)
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise InvalidInput(
            f"labels column {name!r} must hold 0 or 1 (a binary outcome); got {bad[0]:g}"
        )
    return pa.array(values)


def _by_request(table: pa.Table) -> dict[str, pa.Array]:
    if REQUEST_ID not in table.column_names:
        raise InvalidInput(
            "labels need a 'request_id' column (the id each answer carried), or keys= with "
            "the entity keys and 'event_time'"
        )
    ids = table.column(REQUEST_ID)
    if ids.null_count:
        raise InvalidInput(f"labels column 'request_id' has {ids.null_count} missing value(s)")
    rows = (
        pc.cast(table.column(ROW), pa.int32()).combine_chunks()
        if ROW in table.column_names
        else pa.array(np.zeros(table.num_rows, np.int32))
    )
    return {REQUEST_ID: pc.cast(ids, pa.string()).combine_chunks(), ROW: rows}


def _key_names(keys: Sequence[str]) -> tuple[str, ...]:
    if isinstance(keys, str) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise InvalidInput(f"keys must be a list of entity key names; got {keys!r}")
    return tuple(keys)


def _by_entity(table: pa.Table, keys: Sequence[str]) -> dict[str, Any]:
    missing = [k for k in (*keys, EVENT_TIME) if k not in table.column_names]
    if missing:
        raise InvalidInput(
            f"labels by entity need the columns {', '.join([*keys, EVENT_TIME])}; missing: "
            f"{', '.join(missing)}"
        )
    when = table.column(EVENT_TIME)
    if not pa.types.is_timestamp(when.type):
        raise InvalidInput(f"labels column 'event_time' must hold timestamps; got {when.type}")
    if when.type.tz is None:  # naive means UTC, as everywhere in Kiln
        when = pc.assume_timezone(when, "UTC")
    columns: dict[str, Any] = {k: table.column(k).combine_chunks() for k in keys}
    columns[EVENT_TIME] = pc.cast(when, pa.timestamp("us", tz="UTC")).combine_chunks()
    return columns
