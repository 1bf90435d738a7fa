"""Online store conformance suite: the online layout must behave the same on every backend.

Provide an ``online_store`` fixture (a :class:`kiln.features.online.OnlineStore` over an
empty key-value namespace of the backend under test), then::

    from kiln.testing.online_store import *  # noqa: F403

The suite reaches the key-value store only through ``OnlineStore.kv`` (to count calls), so
it proves any :class:`kiln.store.KVStore` under the online layout.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from kiln.core import InvalidInput
from kiln.features.definitions import Aggregation, Entity, PushSource, WindowedFeatureView
from kiln.features.online import OnlineRequest, OnlineStore
from kiln.features.windows import read_windows, update_windows

TS = pa.timestamp("us", tz="UTC")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _table(
    keys: Mapping[str, Sequence[Any]],
    event: Sequence[datetime],
    created: Sequence[datetime | None] | None = None,
    **features: Any,
) -> pa.Table:
    n = len(event)
    columns: dict[str, Any] = dict(keys)
    columns["event_ts"] = pa.array(event, TS)
    columns["created_ts"] = pa.array(created if created is not None else [None] * n, TS)
    columns.update(features)
    return pa.table(columns)


def _request(
    view: str = "v",
    version: str = "1",
    join_keys: tuple[str, ...] = ("user_id",),
    features: tuple[str, ...] = ("x",),
    ttl: timedelta | None = None,
    prefix: str = "",
) -> OnlineRequest:
    return OnlineRequest(
        view=view,
        version=version,
        join_keys=join_keys,
        features=features,
        wanted=tuple((f, f"{prefix}{f}") for f in features),
        ttl=ttl,
    )


def _write_x(
    store: OnlineStore,
    keys: Sequence[Any],
    xs: Sequence[Any],
    event: datetime | Sequence[datetime] = T0,
    created: datetime | Sequence[datetime | None] | None = None,
    *,
    view: str = "v",
    version: str = "1",
) -> int:
    n = len(keys)
    events = [event] * n if isinstance(event, datetime) else list(event)
    createds = [created] * n if created is None or isinstance(created, datetime) else created
    table = _table({"user_id": keys}, events, createds, x=xs)
    return store.write(view, version, table, join_keys=["user_id"], features=["x"])


def _x(store: OnlineStore, keys: Sequence[Any], **kw: Any) -> list[Any]:
    req = _request(**kw)
    return store.read([req], [{"user_id": k} for k in keys], now=T0)["x"]


# -- round trips --------------------------------------------------------------------------


def test_every_dtype_round_trips(online_store: OnlineStore) -> None:
    when = datetime(2023, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    features = {
        "f64": pa.array([1.25, None, math.nan, math.inf, -math.inf, -0.0], pa.float64()),
        "f32": pa.array([0.5, None, math.nan, -2.0, 1e30, 3.0], pa.float32()),
        "i64": pa.array([2**62, None, -1, 0, -(2**63), 7], pa.int64()),
        "i32": pa.array([2**31 - 1, None, -(2**31), 0, 1, 2], pa.int32()),
        "flag": pa.array([True, None, False, True, False, True], pa.bool_()),
        "text": pa.array(["héllo 🦊", None, "", 'a\x1fb@c"d\\e,\x00', "null", "NaN"], pa.string()),
        "when": pa.array([when, None, T0, when, T0, when], TS),
    }
    names = tuple(features)
    table = _table({"user_id": list(range(6))}, [T0] * 6, **features)
    assert online_store.write("v", "1", table, join_keys=["user_id"], features=names) == 6
    req = _request(features=names)
    got = online_store.read([req], {"user_id": list(range(6))}, now=T0)
    assert got["user_id"] == list(range(6))
    f64 = got["f64"]
    assert f64[0] == 1.25 and f64[1] is None and math.isnan(f64[2])
    assert f64[3] == math.inf and f64[4] == -math.inf
    assert f64[5] == 0.0 and math.copysign(1, f64[5]) == -1
    f32 = got["f32"]
    assert f32[0] == 0.5 and f32[1] is None and math.isnan(f32[2]) and f32[3] == -2.0
    assert f32[4] == pytest.approx(1e30, rel=1e-7) and isinstance(f32[4], float)
    assert got["i64"] == [2**62, None, -1, 0, -(2**63), 7]
    assert got["i32"] == [2**31 - 1, None, -(2**31), 0, 1, 2]
    assert all(type(v) is int for v in got["i64"] if v is not None)
    assert got["flag"] == [True, None, False, True, False, True]
    assert all(type(v) is bool for v in got["flag"] if v is not None)
    assert got["text"] == ["héllo 🦊", None, "", 'a\x1fb@c"d\\e,\x00', "null", "NaN"]
    assert got["when"] == [when, None, T0, when, T0, when]
    assert got["when"][0].tzinfo is not None and got["when"][0].utcoffset() == timedelta(0)


def test_string_keys_are_exact_and_typed(online_store: OnlineStore) -> None:
    keys = ["7", "a\x1fb", "é 🦊", '"quoted"', "x@1", "", "[7]", "a\\u0000b", "a\x00b"]
    _write_x(online_store, keys, [float(i) for i in range(len(keys))])
    _write_x(online_store, [7], [100.0], version="2")
    assert _x(online_store, keys) == [float(i) for i in range(len(keys))]
    # The int 7 and the text "7" are different entities; so are "[7]" and 7.
    assert _x(online_store, [7, "7", "[7]"]) == [None, 0.0, 6.0]
    assert _x(online_store, [7, "7"], version="2") == [100.0, None]
    _write_x(online_store, [7], [70.0])
    assert _x(online_store, [7, "7", np.int64(7), True]) == [70.0, 0.0, 70.0, None]


def test_multi_key_entities(online_store: OnlineStore) -> None:
    table = _table(
        {"user_id": [1, 1, 2, 2], "shop": ["a", "b", "a", "1"]}, [T0] * 4, x=[1.0, 2.0, 3.0, 4.0]
    )
    assert online_store.write("v", "1", table, join_keys=["user_id", "shop"], features=["x"]) == 4
    req = _request(join_keys=("user_id", "shop"))
    rows: list[dict[str, Any]] = [
        {"user_id": 1, "shop": "b"},
        {"user_id": 2, "shop": "a"},
        {"user_id": 2, "shop": 1},
        {"user_id": 2, "shop": "1"},
        {"user_id": 3, "shop": "a"},
    ]
    got = online_store.read([req], rows, now=T0)
    assert got == {
        "user_id": [1, 2, 2, 2, 3],
        "shop": ["b", "a", 1, "1", "a"],
        "x": [2.0, 3.0, None, 4.0, None],
    }


def test_missing_entities_are_none(online_store: OnlineStore) -> None:
    _write_x(online_store, [1], [1.0])
    got = online_store.read([_request()], [{"user_id": 2}, {"user_id": 1}, {"user_id": None}])
    assert got == {"user_id": [2, 1, None], "x": [None, 1.0, None]}
    assert online_store.read([_request(view="never")], [{"user_id": 1}]) == {
        "user_id": [1],
        "x": [None],
    }


def test_rows_and_columns_give_the_same_answer(online_store: OnlineStore) -> None:
    _write_x(online_store, [1, 2, 3], [1.0, 2.0, 3.0])
    req = _request()
    by_rows = online_store.read([req], [{"user_id": k, "amount": 9} for k in (3, 1, 4)], now=T0)
    by_cols = online_store.read([req], {"user_id": list(np.array([3, 1, 4]))}, now=T0)
    assert by_rows == {"user_id": [3, 1, 4], "x": [3.0, 1.0, None]}
    assert by_cols["x"] == [3.0, 1.0, None]
    assert online_store.read([req], [], now=T0) == {"user_id": [], "x": []}
    assert online_store.read([req], {"user_id": []}, now=T0) == {"user_id": [], "x": []}


def test_many_views_and_renamed_outputs(online_store: OnlineStore) -> None:
    for view in ("a", "b"):
        table = _table({"user_id": [1, 2]}, [T0] * 2, p=[f"{view}1", f"{view}2"], q=[1, 2])
        online_store.write(view, "1", table, join_keys=["user_id"], features=["p", "q"])
    a = _request("a", features=("p", "q"), prefix="a__")
    b = OnlineRequest("b", "1", ("user_id",), ("p", "q"), (("q", "b_q"),), None)
    got = online_store.read([a, b], [{"user_id": 2}, {"user_id": 1}], now=T0)
    assert list(got) == ["user_id", "a__p", "a__q", "b_q"]
    assert got == {"user_id": [2, 1], "a__p": ["a2", "a1"], "a__q": [2, 1], "b_q": [2, 1]}


# -- newest wins --------------------------------------------------------------------------


def test_older_row_written_later_is_ignored(online_store: OnlineStore) -> None:
    assert _write_x(online_store, [1], [2.0], event=T0) == 1
    assert _write_x(online_store, [1], [1.0], event=T0 - timedelta(hours=1)) == 0
    assert _x(online_store, [1]) == [2.0]
    assert _write_x(online_store, [1], [3.0], event=T0 + timedelta(microseconds=1)) == 1
    assert _x(online_store, [1]) == [3.0]


def test_same_event_time_newer_created_wins(online_store: OnlineStore) -> None:
    c1, c2 = T0 + timedelta(days=1), T0 + timedelta(days=2)
    assert _write_x(online_store, [1], [1.0], created=c1) == 1
    assert _write_x(online_store, [1], [0.0], created=None) == 0  # no created ranks lowest
    assert _write_x(online_store, [1], [2.0], created=c2) == 1
    assert _write_x(online_store, [1], [1.5], created=c1) == 0
    assert _x(online_store, [1]) == [2.0]


def test_rewrite_is_idempotent(online_store: OnlineStore) -> None:
    assert _write_x(online_store, [1, 2, 3], [1.0, math.nan, None]) == 3
    assert _write_x(online_store, [1, 2, 3], [1.0, math.nan, None]) == 0
    assert _write_x(online_store, [1, 4], [1.0, 4.0]) == 1


def test_newest_row_of_a_batch_wins_in_any_order(online_store: OnlineStore) -> None:
    events = [T0, T0 + timedelta(hours=2), T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    created = [None, T0, None, T0 + timedelta(seconds=1)]
    xs = [1.0, 2.0, 3.0, 4.0]
    for version, order in (("1", [0, 1, 2, 3]), ("2", [3, 2, 1, 0]), ("3", [2, 0, 3, 1])):
        n = _write_x(
            online_store,
            [1] * 4,
            [xs[i] for i in order],
            [events[i] for i in order],
            [created[i] for i in order],
            version=version,
        )
        assert n == 1
        assert _x(online_store, [1], version=version) == [4.0]


def test_exact_ties_settle_the_same_whatever_the_order(online_store: OnlineStore) -> None:
    batches: list[list[float | None]] = [[1.0], [2.0], [math.nan], [None]]
    finals = []
    for version, order in (("1", [0, 1, 2, 3]), ("2", [3, 2, 1, 0]), ("3", [1, 3, 0, 2])):
        for i in order:
            _write_x(online_store, [1], batches[i], version=version)
        finals.append(repr(_x(online_store, [1], version=version)))
    one_batch = _write_x(online_store, [1] * 4, [1.0, 2.0, math.nan, None], version="4")
    assert one_batch == 1
    finals.append(repr(_x(online_store, [1], version="4")))
    assert len(set(finals)) == 1, finals


def test_large_batches_are_chunked(online_store: OnlineStore) -> None:
    n = 12_345
    keys = list(range(n))
    assert _write_x(online_store, keys, [float(k) for k in keys]) == n
    assert _write_x(online_store, keys, [float(k) for k in keys]) == 0
    newer = [float(-k) if k % 2 else float(k) for k in keys]
    assert _write_x(online_store, keys, newer, event=T0 + timedelta(seconds=1)) == n
    got = _x(online_store, keys[::1000])
    assert got == [float(-k) if k % 2 else float(k) for k in keys[::1000]]


# -- ttl ----------------------------------------------------------------------------------


def test_ttl_boundary_is_inclusive(online_store: OnlineStore) -> None:
    _write_x(online_store, [1], [1.0], event=T0)
    ttl = timedelta(hours=2)
    req = _request(ttl=ttl)
    rows = [{"user_id": 1}]
    assert online_store.read([req], rows, now=T0 + ttl)["x"] == [1.0]
    late = T0 + ttl + timedelta(microseconds=1)
    assert online_store.read([req], rows, now=late)["x"] == [None]
    assert online_store.read([_request()], rows, now=late)["x"] == [1.0]  # no ttl: no expiry
    naive = (T0 + ttl).replace(tzinfo=None)  # naive means UTC
    assert online_store.read([req], rows, now=naive)["x"] == [1.0]


def test_ttl_defaults_to_the_current_time(online_store: OnlineStore) -> None:
    recent = datetime.now(UTC) - timedelta(minutes=1)
    _write_x(online_store, [1], [1.0], event=recent)
    _write_x(online_store, [2], [2.0], event=recent - timedelta(days=3))
    rows = [{"user_id": 1}, {"user_id": 2}]
    assert online_store.read([_request(ttl=timedelta(days=1))], rows)["x"] == [1.0, None]


def test_ttl_is_per_request(online_store: OnlineStore) -> None:
    _write_x(online_store, [1], [1.0], event=T0 - timedelta(hours=3), view="a")
    _write_x(online_store, [1], [2.0], event=T0 - timedelta(hours=3), view="b")
    a = _request("a", ttl=timedelta(hours=1), prefix="a_")
    b = _request("b", ttl=timedelta(hours=4), prefix="b_")
    got = online_store.read([a, b], [{"user_id": 1}], now=T0)
    assert got == {"user_id": [1], "a_x": [None], "b_x": [2.0]}


# -- isolation, batching, deletion ----------------------------------------------------------


def test_views_and_versions_are_isolated(online_store: OnlineStore) -> None:
    _write_x(online_store, [1], [1.0], view="a", version="1")
    _write_x(online_store, [1], [2.0], view="a", version="2")
    _write_x(online_store, [1], [3.0], view="b", version="1")
    _write_x(online_store, [1], [4.0], view="a_b", version="1")
    assert _x(online_store, [1], view="a", version="1") == [1.0]
    assert _x(online_store, [1], view="a", version="2") == [2.0]
    assert _x(online_store, [1], view="b", version="1") == [3.0]
    assert _x(online_store, [1], view="a_b", version="1") == [4.0]
    assert _x(online_store, [1], view="b", version="2") == [None]


class _CountingKV:
    """Passes every call through to the real store and records the batch sizes."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.namespace = kv.namespace
        self.gets: list[int] = []
        self.puts: list[int] = []
        self.updates: list[int] = []

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.gets.append(len(keys))
        result: list[bytes | None] = self.kv.get_many(keys)
        return result

    def put_many(self, items: Mapping[str, bytes]) -> None:
        self.puts.append(len(items))
        self.kv.put_many(items)

    def delete_many(self, keys: Sequence[str]) -> int:
        deleted: int = self.kv.delete_many(keys)
        return deleted

    def scan(self, prefix: str = "") -> Iterator[str]:
        yield from self.kv.scan(prefix)

    def update_many(
        self, keys: Sequence[str], update: Callable[[list[bytes | None]], Mapping[str, bytes]]
    ) -> Mapping[str, bytes]:
        self.updates.append(len(keys))
        written: Mapping[str, bytes] = self.kv.update_many(keys, update)
        return written


