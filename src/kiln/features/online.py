"""The online store: the latest value of every feature per entity, for low-latency reads.

It is a layout over :class:`kiln.store.KVStore`, so every key-value backend (SQLite in
process, Redis across processes) serves it unchanged. One key per (view, version, entity)::

    f"{view}@{version}\\x1f{entity key}"

The entity key is the JSON text of the join-key values (a scalar for one key, an array for
several), so ``7`` and ``"7"`` are different entities and no value can forge a separator.
The value is a JSON array ``[event_us, created_us, specials, feature...]`` in the view's
stored feature order. JSON has no NaN, infinities or timestamps, so those values are
stored as ``null`` or integer microseconds and ``specials`` lists ``[position, kind]``
pairs to restore them; it is ``0`` for the common row that has none, which keeps the read
path to one check.

Writes keep, per entity, the row with the greatest ``(event_ts, created_ts)``: a write only
replaces an older stored row, so replaying a batch or applying batches in another order
ends in the same state. The compare runs inside :meth:`kiln.store.KVStore.update_many`,
against the values stored at that moment, so writers in several processes may write the
same view at once.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput
from kiln.store import KVStore, open_kv_store

__all__ = ["OnlineRequest", "OnlineStore"]

CHUNK = 5000
_SEP = "\x1f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_KEY_OPT = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATETIME
_VIEW_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_TIME_COLUMNS = ("event_ts", "created_ts")
# A null created_ts ranks below every real one, as it does in the offline join.
_NO_CREATED = -(2**63)
# Position of the first feature in a stored record: [event_us, created_us, specials, ...].
_FIRST = 3

_NAN, _POS_INF, _NEG_INF, _TIMESTAMP = 0, 1, 2, 3


def _restore_nan(_: Any) -> float:
    return math.nan


def _restore_pos_inf(_: Any) -> float:
    return math.inf


def _restore_neg_inf(_: Any) -> float:
    return -math.inf


def _restore_timestamp(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_RESTORE = (_restore_nan, _restore_pos_inf, _restore_neg_inf, _restore_timestamp)


def _restore(record: list[Any]) -> list[Any]:
    for pos, kind in record[2]:
        record[pos] = _RESTORE[kind](record[pos])
    return record


def _micros(value: datetime) -> int:
    """Naive datetimes mean UTC, as everywhere else in Kiln."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICRO


