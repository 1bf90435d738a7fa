"""Window aggregations online: each entity's recent events, aggregated at read time.

The online value of an entity is the list of its events inside the view's widest window
(event time, created time, and the columns the aggregations read), kept sorted and
pruned as events are pushed. A read aggregates that list at the read instant with the
rules the offline SQL follows (see :mod:`kiln.features.offline`), so an online value
equals the offline point-in-time value at the same instant, whatever the window
boundaries, instead of drifting the way pre-bucketed counters do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from kiln.core import InvalidInput
from kiln.features.definitions import Aggregation, WindowedFeatureView
from kiln.features.online import OnlineStore, _entity_keys, _prefix

__all__ = ["read_windows", "update_windows"]

_NAN = "__nan__"


def _columns(view: WindowedFeatureView) -> list[str]:
    return list(dict.fromkeys(a.column for a in view.aggregations if a.column is not None))


def _micros(column: pa.ChunkedArray) -> list[int | None]:
    if pa.types.is_null(column.type):
        return [None] * len(column)
    values = column.cast(pa.timestamp("us", getattr(column.type, "tz", None)), safe=False)
    return list(values.cast(pa.int64()).to_pylist())


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return _NAN
    return value


def update_windows(
    online: OnlineStore,
    view: WindowedFeatureView,
    version: str,
    events: pa.Table,
    *,
    replace: bool = False,
) -> int:
    """Merge pushed events into each entity's event list; returns the entities updated.

    The merge runs inside one atomic :meth:`kiln.store.KVStore.update_many`, against the
    lists stored at that moment, so events pushed by several processes at once all land.
    With ``replace`` the given events become the entity's whole list (materialization
    from the source, which already holds every event of the window).

    ``events`` has the join keys, ``event_ts`` and ``created_ts`` (UTC timestamps) and the
    columns the aggregations read. Events older than the widest window before the
    entity's newest event are dropped: no read at or after that newest event needs them.
    """
    owner = f"windowed view {view.name!r}"
    if events.num_rows == 0:
        return 0
    prefix = _prefix(view.name, version, owner)
    keys = _entity_keys(owner, events, view.join_keys, prefix)
    event_us = _micros(events.column("event_ts"))
    created_us = _micros(events.column("created_ts"))
    columns = [events.column(c).to_pylist() for c in _columns(view)]
    fresh: dict[str, list[list[Any]]] = {}
    for i, key in enumerate(keys):
        if event_us[i] is None:
            raise InvalidInput(f"{owner}: an event has no event time")
        fresh.setdefault(key, []).append(
            [event_us[i], created_us[i], *(_plain(col[i]) for col in columns)]
        )
    widest = int(view.max_window.total_seconds() * 1_000_000)
    unique = list(fresh)

    def merge(stored: list[bytes | None]) -> dict[str, bytes]:
        """Stored lists plus the fresh events, pruned; pure, as update_many needs."""
        updates: dict[str, bytes] = {}
        for key, old in zip(unique, stored, strict=True):
            merged = (orjson.loads(old) if old is not None else []) + fresh[key]
            merged.sort(key=lambda e: (e[0], e[1] if e[1] is not None else -(2**63)))
            horizon = merged[-1][0] - widest
            updates[key] = orjson.dumps([e for e in merged if e[0] > horizon])
        return updates

    if replace:
        updates = merge([None] * len(unique))
        online.kv.put_many(updates)
        return len(updates)
    return len(online.kv.update_many(unique, merge))


def _aggregate(agg: Aggregation, index: int | None, events: list[list[Any]]) -> Any:
    if agg.function == "count":
        if index is None:
            return len(events)
        return sum(1 for e in events if e[index] is not None)
    if agg.function == "last":
        if not events:
            return None
        value = events[-1][index] if index is not None else None
        return math.nan if value == _NAN else value
    values = [e[index] for e in events if index is not None and e[index] is not None]
    values = [math.nan if v == _NAN else v for v in values]
    if not values:
        return None
    if agg.function == "sum":
        return sum(values)
    if agg.function == "mean":
        return sum(values) / len(values)
    if agg.function == "min":
        return min(values)
    return max(values)


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
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    now_us = int(moment.timestamp() * 1_000_000)
    for row in entity_rows:
        for k in view.join_keys:
            if k not in row:
                raise InvalidInput(f"{owner}: entity row {dict(row)!r} has no join key {k!r}")
    table = pa.table({k: [row[k] for row in entity_rows] for k in view.join_keys})
    keys = _entity_keys(owner, table, view.join_keys, _prefix(view.name, version, owner))
    stored = online.kv.get_many(keys)
    by_name = {a.name: a for a in view.aggregations}
    positions = {c: 2 + i for i, c in enumerate(_columns(view))}
    out: dict[str, list[Any]] = {name: [] for _, name in features}
    for raw in stored:
        events = orjson.loads(raw) if raw is not None else []
        visible = [e for e in events if e[0] <= now_us and (e[1] is None or e[1] <= now_us)]
        for feature, name in features:
            agg = by_name[feature]
            start = now_us - int(agg.window.total_seconds() * 1_000_000)
            inside = [e for e in visible if e[0] > start]
            index = positions.get(agg.column) if agg.column is not None else None
            out[name].append(_aggregate(agg, index, inside))
    return out