def test_one_get_many_per_read(online_store: OnlineStore) -> None:
    counting = _CountingKV(online_store.kv)
    store = OnlineStore(counting)
    for view in ("a", "b", "c"):
        _write_x(store, list(range(50)), [float(i) for i in range(50)], view=view)
    assert counting.updates == [50, 50, 50] and counting.gets == counting.puts == []
    requests = [_request(v, prefix=f"{v}_") for v in ("a", "b", "c")]
    got = store.read(requests, {"user_id": list(range(100))}, now=T0)
    assert counting.gets == [300]
    assert got["c_x"][:50] == [float(i) for i in range(50)] and got["c_x"][50:] == [None] * 50
    store.read(requests, [{"user_id": 3}], now=T0)
    assert counting.gets == [300, 3]


def test_write_batches_one_atomic_update_per_chunk(online_store: OnlineStore) -> None:
    counting = _CountingKV(online_store.kv)
    store = OnlineStore(counting)
    _write_x(store, list(range(11_000)), [1.0] * 11_000)
    assert counting.updates == [5000, 5000, 1000] and counting.gets == counting.puts == []


def test_delete_view(online_store: OnlineStore) -> None:
    _write_x(online_store, [1, 2], [1.0, 2.0], view="a", version="1")
    _write_x(online_store, [1], [1.0], view="a", version="2")
    _write_x(online_store, [1], [1.0], view="ab", version="1")
    assert online_store.delete_view("a") == 3
    assert _x(online_store, [1, 2], view="a") == [None, None]
    assert _x(online_store, [1], view="ab") == [1.0]
    assert online_store.delete_view("a") == 0
    assert list(online_store.kv.scan()) != []


