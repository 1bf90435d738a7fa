"""Reading the prediction log back as one Arrow table, across every schema it was written in."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kiln.serving._predlog_format import (
    ARROW_CAST_ERRORS,
    FILE_RE,
    HOUR_US,
    PARTITION_FIELDS,
    PARTITIONING,
    PREDICTION_SCHEMA,
    default_root,
    epoch_us,
    hour_label,
    json_text,
)
from kiln.serving.specs import check_name

_OUTPUT_RE = re.compile(r"^output(?:_(\d+))?$")


def read_predictions(
    root: str | os.PathLike[str] | None = None,
    *,
    deployment: str | None = None,
    since: datetime | int | None = None,
) -> pa.Table:
    """Read the published prediction files as one Arrow table.

    Columns: :data:`PREDICTION_SCHEMA`, then ``features`` (a struct with every input any
    file has, null where a file lacks it), ``entities`` when any file has entity keys
    (null for rows of files without them) and the output columns, then ``deployment`` and
    ``hour`` from the path. ``deployment`` keeps one deployment; ``since`` (aware datetime,
    naive meaning UTC, or epoch µs) keeps rows answered at or after it. Rows come in no
    particular order; temporary files of writes in progress are never read.
    """
    base = Path(root) if root is not None else default_root()
    if deployment is not None:
        check_name(deployment)
    since_us = None if since is None else epoch_us(since, "since")
    first_hour = None if since_us is None else hour_label(since_us // HOUR_US)
    files: list[str] = []
    if base.is_dir():
        dep_dirs = (
            [base / f"deployment={deployment}"]
            if deployment is not None
            else sorted(base.glob("deployment=*"))
        )
        for dep_dir in dep_dirs:
            for hour_dir in sorted(dep_dir.glob("hour=*")):
                if first_hour is not None and hour_dir.name[len("hour=") :] < first_hour:
                    continue
                files.extend(str(p) for p in sorted(hour_dir.glob("*.parquet")) if p.name[0] != ".")
    groups = _schema_groups(files)
    schema = _merged_schema([file_schema for _, file_schema in groups])
    where = None
    if since_us is not None:
        where = ds.field("at") >= pa.scalar(since_us, type=pa.timestamp("us", tz="UTC"))
    try:
        return _scan(files, schema, base, where)
    except ARROW_CAST_ERRORS:
        # A column whose types Arrow cannot cast to one (a list here, a number there):
        # read each schema by itself and write what does not cast as JSON text.
        tables = []
        for group, file_schema in groups:
            own = pa.schema([*file_schema, *PARTITION_FIELDS])
            tables.append(_conform(_scan(group, own, base, where), schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()


def _scan(
    files: Sequence[str], schema: pa.Schema, base: Path, where: ds.Expression | None
) -> pa.Table:
    dataset = ds.dataset(
        files,
        schema=schema,
        format="parquet",
        partitioning=PARTITIONING,
        partition_base_dir=str(base),
    )
    return dataset.to_table(filter=where)


def _schema_groups(files: Sequence[str]) -> list[tuple[list[str], pa.Schema]]:
    """Files by schema, read from one file per schema the file names name."""
    by_schema: dict[str, list[str]] = {}
    for path in files:
        match = FILE_RE.match(os.path.basename(path))
        by_schema.setdefault(match.group(1) if match else path, []).append(path)
    return [(group, pq.read_schema(group[0])) for group in by_schema.values()]


def _merged_schema(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema all ``schemas`` read as: every column, each of a type all its types fit."""
    merged: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            if f.name in PREDICTION_SCHEMA.names:
                continue
            known = merged.get(f.name)
            merged[f.name] = f.type if known is None else _merge_type(known, f.type)
    names = sorted(merged, key=_column_order)
    return pa.schema(
        [*PREDICTION_SCHEMA, *(pa.field(n, merged[n]) for n in names), *PARTITION_FIELDS]
    )


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(_conform_array(table[f.name].combine_chunks(), f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _conform_array(arr: pa.Array, to: pa.DataType) -> pa.Array:
    if arr.type.equals(to):
        return arr
    if pa.types.is_struct(to) and pa.types.is_struct(arr.type):
        names = {arr.type.field(i).name for i in range(arr.type.num_fields)}
        children = [
            _conform_array(arr.field(f.name), f.type)
            if f.name in names
            else pa.nulls(len(arr), f.type)
            for f in to
        ]
        return pa.StructArray.from_arrays(children, fields=list(to), mask=arr.is_null())
    try:
        return arr.cast(to)
    except ARROW_CAST_ERRORS:
        if not pa.types.is_string(to):
            raise
        return pa.array([json_text(v) for v in arr.to_pylist()], type=to)  # JSON text


def _column_order(name: str) -> tuple[int, int, str]:
    if name == "features":
        return (0, 0, name)
    if name == "entities":
        return (0, 1, name)
    match = _OUTPUT_RE.match(name)
    if match:
        return (1, -1 if match.group(1) is None else int(match.group(1)), name)
    return (2, 0, name)


def _merge_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A type both ``a`` and ``b`` read as: the same, the wider, or string."""
    if a.equals(b) or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        children: dict[str, pa.DataType] = {f.name: f.type for f in a}
        for f in b:
            known = children.get(f.name)
            children[f.name] = f.type if known is None else _merge_type(known, f.type)
        return pa.struct([pa.field(n, t) for n, t in children.items()])
    try:
        unified = pa.unify_schemas(
            [pa.schema([pa.field("x", a)]), pa.schema([pa.field("x", b)])],
            promote_options="permissive",
        )
    except ARROW_CAST_ERRORS:
        return pa.string()
    return unified.field("x").type
