"""Writing the prediction log: one file's table from whole arrays, published atomically.

The writer thread of :class:`~kiln.serving.predlog.PredictionLog` hands over the requests
buffered for one file (same deployment, hour, model version and layout); this module
builds their table with numpy and Arrow (no loop over rows) and publishes it under a name
no other file has, so readers never see a half-written file.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from kiln.serving._predlog_format import (
    ARROW_CAST_ERRORS,
    PREDICTION_SCHEMA,
    json_text,
)

# Inputs: ("matrix", names, dtype key) or ("columns", names, column keys); a request with
# entity keys has layout "matrix+entities" or "columns+entities", the third item
# (that key, entity names, entity column keys) and inputs (that data, entity columns).
InKey: TypeAlias = tuple[str, tuple[str, ...], Any]
# Output: category ("num": as double, "obj": typed by Arrow), dtype key, width (0: one value).
OutKey: TypeAlias = tuple[str, str, int]
# Where a request's rows go: one file per key per write.
Key: TypeAlias = tuple[str, int, str, int, InKey, OutKey]  # deployment, hour, model, version, ...
# One buffered request: request_id, arm, latency_ms, at (µs), fallback, shadow, rows,
# inputs (the matrix, or a tuple of columns in name order), outputs. Requests answered
# together are one entry of ten: request ids, arms, latencies and shadow flags hold one
# value per request (a tuple or an array), and a tenth item their row counts.
Entry: TypeAlias = tuple[Any, ...]

_WITH_ENTITIES = "+entities"  # the layout suffix of requests logged with their entity keys
_CONCAT_SLICE = 512  # arrays per np.concatenate call: lets other threads take the GIL between


def build_table(key: Key, entries: Sequence[Entry]) -> pa.Table:
    """One file's table: per-request values repeated, arrays concatenated, no row loop."""
    _, _, model, version, in_key, out_key = key
    ids, arms, latency_v, at_v, fallback_v, shadow_v, counts, inputs, outputs = _per_request(
        entries
    )
    n_requests = len(ids)
    total = int(counts.sum())
    take: np.ndarray | None = None  # request index of each row; None when one row each
    if total == n_requests:
        row = np.zeros(total, dtype=np.int32)
    else:
        take = np.repeat(np.arange(n_requests, dtype=np.int64), counts)
        starts = np.cumsum(counts) - counts
        row = (np.arange(total, dtype=np.int64) - np.repeat(starts, counts)).astype(np.int32)

    def per_request(values: np.ndarray) -> np.ndarray:
        return values if take is None else values[take]

    def per_request_text(values: Sequence[str]) -> pa.Array:
        arr = pa.array(values, type=pa.string())
        return arr if take is None else arr.take(pa.array(take))

    text_constant = pa.array([model], type=pa.string()).take(pa.array(np.zeros(total, np.int32)))
    fields: list[pa.Field] = list(PREDICTION_SCHEMA)
    arrays: list[pa.Array] = [
        per_request_text(ids),
        pa.array(row),
        text_constant,
        pa.array(np.full(total, version, dtype=np.int64)),
        per_request_text(arms),
        pa.array(per_request(latency_v)),
        pa.array(per_request(at_v), type=pa.timestamp("us", tz="UTC")),
        pa.array(per_request(fallback_v)),
        pa.array(per_request(shadow_v)),
    ]
    layout, names, spec = in_key
    entities: pa.StructArray | None = None
    if layout.endswith(_WITH_ENTITIES):
        layout = layout[: -len(_WITH_ENTITIES)]
        entity_names = spec[1]
        entity_columns = [
            _to_arrow(_concat(col)) for col in zip(*(d[1] for d in inputs), strict=True)
        ]
        entities = pa.StructArray.from_arrays(entity_columns, names=list(entity_names))
        inputs = [d[0] for d in inputs]
    if names:
        if layout == "matrix":
            children = _matrix_columns(_concat(inputs))
        else:
            children = [_to_arrow(_concat(col)) for col in zip(*inputs, strict=True)]
        features = pa.StructArray.from_arrays(children, names=list(names))
        fields.append(pa.field("features", features.type))
        arrays.append(features)
    if entities is not None:
        fields.append(pa.field("entities", entities.type))
        arrays.append(entities)
    category, _, width = out_key
    out = _concat(outputs)
    if category == "num":
        out = out.astype(np.float64, copy=False)
    columns = [_to_arrow(out)] if width == 0 else _matrix_columns(out)
    labels = ["output"] if width == 0 else [f"output_{j}" for j in range(width)]
    for label, column in zip(labels, columns, strict=True):
        fields.append(pa.field(label, column.type))
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