def test_null_join_keys_are_not_stored(online_store: OnlineStore) -> None:
    assert _write_x(online_store, [1, None], [1.0, 2.0]) == 1
    assert _x(online_store, [1, None]) == [1.0, None]


def test_empty_table_writes_nothing(online_store: OnlineStore) -> None:
    assert _write_x(online_store, [], []) == 0


# -- bad input ----------------------------------------------------------------------------


def test_unknown_table_column_is_named(online_store: OnlineStore) -> None:
    table = _table({"user_id": [1]}, [T0], x=[1.0], surprise=[2])
    with pytest.raises(InvalidInput, match="'surprise'"):
        online_store.write("v", "1", table, join_keys=["user_id"], features=["x"])


def test_missing_table_column_is_named(online_store: OnlineStore) -> None:
    table = _table({"user_id": [1]}, [T0], x=[1.0])
    with pytest.raises(InvalidInput, match="'y'"):
        online_store.write("v", "1", table, join_keys=["user_id"], features=["x", "y"])
    with pytest.raises(InvalidInput, match="'event_ts'"):
        online_store.write(
            "v", "1", table.drop(["event_ts"]), join_keys=["user_id"], features=["x"]
        )


def test_bad_write_values_are_rejected(online_store: OnlineStore) -> None:
    nested = _table({"user_id": [1]}, [T0], x=pa.array([[1, 2]]))
    with pytest.raises(InvalidInput, match="'x'"):
        online_store.write("v", "1", nested, join_keys=["user_id"], features=["x"])
    float_key = _table({"user_id": [1.0]}, [T0], x=[1.0])
    with pytest.raises(InvalidInput, match="'user_id'"):
        online_store.write("v", "1", float_key, join_keys=["user_id"], features=["x"])
    no_time = pa.table({"user_id": [1], "event_ts": pa.array([None], TS), "x": [1.0]})
    with pytest.raises(InvalidInput, match="event_ts is null"):
        online_store.write("v", "1", no_time, join_keys=["user_id"], features=["x"])
    with pytest.raises(InvalidInput, match="view"):
        online_store.write("bad view", "1", no_time, join_keys=["user_id"], features=["x"])
    assert list(online_store.kv.scan()) == []