def _key_default(value: Any) -> Any:
    """Times and bytes get tagged objects so they never equal a string key."""
    if isinstance(value, datetime):
        return {"t": _micros(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": bytes(value).hex()}
    raise TypeError(type(value).__name__)


def _prefix(view: str, version: Any, owner: str) -> str:
    if not isinstance(view, str) or not _VIEW_RE.match(view):
        raise InvalidInput(f"{owner}: view must be an identifier. Got {view!r}.")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version or _SEP in version:
        raise InvalidInput(
            f"{owner}: version of view {view!r} must be non-empty text without '\\x1f'. "
            f"Got {version!r}."
        )
    return f"{view}@{version}{_SEP}"


def _names(owner: str, param: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{owner}: {param} must be a list of column names. Got {value!r}.")
    names = tuple(value)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"{owner}: {param} names {dupes[0]!r} twice")
    return names


@dataclass(frozen=True)
class OnlineRequest:
    """The features wanted from one view version; built once per feature service and reused.

    ``features`` is every feature of the view in stored order (it locates values inside a
    stored record); ``wanted`` picks ``(feature, output_name)`` pairs from it. Values older
    than ``ttl`` at read time come back as ``None``. Construction does the validation and
    precomputes the lookup positions so that reads do no per-request planning.
    """

    view: str
    version: str
    join_keys: tuple[str, ...]
    features: tuple[str, ...]
    wanted: tuple[tuple[str, str], ...]
    ttl: timedelta | None = None
    _prefix: str = field(init=False, repr=False, compare=False)
    _positions: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _ttl_us: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = f"OnlineRequest for {self.view!r}"
        prefix = _prefix(self.view, self.version, owner)
        set_ = object.__setattr__
        set_(self, "version", prefix[len(self.view) + 1 : -1])
        join_keys = _names(owner, "join_keys", self.join_keys)
        if not join_keys:
            raise InvalidInput(f"{owner}: join_keys must name at least one column")
        features = _names(owner, "features", self.features)
        position = {name: _FIRST + i for i, name in enumerate(features)}
        wanted: list[tuple[str, str]] = []
        for pair in self.wanted:
            if isinstance(pair, str) or len(pair) != 2:
                raise InvalidInput(
                    f"{owner}: wanted takes (feature, output_name) pairs. Got {pair!r}."
                )
            feature, output = pair
            if feature not in position:
                raise InvalidInput(
                    f"{owner}: wanted feature {feature!r} is not one of the view's features "
                    f"{list(features)}"
                )
            if not isinstance(output, str) or not output:
                raise InvalidInput(f"{owner}: output name for {feature!r} must be text")
            wanted.append((feature, output))
        if self.ttl is not None and (
            not isinstance(self.ttl, timedelta) or self.ttl <= timedelta(0)
        ):
            raise InvalidInput(f"{owner}: ttl must be a positive timedelta or None")
        set_(self, "join_keys", join_keys)
        set_(self, "features", features)
        set_(self, "wanted", tuple(wanted))
        set_(self, "_prefix", prefix)
        set_(self, "_positions", tuple(position[f] for f, _ in wanted))
        set_(self, "_ttl_us", None if self.ttl is None else self.ttl // _MICRO)


# (key prefix, entity group, ttl µs, picker, all-None row, output names)
_ViewPlan = tuple[
    str, int, int | None, Callable[[list[Any]], tuple[Any, ...]], tuple[None, ...], tuple[str, ...]
]


class _ReadPlan(NamedTuple):
    join_keys: tuple[str, ...]
    entities: tuple[tuple[str, ...], ...]
    views: tuple[_ViewPlan, ...]
    requests: tuple[OnlineRequest, ...]


def _picker(positions: tuple[int, ...]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """``itemgetter`` that always returns a tuple, whatever the number of positions."""
    if len(positions) > 1:
        return itemgetter(*positions)
    if len(positions) == 1:
        pos = positions[0]
        return lambda record: (record[pos],)
    return lambda record: ()


class OnlineStore:
    """Latest feature values per entity over any :class:`kiln.store.KVStore`."""

    def __init__(self, kv: KVStore) -> None:
        self.kv = kv
        self._plans: dict[tuple[int, ...], _ReadPlan] = {}

    @classmethod
    def open(cls, url: str, namespace: str = "kiln") -> OnlineStore:
        """``sqlite:///PATH`` or ``redis://HOST:PORT/DB``."""
        return cls(open_kv_store(url, namespace))

    # -- write ------------------------------------------------------------------------------

    def write(
        self,
        view: str,
        version: str,
        table: pa.Table,
        *,
        join_keys: Sequence[str],
        features: Sequence[str],
    ) -> int:
        """Store each entity's newest row unless a newer one is already stored.

        Returns how many entities changed, so a replayed batch reports 0. An exact tie on
        both times is settled by the encoded value, so every order of the same writes ends
        in the same state. Rows with a null join key are skipped: SQL equality never
        matches a null, so the offline join would never serve them either. Each chunk of
        entities is compared and stored in one atomic ``update_many``, so concurrent
        writers of the same view (materialization beside pushes, several pushing
        processes) never lose a newer row.
        """
        owner = f"OnlineStore.write({view!r})"
        prefix = _prefix(view, version, owner)
        keys_ = _names(owner, "join_keys", join_keys)
        feats = _names(owner, "features", features)
        if not keys_:
            raise InvalidInput(f"{owner}: join_keys must name at least one column")
        if not isinstance(table, pa.Table):
            raise InvalidInput(f"{owner}: table must be a pyarrow.Table. Got {type(table)}.")
        _check_columns(owner, table, keys_, feats)
        table = _drop_null_keys(table, keys_)
        n = table.num_rows
        if n == 0:
            return 0
        keys = _entity_keys(owner, table, keys_, prefix)
        event_rank, event = _time_micros(owner, table, "event_ts")
        created_rank, created = _time_micros(owner, table, "created_ts")
        values = _encode_records(owner, table, feats, event, created)
        winners = _latest(keys, event_rank, created_rank, values)
        ranks = created_rank.tolist()
        changed = 0
        for start in range(0, len(winners), CHUNK):
            chunk = winners[start : start + CHUNK]

            def newer(stored: list[bytes | None], chunk: list[int] = chunk) -> dict[str, bytes]:
                """The chunk's rows that beat what is stored; pure, as update_many needs."""
                batch: dict[str, bytes] = {}
                for i, old in zip(chunk, stored, strict=True):
                    if old is not None:
                        head = orjson.loads(old)
                        old_rank = (head[0], _NO_CREATED if head[1] is None else head[1], old)
                        if (event[i], ranks[i], values[i]) <= old_rank:
                            continue
                    batch[keys[i]] = values[i]
                return batch

            changed += len(self.kv.update_many([keys[i] for i in chunk], newer))
        return changed

    # -- read -------------------------------------------------------------------------------

    def read(
        self,
        requests: Sequence[OnlineRequest],
        entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
        *,
        now: datetime | None = None,
    ) -> dict[str, list[Any]]:
        """Columns: the join keys as given, then each wanted output, one value per row.

        A missing entity or a value older than its request's ttl at ``now`` is ``None``,
        as in the offline join. Every key of every request goes to the store in one
        ``get_many`` so a read costs one round trip whatever the number of views. Columns
        of ``entity_rows`` that are no request's join key (request data) are ignored.
        """
        plan = self._plans.get(tuple(map(id, requests)))
        if plan is None:
            plan = self._plan(requests)
        columns, n = _entity_columns(entity_rows, plan.join_keys)

        encoded: list[list[str]] = []
        dumps = orjson.dumps
        for names in plan.entities:
            try:
                if len(names) == 1:
                    encoded.append(
                        [dumps(v, _key_default, _KEY_OPT).decode() for v in columns[names[0]]]
                    )
                else:
                    rows = zip(*[columns[k] for k in names], strict=True)
                    encoded.append([dumps(t, _key_default, _KEY_OPT).decode() for t in rows])
            except TypeError as exc:
                raise InvalidInput(
                    f"read: a value of join key(s) {list(names)} has type {exc}; join keys are "
                    "int, str, bool, bytes or datetime"
                ) from None
        keys: list[str] = []
        for prefix, entity, _, _, _, _ in plan.views:
            keys += [prefix + e for e in encoded[entity]]
        raw = self.kv.get_many(keys) if keys else []

        now_us = time.time_ns() // 1000 if now is None else _micros(now)
        result: dict[str, list[Any]] = {k: list(columns[k]) for k in plan.join_keys}
        # One parse of all values costs less than a call per value.
        if None in raw:
            raw = [b"null" if b is None else b for b in raw]
        records = orjson.loads(b"[" + b",".join(cast(list[bytes], raw)) + b"]")
        offset = 0
        for _, _, ttl_us, pick, missing, outputs in plan.views:
            cutoff = _NO_CREATED if ttl_us is None else now_us - ttl_us
            if n == 1:
                record = records[offset]
                offset += 1
                if record is None or record[0] < cutoff:
                    values = missing
                else:
                    values = pick(_restore(record) if record[2] else record)
                for name, value in zip(outputs, values, strict=True):
                    result[name] = [value]
                continue
            picked = [
                missing
                if record is None or record[0] < cutoff
                else pick(_restore(record) if record[2] else record)
                for record in records[offset : offset + n]
            ]
            offset += n
            if picked:
                for name, col in zip(outputs, zip(*picked, strict=True), strict=True):
                    result[name] = list(col)
            else:
                for name in outputs:
                    result[name] = []
        return result

    def _plan(self, requests: Sequence[OnlineRequest]) -> _ReadPlan:
        """Check a set of requests once; later reads with the same objects reuse it.

        The cache holds the request objects themselves, so their ids stay unique while
        the entry lives and the id tuple is a safe key.
        """
        join_keys: dict[str, None] = {}
        entities: dict[tuple[str, ...], int] = {}
        outputs: set[str] = set()
        views: list[_ViewPlan] = []
        for req in requests:
            if not isinstance(req, OnlineRequest):
                raise InvalidInput(f"read takes OnlineRequest objects. Got {req!r}.")
            join_keys.update(dict.fromkeys(req.join_keys))
            names = tuple(name for _, name in req.wanted)
            for name in names:
                if name in outputs:
                    raise InvalidInput(f"read: two requests both output a column {name!r}")
                outputs.add(name)
            entity = entities.setdefault(req.join_keys, len(entities))
            views.append(
                (
                    req._prefix,
                    entity,
                    req._ttl_us,
                    _picker(req._positions),
                    (None,) * len(names),
                    names,
                )
            )
        clash = outputs.intersection(join_keys)
        if clash:
            raise InvalidInput(f"read: output {sorted(clash)[0]!r} is also a join key")
        plan = _ReadPlan(tuple(join_keys), tuple(entities), tuple(views), tuple(requests))
        if len(self._plans) >= 1024:
            self._plans.clear()
        self._plans[tuple(map(id, requests))] = plan
        return plan

    # -- delete -----------------------------------------------------------------------------

    def delete_view(self, view: str) -> int:
        """Remove every version of ``view``; returns how many entities were removed."""
        _prefix(view, "0", f"OnlineStore.delete_view({view!r})")
        removed = 0
        for chunk in _chunks(self.kv.scan(f"{view}@"), CHUNK):
            removed += self.kv.delete_many(chunk)
        return removed


def _chunks(keys: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- read helpers -----------------------------------------------------------------------------


def _entity_columns(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]], needed: tuple[str, ...]
) -> tuple[dict[str, Sequence[Any]], int]:
    """Rows or columns, as given, become columns of the needed join keys."""
    if type(rows) is list:  # the common case, without the slower ABC checks
        try:
            return {key: [row[key] for row in rows] for key in needed}, len(rows)
        except (KeyError, TypeError):
            pass
    if isinstance(rows, Mapping):
        columns: dict[str, Sequence[Any]] = {}
        for key in needed:
            if key not in rows:
                raise InvalidInput(
                    f"read: entity columns have no join key {key!r} (got {sorted(rows)})"
                )
            col = rows[key]
            if isinstance(col, str | bytes) or not hasattr(col, "__len__"):
                raise InvalidInput(
                    f"read: entity column {key!r} must be a sequence of values, one per entity; "
                    "pass a list of row mappings for single rows"
                )
            columns[key] = col
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            raise InvalidInput(
                "read: entity columns differ in length: "
                + ", ".join(f"{k}={len(c)}" for k, c in columns.items())
            )
        return columns, lengths.pop() if lengths else 0
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise InvalidInput(
            f"read: entity_rows must be a list of mappings or a mapping of columns. Got {rows!r}."
        )
    try:
        return {key: [row[key] for row in rows] for key in needed}, len(rows)
    except (KeyError, TypeError):
        pass
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInput(f"read: entity row {i} must be a mapping. Got {row!r}.") from None
        for key in needed:
            if key not in row:
                raise InvalidInput(
                    f"read: entity row {i} has no join key {key!r} (got {sorted(row)})"
                ) from None
    raise InvalidInput("read: entity_rows must be mappings holding every join key")


# -- write helpers ----------------------------------------------------------------------------


def _check_columns(
    owner: str, table: pa.Table, join_keys: tuple[str, ...], features: tuple[str, ...]
) -> None:
    both = set(join_keys).intersection(features)
    if both:
        raise InvalidInput(f"{owner}: {sorted(both)[0]!r} is both a join key and a feature")
    reserved = set(_TIME_COLUMNS).intersection((*join_keys, *features))
    if reserved:
        raise InvalidInput(f"{owner}: {sorted(reserved)[0]!r} is reserved for row times")
    known = {*join_keys, *features, *_TIME_COLUMNS}
    for name in table.column_names:
        if name not in known:
            raise InvalidInput(
                f"{owner}: table has column {name!r}, which is neither a join key, a feature "
                f"({list(features)}) nor event_ts/created_ts"
            )
    for name in (*join_keys, "event_ts", *features):
        if name not in table.column_names:
            raise InvalidInput(f"{owner}: table has no column {name!r}")
    if len(set(table.column_names)) != len(table.column_names):
        raise InvalidInput(f"{owner}: table has a duplicated column name")


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _drop_null_keys(table: pa.Table, join_keys: tuple[str, ...]) -> pa.Table:
    if all(table.column(k).null_count == 0 for k in join_keys):
        return table
    mask = pc.is_valid(table.column(join_keys[0]))
    for key in join_keys[1:]:
        mask = pc.and_(mask, pc.is_valid(table.column(key)))
    return table.filter(mask)


def _entity_keys(owner: str, table: pa.Table, join_keys: tuple[str, ...], prefix: str) -> list[str]:
    columns = []
    for name in join_keys:
        col = _plain(table.column(name))
        kind = col.type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_timestamp(kind)
        ):
            raise InvalidInput(
                f"{owner}: join key {name!r} has type {kind}; join keys are integers, strings, "
                "booleans, binary or timestamps"
            )
        columns.append(col.to_pylist())
    dumps = orjson.dumps
    if len(columns) == 1:
        return [prefix + dumps(v, _key_default, _KEY_OPT).decode() for v in columns[0]]
    return [prefix + dumps(t, _key_default, _KEY_OPT).decode() for t in zip(*columns, strict=True)]


def _time_micros(owner: str, table: pa.Table, name: str) -> tuple[np.ndarray, list[Any]]:
    """Microseconds as a rank array (null ranks lowest) and as the values to store."""
    n = table.num_rows
    col = _plain(table.column(name)) if name in table.column_names else pa.nulls(n)
    if pa.types.is_null(col.type) and name == "created_ts":
        return np.full(n, _NO_CREATED, dtype=np.int64), [None] * n
    if not pa.types.is_timestamp(col.type):
        raise InvalidInput(f"{owner}: column {name!r} must be a timestamp; got {col.type}")
    if name == "event_ts" and col.null_count:
        raise InvalidInput(f"{owner}: event_ts is null in {col.null_count} row(s)")
    micros = col.cast(pa.timestamp("us", col.type.tz), safe=False).cast(pa.int64())
    rank = pc.fill_null(micros, _NO_CREATED).to_numpy()
    return rank, cast(list[Any], micros.to_pylist())


def _encode_records(
    owner: str,
    table: pa.Table,
    features: tuple[str, ...],
    event: list[Any],
    created: list[Any],
) -> list[bytes]:
    n = table.num_rows
    columns: list[list[Any]] = []
    specials: dict[int, list[list[int]]] = {}
    for offset, name in enumerate(features):
        pos = _FIRST + offset
        col = _plain(table.column(name))
        kind = col.type
        if pa.types.is_null(kind):
            columns.append([None] * n)
        elif (
            pa.types.is_integer(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
        ):
            columns.append(col.to_pylist())
        elif pa.types.is_floating(kind):
            if pa.types.is_float16(kind):
                col = col.cast(pa.float64())
            values = col.to_pylist()
            odd = pc.fill_null(pc.invert(pc.is_finite(col)), False)
            for i in np.flatnonzero(odd.to_numpy(zero_copy_only=False)).tolist():
                v = values[i]
                code = _NAN if v != v else (_POS_INF if v > 0 else _NEG_INF)
                specials.setdefault(i, []).append([pos, code])
                values[i] = None
            columns.append(values)
        elif pa.types.is_timestamp(kind):
            micros = col.cast(pa.timestamp("us", kind.tz), safe=False).cast(pa.int64())
            for i in np.flatnonzero(micros.is_valid().to_numpy(zero_copy_only=False)).tolist():
                specials.setdefault(i, []).append([pos, _TIMESTAMP])
            columns.append(micros.to_pylist())
        else:
            raise InvalidInput(
                f"{owner}: feature {name!r} has type {kind}; online features are numbers, "
                "booleans, strings or timestamps"
            )
    dumps = orjson.dumps
    zeros = [0] * n
    # orjson's output buffer pins a fresh memory page for as long as it lives (a page
    # fault per row, ten times the encoding); a copy frees the buffer for the next row.
    records = [
        dumps(row).decode().encode() for row in zip(event, created, zeros, *columns, strict=True)
    ]
    for i, found in specials.items():
        row = [event[i], created[i], found, *(c[i] for c in columns)]
        records[i] = dumps(row).decode().encode()
    return records


def _latest(
    keys: list[str], event: np.ndarray, created: np.ndarray, values: list[bytes]
) -> list[int]:
    """Index of the newest row per key, ranked by (event, created, encoded value)."""
    n = len(keys)
    best = dict(zip(keys, range(n), strict=True))
    if len(best) == n:
        return list(best.values())
    order = np.lexsort((created, event)).tolist()
    best = dict(zip([keys[i] for i in order], order, strict=True))  # the last is the newest
    winner = np.array([best[k] for k in keys], dtype=np.int64)
    tied = (event == event[winner]) & (created == created[winner]) & (winner != np.arange(n))
    for i in np.flatnonzero(tied).tolist():
        key = keys[i]
        if values[i] > values[best[key]]:
            best[key] = i
    return list(best.values())
