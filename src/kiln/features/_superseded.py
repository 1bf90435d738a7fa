"""A view's superseded rows, found with one sort of (keys, event, created) and linear scans.

A row is *superseded* when another row of its entity has a greater ``(event_ts,
created)`` and became visible (``greatest(event_ts, created)``) no later than it did: an
ASOF join on visibility that lands on it must answer with the best row visible by then
instead (see ``kiln.features.offline``). The direct SQL for that, a running maximum over
a window per entity, costs three to four times a plain sort of the same rows, and it is
what the first training set built after new files land pays.

Here DuckDB only reads (keys, event, created), unsorted, and numpy does the rest. Integer
and string keys become one int64 entity id each, folded with the event time into a
single int64 that numpy sorts several times faster than DuckDB sorts the three columns
(other key types are sorted by DuckDB). One comparison per row then keeps only the
entities where a row can be superseded at all, usually few, and linear passes over their
rows find the answer: in (keys, event, created) order a row's rank is its position, so
"a greater rank became visible no later" is "the smallest visibility time after the
row's tie group, within its entity, is at most its own" (a suffix minimum); and the best
row a superseded row stands for is the greatest position among its entity's rows
visible by its visibility time (a prefix maximum in visibility order, computed only for
the entities that have superseded rows).
Entities are kept apart by offsetting each one's values past the previous entity's, so
one unsegmented ``accumulate`` serves all of them. Only identities are kept: the join
reads the best rows' features in the same pass that drops the superseded rows
(``kiln.features._sources.point_in_time``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.features._sources import (
    BEST_CREATED,
    BEST_EV,
    CREATED_TS,
    EVENT_TS,
    VISIBLE,
    Rows,
    fresh_name,
    quote,
)
from kiln.features._sources import _usable as usable

__all__ = ["find", "superseded"]


class _Cache:
    """Per content fingerprint, the superseded rows found for it.

    Which rows are superseded, and which row each stands for, depends only on the rows,
    which the fingerprint pins: a training set built again over unchanged files reuses
    them. Usually there are a few, or none.
    """

    _LIMIT = 32  # sources remembered
    _MAX_ROWS = 100_000  # larger answers are recomputed rather than held in memory

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: OrderedDict[str, pa.Table] = OrderedDict()

    def get(self, con: duckdb.DuckDBPyConnection, rows: Rows) -> pa.Table:
        key = rows.fingerprint
        if key is not None:
            with self._lock:
                if key in self._tables:
                    self._tables.move_to_end(key)
                    return self._tables[key]
        table = find(con, rows)
        if key is not None and table.num_rows <= self._MAX_ROWS:
            with self._lock:
                self._tables[key] = table
                while len(self._tables) > self._LIMIT:
                    self._tables.popitem(last=False)
        return table


_cache = _Cache()


def superseded(con: duckdb.DuckDBPyConnection, rows: Rows) -> str | None:
    """A registered relation of the rows' superseded rows; None if there are none."""
    table = _cache.get(con, rows)
    if table.num_rows == 0:
        return None
    name = fresh_name("superseded")
    con.register(name, table)
    return name


def find(con: duckdb.DuckDBPyConnection, rows: Rows) -> pa.Table:
    """Superseded rows as keys, ``event_ts``, ``created_ts``, VISIBLE, BEST_EV, BEST_CREATED.

    BEST_EV and BEST_CREATED identify the best row (with the keys): rows tied on all
    three are interchangeable. Rows with a NULL key are left out: no spine row can join
    them.
    """
    keys = ", ".join(quote(k) for k in rows.keys)
    known = " AND ".join(f"{quote(k)} IS NOT NULL" for k in rows.keys)
    select = f"SELECT {keys}, {EVENT_TS}, {CREATED_TS} FROM ({usable(rows)}) WHERE {known}"
    table = con.sql(select).to_arrow_table()
    ids = _entity_ids(table, rows.keys)
    if ids is None:  # keys numpy cannot group (floats, dates...): DuckDB sorts
        table = con.sql(f"{select} ORDER BY {keys}, {EVENT_TS}, {CREATED_TS}").to_arrow_table()
    event = _micros(table.column(EVENT_TS))
    created = _micros(table.column(CREATED_TS))
    if ids is None:
        order = np.arange(table.num_rows, dtype=np.int64)
        entity = _entity_starts(table, rows.keys)
    else:
        order = _order(ids, event, created)
        event, created, ids = event[order], created[order], ids[order]
        entity = np.ones(len(ids), dtype=bool)
        entity[1:] = ids[1:] != ids[:-1]
    visible = np.maximum(event, created)
    # From here on, only the entities where a row can be superseded at all.
    kept = _possibly_superseding(entity, event, visible)
    entity, event, created, visible, order = (
        a[kept] for a in (entity, event, created, visible, order)
    )
    segment = np.cumsum(entity, dtype=np.int64) - 1
    ranked = _offset_by_entity(segment, visible)
    positions = _superseded_positions(entity, event, created, ranked)
    best = _best_positions(segment, ranked, positions) if positions.size else positions
    return _assemble(rows, table, order[positions], order[best], visible[positions])