def test_entity_row_missing_a_join_key_is_named(online_store: OnlineStore) -> None:
    req = _request(join_keys=("user_id", "shop"))
    with pytest.raises(InvalidInput, match=r"row 1 .*'shop'"):
        online_store.read([req], [{"user_id": 1, "shop": "a"}, {"user_id": 2}])
    with pytest.raises(InvalidInput, match="'shop'"):
        online_store.read([req], {"user_id": [1]})
    with pytest.raises(InvalidInput, match="differ in length"):
        online_store.read([req], {"user_id": [1, 2], "shop": ["a"]})


def test_bad_requests_are_rejected(online_store: OnlineStore) -> None:
    with pytest.raises(InvalidInput, match="'nope'"):
        OnlineRequest("v", "1", ("user_id",), ("x",), (("nope", "nope"),), None)
    a, b = _request("a"), _request("b")
    with pytest.raises(InvalidInput, match="'x'"):
        online_store.read([a, b], [{"user_id": 1}])
    clash = OnlineRequest("v", "1", ("user_id",), ("x",), (("x", "user_id"),), None)
    with pytest.raises(InvalidInput, match="'user_id'"):
        online_store.read([clash], [{"user_id": 1}])
    with pytest.raises(InvalidInput, match="join key"):
        online_store.read([a], [{"user_id": object()}])