_PerRequest: TypeAlias = tuple[
    Sequence[str], Sequence[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray,
    np.ndarray, list[Any], list[np.ndarray],
]  # fmt: skip


def _per_request(entries: Sequence[Entry]) -> _PerRequest:
    """Each request's values as columns, whether entries hold one request or several.

    The writer runs this while the event loop waits for the GIL, so it is a handful of
    C-level passes over the entries (a transposition, chains, concatenations), never
    arrays built entry by entry.
    """
    if all(len(e) == 9 for e in entries):  # one request each: columns in one transposition
        ids, arms, latencies, ats, fallbacks, shadows, counts, inputs, outputs = zip(
            *entries, strict=True
        )
        return (
            ids, arms, np.array(latencies, dtype=np.float64), np.array(ats, dtype=np.int64),
            np.array(fallbacks, dtype=np.bool_), np.array(shadows, dtype=np.bool_),
            np.array(counts, dtype=np.int64), list(inputs), list(outputs),
        )  # fmt: skip
    groups = [e if len(e) == 10 else _as_group(e) for e in entries]
    requests = np.array([len(g[0]) for g in groups], dtype=np.int64)
    return (
        list(itertools.chain.from_iterable(g[0] for g in groups)),
        list(itertools.chain.from_iterable(g[1] for g in groups)),
        np.concatenate([g[2] for g in groups]),
        np.repeat(np.array([g[3] for g in groups], dtype=np.int64), requests),
        np.repeat(np.array([g[4] for g in groups], dtype=np.bool_), requests),
        np.concatenate([g[5] for g in groups]),
        np.concatenate([g[9] for g in groups]),
        [g[7] for g in groups],
        [g[8] for g in groups],
    )


def _as_group(entry: Entry) -> Entry:
    """A one-request entry in the form of requests answered together."""
    rid, arm, latency, at, fallback, shadow, rows, data, out = entry
    return (
        (rid,), (arm,), np.array([latency], dtype=np.float64), at, fallback,
        np.array([shadow], dtype=np.bool_), rows, data, out, np.array([rows], dtype=np.int64),
    )  # fmt: skip


def _matrix_columns(matrix: np.ndarray) -> list[pa.Array]:
    """A 2-D array's columns as Arrow arrays, each made contiguous first for Arrow."""
    by_column = np.ascontiguousarray(matrix.T)
    return [_to_arrow(by_column[j]) for j in range(by_column.shape[0])]


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` in slices, so one call never holds the GIL for long."""
    if len(arrays) == 1:
        return arrays[0]
    if len(arrays) <= _CONCAT_SLICE:
        return np.concatenate(arrays)
    return np.concatenate(
        [
            np.concatenate(arrays[i : i + _CONCAT_SLICE])
            for i in range(0, len(arrays), _CONCAT_SLICE)
        ]
    )


def _to_arrow(values: np.ndarray) -> pa.Array:
    """A column as Arrow: numbers and text whole; objects typed by Arrow, else JSON text."""
    if values.ndim == 2:
        flat = _to_arrow(np.ascontiguousarray(values).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    if values.dtype.kind != "O":
        return pa.array(values)
    try:
        return pa.array(values, from_pandas=False)
    except ARROW_CAST_ERRORS:
        # Mixed kinds (a number here, text there): text as is, anything else as JSON.
        return pa.array([json_text(v) for v in values], type=pa.string())
