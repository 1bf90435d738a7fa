"""Pushed event streams: online window values equal offline point-in-time values.

Random event streams are pushed in several parts, out of order, and then every window
feature of every entity (pushed or not) is read online and offline (a spine at the same
instant ``T``). The two must be equal, and both must equal a brute-force reference of the
rules written in :mod:`kiln.features.offline`.

An online read aggregates at the wall clock, so the clock of :mod:`kiln.features.windows`
is pinned to ``T`` (a time with microseconds) while reading, and events are placed
relative to ``T``: on each window's edge (``T - window`` is outside, one microsecond
later is inside), at ``T`` itself, after ``T``, on shared instants, and late (older than
events already pushed). Windows include one that is not a whole number of seconds
(``1001ms``). Created times fall before, at and after ``T``, or are left to the push.
The clock of :mod:`kiln.features.windows` is pinned while pushing too, at ``T`` or
shortly before, which puts the edge the online lists are pruned at (``min(newest event,
push time) - widest window``) on or next to the widest window's edge.

Values are chosen so that every sum is exact in any order (small multiples of 1/4 and
powers of two, NaN and infinities, whose sums do not depend on the order either), which
lets sums and means be compared exactly; the large seeded case uses arbitrary floats and
compares those two with a relative tolerance. ``min`` and ``max`` rank NaN above every
number, as DuckDB does. ``w`` holds timestamps, pushed naive or in a time zone. ``n`` is
pushed as int64 or as float64; the first push fixes the offline column's type and later
pushes are cast to it, so a fractional ``n`` after an int64 first push is refused.

Some pushes must be refused, and then change nothing: a NULL created time (reads never
use such a row), the fractional ``n`` above, and a first push whose ``x`` holds only
nulls with no type (as records with ``None`` give).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln.features.windows
from kiln.errors import InvalidInput
from kiln.features import (
    Aggregation,
    Entity,
    OnlineStore,
    PushSource,
    WindowedFeatureView,
)
from kiln.features.store import FeatureStore

REDIS_URL = os.environ.get("KILN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
US = 1_000_000  # microseconds per second
WINDOWS = {
    "1001ms": 1001 * 1000,
    "1h": 3600 * US,
    "90m": 5400 * US,
    "1d": 86400 * US,
    "7d": 7 * 86400 * US,
}
HORIZON = 8 * 86400 * US  # events reach a day past the widest window
FUTURE = 2 * 86400 * US  # and up to two days after the read instant

user = Entity("user", join_keys=["user_id"])
merchant = Entity("merchant", join_keys=["merchant"])


def _aggregations() -> list[Aggregation]:
    """Every function over every window. ``x`` (floats with NaN and infinities), ``y``
    (floats with infinities) and ``n`` (int64, or float64) hold NULLs; ``s`` is text and
    ``w`` timestamps, which take no sum or mean."""
    aggs = []
    for window in WINDOWS:
        aggs.append(Aggregation(None, "count", window))
        for column in ("x", "y", "n"):
            aggs += [
                Aggregation(column, fn, window)
                for fn in ("count", "sum", "mean", "min", "max", "last")
            ]
        for column in ("s", "w"):
            aggs += [Aggregation(column, fn, window) for fn in ("count", "min", "max", "last")]
    return aggs


AGGS = _aggregations()


@dataclass(frozen=True)
class Layout:
    """A windowed view and how its pushed rows and entity rows are spelled."""

    view: WindowedFeatureView

    @property
    def timestamp(self) -> str:
        return self.view.source.timestamp

    @property
    def created(self) -> str | None:
        return self.view.source.created

    def keys(self, entity: int) -> dict[str, Any]:
        """Entity ``entity``'s join keys; pair keys share user ids across merchants."""
        if len(self.view.join_keys) == 1:
            return {"user_id": entity * 7 - 20}
        return {"user_id": entity // 3, "merchant": ["m", "ü", "m 2"][entity % 3]}


LAYOUTS = {
    "by_user": Layout(
        WindowedFeatureView(
            "by_user", entities=[user], source=PushSource(created="created"), aggregations=AGGS
        )
    ),
    "by_user_no_created": Layout(
        WindowedFeatureView(
            "by_user_no_created", entities=[user], source=PushSource(), aggregations=AGGS
        )
    ),
    "by_pair": Layout(
        WindowedFeatureView(
            "by_pair",
            entities=[user, merchant],
            source=PushSource(timestamp="ts", created="written"),
            aggregations=AGGS,
        )
    ),
}


@dataclass(frozen=True)
class Event:
    entity: int
    before: int  # event time, in microseconds before T (negative: after T)
    created: tuple[str, int]  # ("lag", µs after the event) or ("at", µs after T)
    x: float | None
    y: float | None
    n: float | None  # an int, but for a fractional value pushed as float64
    s: str | None
    w: int | None  # a timestamp, in epoch microseconds


@dataclass(frozen=True)
class Push:
    events: tuple[Event, ...]
    with_created: bool  # False: the push gives no created column, so it is the push time
    zone: str | None  # the time zone the push's timestamps are written in (None: naive)
    n_float: bool = False  # ``n`` pushed as float64 rather than int64
    null_created: bool = False  # the first event's created time is NULL: refused
    fractional_n: bool = False  # the first event's ``n`` gets + 0.5 (needs n_float)


@dataclass(frozen=True)
class Known:
    """An event as pushed: its created time is exact, or a range for a push-time one."""

    event: Event
    at: int  # event time, epoch µs
    created_lo: int
    created_hi: int


@dataclass
class Pushed:
    """What the pushes left: the events known, and the type the offline ``n`` took."""

    known: list[Known] = dataclasses.field(default_factory=list)
    n_float: bool | None = None  # None: no push landed, so there is no offline table


def epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _frozen_clock(instant: datetime) -> type[datetime]:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return instant.astimezone(tz) if tz is not None else instant.replace(tzinfo=None)

    return Frozen


def _timestamps(values: Sequence[datetime | None], zone: str | None) -> pa.Array:
    utc = pa.array(values, pa.timestamp("us", "UTC"))
    if zone is None:  # naive values mean UTC
        return utc.cast(pa.timestamp("us"))
    return utc.cast(pa.timestamp("us", zone))


def _refused(push: Push, layout: Layout, state: Pushed) -> bool:
    """Whether prepare must refuse this push (it is then checked to change nothing)."""
    if layout.created and push.with_created and push.null_created:
        return True
    if push.fractional_n and state.n_float is False:
        return True
    untyped_x = all(e.x is None for e in push.events)
    return untyped_x and state.n_float is None  # no offline table to type ``x`` yet


def push_all(
    fs: FeatureStore,
    layout: Layout,
    pushes: Sequence[Push],
    t_us: int,
    pushed_at: datetime | None = None,
) -> tuple[Pushed, set[int]]:
    """Push each part in order; returns what landed and the entities pushed.

    ``pushed_at`` pins the clock of :mod:`kiln.features.windows` (the push time its
    pruning goes by) while pushing; None leaves the wall clock.
    """
    state = Pushed()
    for push in pushes:
        if not push.events:
            continue
        evs = list(push.events)
        if push.fractional_n:
            evs[0] = dataclasses.replace(evs[0], n=(evs[0].n or 0) + 0.5)
        at = [t_us - e.before for e in evs]
        created: list[int | None] = [
            a + e.created[1] if e.created[0] == "lag" else t_us + e.created[1]
            for a, e in zip(at, evs, strict=True)
        ]
        if push.null_created:
            created[0] = None
        keys = [layout.keys(e.entity) for e in evs]
        columns: dict[str, pa.Array] = {
            k: pa.array([row[k] for row in keys], pa.int64() if k == "user_id" else pa.string())
            for k in layout.view.join_keys
        }
        columns[layout.timestamp] = _timestamps([from_us(a) for a in at], push.zone)
        if layout.created and push.with_created:
            columns[layout.created] = _timestamps(
                [None if c is None else from_us(c) for c in created], push.zone
            )
        xs = [e.x for e in evs]
        # Only nulls: untyped, as records with None give.
        columns["x"] = pa.array(xs, pa.null() if all(x is None for x in xs) else pa.float64())
        columns["y"] = pa.array([e.y for e in evs], pa.float64())
        columns["n"] = pa.array([e.n for e in evs], pa.float64() if push.n_float else pa.int64())
        columns["s"] = pa.array([e.s for e in evs], pa.string())
        columns["w"] = _timestamps([None if e.w is None else from_us(e.w) for e in evs], push.zone)
        table = pa.table(columns)
        clock = _frozen_clock(pushed_at) if pushed_at is not None else datetime
        before = epoch_us(datetime.now(UTC))
        with mock.patch.object(kiln.features.windows, "datetime", clock):
            if _refused(push, layout, state):
                with pytest.raises(InvalidInput):
                    fs.push(layout.view.name, table)
                continue
            assert fs.push(layout.view.name, table) == len(evs)
        after = epoch_us(datetime.now(UTC))
        if state.n_float is None:
            state.n_float = push.n_float
        for e, a, c in zip(evs, at, created, strict=True):
            if not layout.created:
                lo = hi = 0  # no created column: every event is visible, ties on time alone
            elif push.with_created:
                assert c is not None
                lo = hi = c
            else:
                lo, hi = before, after
            state.known.append(Known(e, a, lo, hi))
    return state, {k.event.entity for k in state.known}


# -- the reference ------------------------------------------------------------------------


def _value(event: Event, column: str, n_float: bool | None) -> Any:
    """The value as read back: ``w`` a UTC datetime, ``n`` in the offline column's type."""
    value = getattr(event, column)
    if value is None:
        return None
    if column == "w":
        return from_us(value)
    if column == "n":
        return float(value) if n_float else int(value)
    return value


def reference(agg: Aggregation, inside: list[Known], n_float: bool | None) -> set[Any] | Any:
    """The value by the written rules; for ``last`` the set of values a tie allows."""
    column = agg.column
    if column is None:  # count of events
        return len(inside)
    if agg.function == "count":
        return sum(1 for k in inside if getattr(k.event, column) is not None)
    if agg.function == "last":
        if not inside:
            return {None}
        newest = max(k.at for k in inside)
        tied = [k for k in inside if k.at == newest]
        floor = max(k.created_lo for k in tied)
        return {_key(_value(k.event, column, n_float)) for k in tied if k.created_hi >= floor}
    values = [_value(k.event, column, n_float) for k in inside]
    values = [v for v in values if v is not None]
    if not values:
        return None
    if agg.function == "sum":
        return sum(values)
    if agg.function == "mean":
        return sum(values) / len(values)
    # DuckDB ranks NaN above every number.
    numbers = [v for v in values if v == v]
    if agg.function == "max":
        return max(numbers) if len(numbers) == len(values) else math.nan
    return min(numbers) if numbers else math.nan


def _key(value: Any) -> Any:
    """A hashable stand-in under which NaN equals NaN."""
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def same(got: Any, want: Any, *, rel: float) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if type(got) is not type(want):  # an int count or sum must not come back as a float
        return False
    if isinstance(want, float) and rel and math.isfinite(want):
        return math.isclose(got, want, rel_tol=rel, abs_tol=1e-9)
    return bool(got == want)


def compare(
    fs: FeatureStore,
    layout: Layout,
    pushed: Pushed,
    entities: Sequence[int],
    t: datetime,
    *,
    rel: float = 0.0,
) -> None:
    """Online at ``t`` == offline at ``t`` == reference, for every entity and feature.

    ``rel`` is the tolerance for sums and means of floats, whose summation order differs
    between the three; 0 means exact.
    """
    view = layout.view
    features = [f"{view.name}:{a.name}" for a in view.aggregations]
    rows = [layout.keys(e) for e in entities]
    # An online read aggregates at kiln.features.windows' datetime.now(). Should the pin
    # stop taking effect, events in the hour before T read as in the future online and
    # this fails instead of passing vacuously.
    with mock.patch.object(kiln.features.windows, "datetime", _frozen_clock(t)):
        online = fs.get_online_features(rows, features)
    spine = pd.DataFrame(rows).assign(event_timestamp=t)
    offline = fs.get_historical_features(spine, features).to_arrow()
    t_us = epoch_us(t)
    by_entity: dict[int, list[Known]] = {}
    for k in pushed.known:
        by_entity.setdefault(k.event.entity, []).append(k)
    problems = []
    for agg in view.aggregations:
        width = agg.window // timedelta(microseconds=1)
        on, off = online[agg.name], offline.column(agg.name).to_pylist()
        for i, entity in enumerate(entities):
            inside = [
                k
                for k in by_entity.get(entity, [])
                if t_us - width < k.at <= t_us and (not layout.created or k.created_hi <= t_us)
            ]
            want = reference(agg, inside, pushed.n_float)
            if agg.function == "last":
                ok = _key(on[i]) in want and _key(off[i]) in want
                # Ties are interchangeable, but a single candidate must be returned by both,
                # with its type: a NaN, an int or a string, not a lookalike.
                if ok and len(want) == 1:
                    ok = same(on[i], off[i], rel=0.0)
            else:
                ok = same(on[i], off[i], rel=rel) and same(off[i], want, rel=rel)
            if not ok:
                problems.append((agg.name, rows[i], on[i], off[i], want))
    shown = "; ".join(map(repr, problems[:10]))
    assert not problems, f"{len(problems)} mismatches (name, keys, online, offline, want): {shown}"


# -- random streams -----------------------------------------------------------------------


def _pick(options: Sequence[Any]) -> st.SearchStrategy[Any]:
    """Each option about equally likely (``sampled_from`` shrinks towards the first)."""
    return st.integers(0, len(options) - 1).map(lambda i: options[i])


EDGES = sorted({-1, 0, 1, *(w + d for w in WINDOWS.values() for d in (-1, 0, 1))})
INF = math.inf
X_VALUES = [None, math.nan, INF, -INF, -2.5, -1.0, 0.0, 0.25, 1.5, 3.0, 1024.0]
Y_VALUES = [None, -INF, -2.5, -1.0, -0.0, 0.0, 0.25, 1.5, 3.0, 1024.0, INF]
N_VALUES = [None, -3, 0, 1, 7, 2**40]
S_VALUES = [None, "", "a", "b", "ab", "é", "z", "日本"]
W_VALUES = [None, 0, 1, 1_700_000_000_000_000, 1_700_000_000_000_001, 4_102_444_800_000_000]
CREATED = [
    *(("lag", lag) for lag in (0, 1, US, 3600 * US, 2 * 86400 * US, -US)),
    *(("at", d) for d in (-1, 0, 1)),  # created exactly at T, or one microsecond either side
]
ZONES = [None, "UTC", "America/New_York", "Asia/Kolkata"]


@dataclass(frozen=True)
class Case:
    layout: str
    t_micros: int  # the microseconds of the read instant
    entities: int
    pushes: tuple[Push, ...]
    pushed_before: int  # the pinned push time, in microseconds before T


@st.composite
def cases(draw: st.DrawFn) -> Case:
    entities = draw(st.integers(1, 50))
    shared = draw(st.lists(st.integers(0, HORIZON), min_size=1, max_size=4))
    before = st.one_of(
        _pick(EDGES), _pick(shared), st.integers(0, HORIZON), st.integers(-FUTURE, -1)
    )
    # A few busy entities and a long tail, so that windows hold several events.
    busy = st.integers(0, min(entities, 3) - 1)
    entity = st.one_of(busy, st.integers(0, entities - 1))

    def events(who: st.SearchStrategy[int], when: st.SearchStrategy[int]) -> Any:
        return st.builds(
            Event,
            entity=who,
            before=when,
            created=_pick(CREATED),
            x=_pick(X_VALUES),
            y=_pick(Y_VALUES),
            n=_pick(N_VALUES),
            s=_pick(S_VALUES),
            w=_pick(W_VALUES),
        )

    parts = draw(st.integers(1, 5))
    drawn = [list(draw(st.lists(events(entity, before), max_size=40))) for _ in range(parts)]
    # Events at T itself for some busy entities: with the push time pinned at T, online
    # lists are pruned at the widest window's edge.
    for anchor in draw(st.lists(events(busy, st.just(0)), max_size=3)):
        drawn[draw(st.integers(0, parts - 1))].append(anchor)
    pushes = []
    for part in drawn:
        n_float = draw(st.integers(0, 2).map(lambda i: i == 0))
        pushes.append(
            Push(
                events=tuple(part),
                with_created=draw(st.integers(0, 3).map(bool)),  # mostly with a created column
                zone=draw(_pick(ZONES)),
                n_float=n_float,
                null_created=draw(st.integers(0, 7).map(lambda i: i == 0)),
                fractional_n=n_float and draw(st.integers(0, 3).map(lambda i: i == 0)),
            )
        )
    return Case(
        layout=draw(_pick(list(LAYOUTS))),
        t_micros=draw(st.integers(0, US - 1)),
        entities=entities,
        pushes=tuple(pushes),
        pushed_before=draw(_pick([0, 1, US, 3600 * US])),
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_pushed_streams_read_the_same_online_and_offline(case: Case) -> None:
    layout = LAYOUTS[case.layout]
    # The read instant is an hour ahead, so every push (and its push-time created) is
    # before it, and every event time is at or before it.
    t = datetime.now(UTC).replace(microsecond=case.t_micros) + timedelta(hours=1)
    pushed_at = t - timedelta(microseconds=case.pushed_before)
    with tempfile.TemporaryDirectory() as tmp:
        fs = FeatureStore(offline_dir=Path(tmp) / "offline", online=f"sqlite:///{tmp}/online.db")
        fs.apply([user, merchant, *(lay.view for lay in LAYOUTS.values())])
        landed, pushed = push_all(fs, layout, case.pushes, epoch_us(t), pushed_at)
        never = [e for e in range(case.entities + 2) if e not in pushed]
        compare(fs, layout, landed, [*sorted(pushed), *never], t)


# -- one large seeded stream, on both online stores -----------------------------------------


@pytest.fixture(params=("sqlite", "redis"))
def online_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        store = OnlineStore.open(f"sqlite:///{tmp_path / 'online.db'}", "main")
    else:
        store = OnlineStore.open(REDIS_URL, f"kiln-test-{uuid.uuid4().hex[:12]}/online")
    yield store
    keys = list(store.kv.scan())  # leave nothing behind on the shared Redis server
    if keys:
        store.kv.delete_many(keys)


def large_stream(rng: np.random.Generator, n: int, entities: int) -> list[Event]:
    """Arbitrary floats and µs-precision times; one event in ten on a window edge, a few
    after T, and each entity's last event at T."""
    edges = np.array(EDGES)
    before = rng.integers(0, HORIZON, n)
    on_edge = rng.random(n) < 0.1
    before[on_edge] = rng.choice(edges, int(on_edge.sum()))
    future = rng.random(n) < 0.03
    before[future] = -rng.integers(1, FUTURE, int(future.sum()))
    who = rng.integers(entities, size=n)
    before[n - entities :], who[n - entities :] = 0, np.arange(entities)
    x = np.round(rng.lognormal(3, 1, n), 6)
    events = []
    for i in range(n):
        created = CREATED[int(rng.integers(len(CREATED)))]
        events.append(
            Event(
                entity=int(who[i]),
                before=int(before[i]),
                created=created,
                x=[None, math.nan, INF, -INF, float(x[i])][
                    int(rng.choice(5, p=[0.05, 0.02, 0.005, 0.005, 0.92]))
                ],
                y=None if rng.random() < 0.1 else float(rng.normal(0, 100)),
                n=None if rng.random() < 0.1 else int(rng.integers(-1000, 1000)),
                s=None if rng.random() < 0.1 else str(S_VALUES[1 + int(rng.integers(7))]),
                w=None if rng.random() < 0.1 else int(rng.integers(0, 2**52)),
            )
        )
    return events


def test_a_large_stream_in_ten_pushes(online_store: OnlineStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(20240611)
    layout = LAYOUTS["by_user"]
    events = large_stream(rng, 5000, 200)
    t = datetime.now(UTC).replace(microsecond=123457) + timedelta(hours=1)
    # Ten pushes of a shuffled stream, so most pushes carry events older than ones already
    # pushed; the eighth gives no created column (its rows get the push time), the fourth
    # gives ``n`` as float64 (cast to the int64 the first push gave it).
    order = rng.permutation(len(events))
    pushes = [
        Push(
            events=tuple(events[i] for i in part),
            with_created=p != 7,
            zone=ZONES[p % len(ZONES)],
            n_float=p == 3,
        )
        for p, part in enumerate(np.array_split(order, 10))
    ]
    fs = FeatureStore(offline_dir=tmp_path / "offline", online=online_store)
    fs.apply([user, layout.view])
    landed, pushed = push_all(fs, layout, pushes, epoch_us(t))
    assert len(pushed) == 200 and landed.n_float is False
    compare(fs, layout, landed, [*range(200), 200, 201, 202], t, rel=1e-12)