# -- concurrent writers ----------------------------------------------------------------------
#
# ``write_share`` and ``push_share`` are one writer's part of a concurrent run; the tests
# below run them on threads, and a backend's own tests can run them in separate processes.

SHARE_ENTITIES = 40
SHARE_ROUNDS = 8


def write_share(store: OnlineStore, writer: int, writers: int) -> None:
    """Writer ``writer`` of ``writers`` writes every entity ``SHARE_ROUNDS`` times, with
    event times in a random order; ``x`` is the event time's offset in seconds."""
    rng = random.Random(writer)
    for _ in range(SHARE_ROUNDS):
        # Offsets are unique per writer (offset % writers == writer): no two rows tie.
        offsets = [rng.randrange(1000) * writers + writer for _ in range(SHARE_ENTITIES)]
        table = _table(
            {"user_id": list(range(SHARE_ENTITIES))},
            [T0 + timedelta(seconds=o) for o in offsets],
            x=[float(o) for o in offsets],
        )
        store.write("v", "1", table, join_keys=["user_id"], features=["x"])


def stored_shares(store: OnlineStore) -> list[Any]:
    """The ``x`` stored for each entity that ``write_share`` writes."""
    return _x(store, list(range(SHARE_ENTITIES)))


def newest_of_shares(writers: int) -> list[float]:
    """What ``write_share`` by ``writers`` writers must leave: each entity's greatest x."""
    best = [-1.0] * SHARE_ENTITIES
    for writer in range(writers):
        rng = random.Random(writer)
        for _ in range(SHARE_ROUNDS):
            for entity in range(SHARE_ENTITIES):
                offset = rng.randrange(1000) * writers + writer
                best[entity] = max(best[entity], float(offset))
    return best