def _possibly_superseding(entity: np.ndarray, event: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Positions of the rows of every entity in which a row may be superseded.

    Rows sorted by (entity, event, created). A row can only be superseded if the next row
    of its entity has an event time no later than the row's visibility: every row past it
    has an event time at least that, and a row becomes visible no earlier than its event.
    That test is one comparison per row; usually few entities pass it, and the exact
    scans then run on their rows only.
    """
    n = len(entity)
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    maybe = ~entity[1:] & (event[1:] <= visible[:-1])
    if not maybe.any():
        return np.zeros(0, dtype=np.int64)
    segment = np.cumsum(entity, dtype=np.int64) - 1
    wanted = np.zeros(int(segment[-1]) + 1, dtype=bool)
    wanted[segment[:-1][maybe]] = True
    return np.flatnonzero(wanted[segment])


def _entity_ids(table: pa.Table, keys: tuple[str, ...]) -> np.ndarray | None:
    """One int64 per row, equal exactly where the rows' keys are; None for other key types.

    Integer and string keys only: for them equality in numpy and Arrow is equality in
    DuckDB. Ids need not follow the keys' order, only keep entities apart.
    """
    ids = np.zeros(table.num_rows, dtype=np.int64)
    count = 1
    for key in keys:
        column = table.column(key)
        kind = column.type
        if pa.types.is_integer(kind):
            values = np.asarray(column.to_numpy(), dtype=np.int64)  # uint64 wraps: still 1:1
            codes, size = _dense(values)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            encoded = pc.dictionary_encode(column.combine_chunks())
            codes = np.asarray(encoded.indices.to_numpy(), dtype=np.int64)
            size = len(encoded.dictionary)
        else:
            return None
        if count * size >= 2**62:
            ids, count = _ranks(ids)
        ids = ids * size + codes
        count *= max(size, 1)
    return ids


def _dense(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` as non-negative codes, 1:1, and how many codes there can be.

    Offsets from the minimum when the range is narrow (no sort), else dense ranks.
    """
    if values.size == 0:
        return values, 1
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 2**32:
        return values - lo, hi - lo + 1
    return _ranks(values)


def _ranks(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ranks of ``values`` (one sort) and how many distinct values there are."""
    unique, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), len(unique)


def _order(ids: np.ndarray, event: np.ndarray, created: np.ndarray) -> np.ndarray:
    """The permutation sorting rows by (entity, event, created), entities in id order.

    One sort of a single int64, entity and event folded together (numpy's fastest sort),
    then the rare rows tied on both ordered by created among themselves. Raw
    microseconds are folded when entity count times their span fits in int64, else
    dense ranks (one more sort).
    """
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    entities = int(ids.max()) + 1
    lo, hi = int(event.min()), int(event.max())
    if entities * (hi - lo + 1) < 2**62:
        folded = ids * (hi - lo + 1) + (event - lo)
    else:
        ids, entities = _ranks(ids)
        events, count = _ranks(event)
        if entities * count >= 2**62:  # beyond 2**31 rows
            return np.lexsort((created, event, ids)).astype(np.int64)
        folded = ids * count + events
    order = np.argsort(folded).astype(np.int64, copy=False)
    ranked = folded[order]
    tied = np.zeros(len(order), dtype=bool)
    same = ranked[1:] == ranked[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():
        # Whole tie groups, in ascending order: sorted among themselves by (folded,
        # created), they land on the same positions with created ascending in each.
        at = np.flatnonzero(tied)
        group = order[at]
        order[at] = group[np.lexsort((created[group], folded[group]))]
    return order


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    """Naive timestamps as int64 microseconds; DuckDB's infinities are the int64 extremes."""
    return np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _entity_starts(table: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """True where a row's keys differ from the previous row's (rows sorted by keys)."""
    n = table.num_rows
    starts = np.zeros(n, dtype=bool)
    if n == 0:
        return starts
    starts[0] = True
    for key in keys:
        col = table.column(key)
        if col.num_chunks != 1:
            col = col.combine_chunks()
        arr = col.chunk(0) if isinstance(col, pa.ChunkedArray) else col
        before, after = arr.slice(0, n - 1), arr.slice(1)
        differs = pc.not_equal(after, before)
        if pa.types.is_floating(arr.type):
            # DuckDB joins NaN to NaN, so NaN keys are one entity.
            both_nan = pc.and_(pc.is_nan(after), pc.is_nan(before))
            differs = pc.and_(differs, pc.invert(both_nan))
        starts[1:] |= differs.to_numpy(zero_copy_only=False)
    return starts


def _offset_by_entity(segment: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` shifted so that every entity's lie above all of the previous entity's.

    The order within an entity is kept. Raw microseconds are used when entity count
    times their span fits in int64, else their dense ranks (one more sort, rare).
    """
    n = len(values)
    if n == 0:
        return values.copy()
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if (int(segment[-1]) + 1) * span < 2**62:
        shifted: np.ndarray = segment * span + (values - lo)
        return shifted
    dense = np.unique(values, return_inverse=True)[1].astype(np.int64).reshape(-1)
    return segment * n + dense


def _superseded_positions(
    entity: np.ndarray, event: np.ndarray, created: np.ndarray, ranked: np.ndarray
) -> np.ndarray:
    """Positions of rows that a row of a greater rank, visible no later, supersedes.

    Rows tied on (keys, event, created) share a rank and never supersede each other, so
    each row looks past its tie group. Through the offsets, a later entity's minimum is
    always above this entity's values, so no test needs the entity again.
    """
    n = len(ranked)
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    tie_start = entity.copy()
    tie_start[1:] |= (event[1:] != event[:-1]) | (created[1:] != created[:-1])
    suffix_min = np.minimum.accumulate(ranked[::-1])[::-1]
    later = np.empty(n, dtype=np.int64)  # the smallest value past the row's tie group
    later[-1] = np.iinfo(np.int64).max
    if tie_start.all():  # no ties, the usual case: past the group is the next row
        later[:-1] = suffix_min[1:]
    else:
        starts = np.flatnonzero(tie_start)
        after = np.append(starts[1:], n)[np.cumsum(tie_start) - 1]
        inside = after < n
        later[~inside] = np.iinfo(np.int64).max
        later[inside] = suffix_min[after[inside]]
    return np.flatnonzero(later <= ranked)


def _best_positions(segment: np.ndarray, ranked: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each superseded position, the greatest position of its entity visible by then.

    Only the entities with superseded rows are looked at: their rows in visibility order
    (position order among equal times), a running maximum of position, and for rows that
    tie on visibility the maximum at the last of them (a row sees its peers).
    """
    wanted = np.zeros(int(segment[-1]) + 1, dtype=bool)
    wanted[segment[positions]] = True
    subset = np.flatnonzero(wanted[segment])
    order = subset[np.argsort(ranked[subset], kind="stable")]
    running = np.maximum.accumulate(order)
    times = ranked[order]
    last = np.append(times[1:] != times[:-1], True)
    run = np.cumsum(np.append(True, last[:-1])) - 1
    best = np.empty(len(ranked), dtype=np.int64)
    best[order] = running[np.flatnonzero(last)][run]
    chosen: np.ndarray = best[positions]
    return chosen


def _assemble(
    rows: Rows, table: pa.Table, positions: np.ndarray, best: np.ndarray, visible: np.ndarray
) -> pa.Table:
    """The superseded rows (``positions`` in ``table``) with their visibility and best rows."""
    out = table.take(pa.array(positions, pa.int64()))
    out = out.append_column(VISIBLE, pa.array(visible, pa.timestamp("us")))
    out = out.append_column(BEST_EV, table.column(EVENT_TS).take(pa.array(best, pa.int64())))
    return out.append_column(
        BEST_CREATED, table.column(CREATED_TS).take(pa.array(best, pa.int64()))
    )
