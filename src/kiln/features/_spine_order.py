"""A join's result put back in spine order, with each view's TTL applied on the way.

DuckDB's joins return rows in no particular order, each with its spine row number, a
permutation. Each fixed-width column is scattered to its rows' positions (``out[row] =
value``) in numpy, chunk by chunk: on a 1M-row spine, writes to random places cost half
of reads from random places (a gather, ``take``) and a quarter of sorting the result
again (``ORDER BY``). Other columns (strings, booleans...) are gathered.

Columns are scattered on a few threads (numpy lets go of the GIL while it scatters): a
scatter's time goes to cache misses and to faulting in fresh pages, which both cores can
take at once, and the rest of the retrieval has finished with the cores by then.

Validity is moved per distinct bitmap, not per column: the features of one view are
null on the same rows (no match, too old), so a validity equal to the previous column's
is reused. A view with a TTL sends one boolean per row, *fresh*, instead of a ``CASE``
per feature in SQL (which cost DuckDB one comparison per feature and row); a row that is
not fresh is null in every feature of its view.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import usable_cores

__all__ = ["in_spine_order"]

_WIDTHS: dict[int, type[np.unsignedinteger]] = {
    1: np.uint8,
    2: np.uint16,
    4: np.uint32,
    8: np.uint64,
}


def in_spine_order(table: pa.Table, row: str, fresh: Mapping[str, str]) -> pa.Table:
    """``table`` without ``row`` and the fresh columns, each row moved to its ``row``.

    ``fresh`` maps a column to the boolean column that says where it may hold a value
    (NULL or false: nowhere); other columns keep their own validity.
    """
    rows = np.asarray(table.column(row).to_numpy(), dtype=np.int64)
    masks = {name: _true(table.column(name)) for name in set(fresh.values())}
    bitmaps = _Bitmaps(rows)
    inverse: np.ndarray | None = None
    kept = [n for n in table.column_names if n != row and n not in masks]
    widths = [_width(table.schema.field(n).type) for n in kept]
    block = _Block(len(rows), widths)
    columns: list[pa.Array | _Scatter] = []
    for name, width in zip(kept, widths, strict=True):
        column = table.column(name)
        mask = masks.get(fresh.get(name, ""))
        valid = _valid(column)
        if mask is not None:
            valid = mask if valid is None else valid & mask
        if width is not None:
            columns.append(_Scatter(column, rows, block.take(width), *bitmaps.scattered(valid)))
            continue
        if inverse is None:
            inverse = np.empty(len(rows), dtype=np.int64)
            inverse[rows] = np.arange(len(rows), dtype=np.int64)
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if mask is not None:
            array = pc.if_else(pa.array(valid), array, pa.scalar(None, array.type))
        columns.append(array.take(pa.array(inverse)))
    schema = pa.schema([table.schema.field(n) for n in kept])
    return pa.Table.from_arrays(_done(columns), schema=schema)


def _done(columns: list[pa.Array | _Scatter]) -> list[pa.Array]:
    """The columns with every pending scatter run, on the shared threads when several."""
    pending = [i for i, c in enumerate(columns) if isinstance(c, _Scatter)]
    run = _pool().map if len(pending) > 1 and usable_cores() > 1 else map
    done: list[pa.Array] = list(columns)  # the scatters are replaced below
    for i, array in zip(pending, run(lambda i: columns[i](), pending), strict=True):
        done[i] = array
    return done


_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            workers = min(4, usable_cores())
            _executor = ThreadPoolExecutor(workers, thread_name_prefix="kiln-spine-order")
        return _executor


class _Bitmaps:
    """Validity bitmaps in spine order, the last one remembered for the next column."""

    def __init__(self, rows: np.ndarray) -> None:
        self._rows = rows
        self._last: tuple[np.ndarray, pa.Buffer, int] | None = None

    def scattered(self, valid: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
        if valid is None:
            return None, 0
        last = self._last
        if last is not None and (last[0] is valid or np.array_equal(last[0], valid)):
            return last[1], last[2]
        moved = np.empty(len(valid), dtype=bool)
        moved[self._rows] = valid
        bitmap = pa.py_buffer(np.packbits(moved, bitorder="little"))
        nulls = len(valid) - int(np.count_nonzero(valid))
        self._last = (valid, bitmap, nulls)
        return bitmap, nulls


class _Block:
    """One zeroed allocation that the scattered columns are carved from.

    Writes to random places of fresh memory fault its pages in one by one; a single
    ``calloc``-backed block, mapped in large pages where the system does that, cost a
    quarter as much on a 1M-row spine as a fresh array per column.
    """

    _ALIGN = 64

    def __init__(self, n: int, widths: list[type[np.unsignedinteger] | None]) -> None:
        self._n = n
        sizes = [self._padded(n * np.dtype(w).itemsize) for w in widths if w is not None]
        self._memory = np.zeros(sum(sizes), dtype=np.uint8)
        self._used = 0

    def _padded(self, size: int) -> int:
        return -(-size // self._ALIGN) * self._ALIGN

    def take(self, width: type[np.unsignedinteger]) -> np.ndarray:
        size = self._n * np.dtype(width).itemsize
        part = self._memory[self._used : self._used + size].view(width)
        self._used += self._padded(size)
        return part


def _true(column: pa.ChunkedArray) -> np.ndarray:
    """Where a boolean column is true (NULL counts as false)."""
    filled = pc.fill_null(column, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _valid(column: pa.ChunkedArray) -> np.ndarray | None:
    """Where the column holds a value, in table order; None when it has no nulls."""
    if column.null_count == 0:
        return None
    parts = []
    for chunk in column.chunks:
        bitmap = chunk.buffers()[0]
        if chunk.null_count == 0:
            parts.append(np.ones(len(chunk), dtype=bool))
        elif bitmap is None:  # the null type: no bitmap, nothing valid
            parts.append(np.zeros(len(chunk), dtype=bool))
        else:
            bits = np.unpackbits(
                np.frombuffer(bitmap, dtype=np.uint8),
                count=chunk.offset + len(chunk),
                bitorder="little",
            )
            parts.append(bits[chunk.offset :].view(bool))
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


def _width(kind: pa.DataType) -> type[np.unsignedinteger] | None:
    """The numpy type of a fixed-width column's values; None for others."""
    if pa.types.is_boolean(kind) or not pa.types.is_primitive(kind) or kind.bit_width % 8:
        return None
    return _WIDTHS.get(kind.bit_width // 8)


class _Scatter:
    """A column with value ``i`` moved to position ``rows[i]`` of ``out``, when called."""

    def __init__(
        self,
        column: pa.ChunkedArray,
        rows: np.ndarray,
        out: np.ndarray,
        bitmap: pa.Buffer | None,
        nulls: int,
    ) -> None:
        self._column, self._rows, self._out = column, rows, out
        self._bitmap, self._nulls = bitmap, nulls

    def __call__(self) -> pa.Array:
        column, rows, out = self._column, self._rows, self._out
        size = out.dtype.itemsize
        start = 0
        for chunk in column.chunks:
            count = len(chunk)
            if count:
                values = np.frombuffer(
                    chunk.buffers()[1], dtype=out.dtype, count=count, offset=chunk.offset * size
                )
                out[rows[start : start + count]] = values
            start += count
        buffers = [self._bitmap, pa.py_buffer(out)]
        return pa.Array.from_buffers(column.type, len(rows), buffers, self._nulls)