EVENTS_VIEW = WindowedFeatureView(
    "events",
    entities=[Entity("user", join_keys=["user_id"])],
    source=PushSource(),
    aggregations=[
        Aggregation(None, "count", "7d", name="n"),
        Aggregation("amount", "sum", "7d", name="total"),
    ],
)


def push_share(store: OnlineStore, writer: int, writers: int) -> None:
    """Writer ``writer`` pushes ``SHARE_ROUNDS`` events to each of 5 entities, one push
    per round; the event amounts are distinct powers of two, so a sum shows which landed."""
    del writers  # every writer's events are distinct by construction
    for round_ in range(SHARE_ROUNDS):
        n = 5
        events = [T0 - timedelta(minutes=round_, seconds=writer)] * n
        table = pa.table(
            {
                "user_id": list(range(n)),
                "event_ts": pa.array(events, TS),
                "created_ts": pa.array(events, TS),
                "amount": [float(2 ** (writer * SHARE_ROUNDS + round_))] * n,
            }
        )
        update_windows(store, EVENTS_VIEW, "1", table)


def pushed_totals(store: OnlineStore) -> dict[str, list[Any]]:
    """The count and sum of events per entity, read at ``T0``."""
    rows = [{"user_id": i} for i in range(5)]
    return read_windows(store, EVENTS_VIEW, "1", [("n", "n"), ("total", "total")], rows, now=T0)


def expected_totals(writers: int) -> dict[str, list[Any]]:
    total = float(sum(2**i for i in range(writers * SHARE_ROUNDS)))
    return {"n": [writers * SHARE_ROUNDS] * 5, "total": [total] * 5}


def _on_threads(work: Callable[[OnlineStore, int, int], None], store: OnlineStore) -> None:
    writers = 4
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            start.wait()
            work(store, writer, writers)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_writers_keep_the_newest_row(online_store: OnlineStore) -> None:
    _on_threads(write_share, online_store)
    assert stored_shares(online_store) == newest_of_shares(4)


def test_concurrent_window_pushes_lose_no_event(online_store: OnlineStore) -> None:
    _on_threads(push_share, online_store)
    assert pushed_totals(online_store) == expected_totals(4)


__all__ = [name for name in dir() if name.startswith("test_")]
