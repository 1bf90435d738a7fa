"""Window aggregations online: each entity's recent events, aggregated at read time.

The online value of an entity is the list of its recent events, sorted by ``(event time,
created time)``. Each event is stored in the layout of an online feature row (see
:mod:`kiln.features.online`), ``[event_us, created_us, specials, value...]`` with one
value per column the aggregations read, so NaN, infinities and timestamps are encoded
and restored exactly as for feature views. A read aggregates the list at the read
instant with the rules the offline SQL follows (see :mod:`kiln.features.offline`), so an
online value equals the offline point-in-time value at the same instant, whatever the
window boundaries, instead of drifting the way pre-bucketed counters do.

**What a list keeps.** A push at wall-clock time ``now`` drops the events with
``event_us <= min(newest event, now) - widest window``. A read at an instant ``t``
aggregates events with ``event_us > t - window >= t - widest window``, so a read at any
``t >= min(newest event, now)`` finds every event it needs: every read at or after the
push is exact. (Pruning by the newest event alone would drop, when that event lies in
the future, events that reads before it still need.) Reads at instants before the last
push time are not guaranteed.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import orjson
import pyarrow as pa

from kiln.core import InvalidInput
from kiln.features.definitions import WindowedFeatureView
from kiln.features.online import (
    _FIRST,
    _NO_CREATED,
    OnlineStore,
    _encode_records,
    _entity_keys,
    _micros,
    _prefix,
    _restore,
    _time_micros,
)

__all__ = ["read_windows", "update_windows"]

_MICRO = timedelta(microseconds=1)
_EVENT_US = itemgetter(0)


def _columns(view: WindowedFeatureView) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a.column for a in view.aggregations if a.column is not None))


def _order(event: list[Any]) -> tuple[int, int]:
    """Event time, then created time (a null one, meaning no created column, first)."""
    return event[0], _NO_CREATED if event[1] is None else event[1]


def update_windows(
    online: OnlineStore,
    view: WindowedFeatureView,
    version: str,
    events: pa.Table,
    *,
    replace: bool = False,
    now: datetime | None = None,
) -> int:
    """Merge pushed events into each entity's event list; returns the entities updated.

    The merge runs inside one atomic :meth:`kiln.store.KVStore.update_many`, against the
    lists stored at that moment, so events pushed by several processes at once all land.
    With ``replace`` the given events become the entity's whole list (materialization
    from the source, which already holds every event of the window).

    ``events`` has the join keys, ``event_ts`` and ``created_ts`` (UTC timestamps) and the
    columns the aggregations read. ``now`` (the wall clock by default) is the push time:
    the lists are pruned as the module docstring says, so that every read at or after it
    is exact.
    """
    owner = f"windowed view {view.name!r}"
    if events.num_rows == 0:
        return 0
    prefix = _prefix(view.name, version, owner)
    keys = _entity_keys(owner, events, view.join_keys, prefix)
    _, event_us = _time_micros(owner, events, "event_ts")
    _, created_us = _time_micros(owner, events, "created_ts")
    encoded = _encode_records(owner, events, _columns(view), event_us, created_us)
    fresh: dict[str, list[list[Any]]] = {}
    for key, event in zip(keys, orjson.loads(b"[" + b",".join(encoded) + b"]"), strict=True):
        fresh.setdefault(key, []).append(event)
    widest = view.max_window // _MICRO
    now_us = _micros(now or datetime.now(UTC))
    unique = list(fresh)

    def merge(stored: list[bytes | None]) -> dict[str, bytes]:
        """Stored lists plus the fresh events, pruned; pure, as update_many needs."""
        updates: dict[str, bytes] = {}
        for key, old in zip(unique, stored, strict=True):
            merged = (orjson.loads(old) if old is not None else []) + fresh[key]
            merged.sort(key=_order)
            horizon = min(merged[-1][0], now_us) - widest
            updates[key] = orjson.dumps([e for e in merged if e[0] > horizon])
        return updates

    if replace:
        updates = merge([None] * len(unique))
        online.kv.put_many(updates)
        return len(updates)
    return len(online.kv.update_many(unique, merge))


def _aggregate(function: str, index: int | None, events: list[list[Any]]) -> Any:
    """One aggregation over the events inside its window, as DuckDB computes it."""
    if function == "count":
        if index is None:
            return len(events)
        return sum(1 for e in events if e[index] is not None)
    if function == "last":
        return events[-1][index] if events and index is not None else None
    values = [e[index] for e in events if index is not None and e[index] is not None]
    if not values:
        return None
    if function == "sum":
        return sum(values)
    if function == "mean":
        return sum(values) / len(values)
    # DuckDB ranks NaN above every number (and ±inf). Every NaN here is the math.nan
    # object that online._restore_nan returns, so `in` finds it by identity.
    if math.nan in values:
        if function == "max":
            return math.nan
        numbers = [v for v in values if v == v]
        return min(numbers) if numbers else math.nan
    return min(values) if function == "min" else max(values)


def read_windows(
    online: OnlineStore,
    view: WindowedFeatureView,
    version: str,
    features: Sequence[tuple[str, str]],
    entity_rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime | None = None,
) -> dict[str, list[Any]]:
    """Each wanted aggregation (``(name, output_name)``) per entity row, at ``now``."""
    owner = f"windowed view {view.name!r}"
    now_us = _micros(now or datetime.now(UTC))
    for row in entity_rows:
        for k in view.join_keys:
            if k not in row:
                raise InvalidInput(f"{owner}: entity row {dict(row)!r} has no join key {k!r}")
    table = pa.table({k: [row[k] for row in entity_rows] for k in view.join_keys})
    keys = _entity_keys(owner, table, view.join_keys, _prefix(view.name, version, owner))
    stored = online.kv.get_many(keys)
    by_name = {a.name: a for a in view.aggregations}
    positions = {c: _FIRST + i for i, c in enumerate(_columns(view))}
    wanted = []
    for feature, name in features:
        agg = by_name[feature]
        index = positions[agg.column] if agg.column is not None else None
        wanted.append((agg.function, index, now_us - agg.window // _MICRO, name))
    out: dict[str, list[Any]] = {name: [] for _, name in features}
    for raw in stored:
        events = orjson.loads(raw) if raw is not None else []
        # Sorted by event time: the events up to now, then those already written by now.
        del events[bisect_right(events, now_us, key=_EVENT_US) :]
        visible = [_restore(e) if e[2] else e for e in events if e[1] is None or e[1] <= now_us]
        for function, index, start, name in wanted:
            inside = visible[bisect_right(visible, start, key=_EVENT_US) :]
            out[name].append(_aggregate(function, index, inside))
    return out
