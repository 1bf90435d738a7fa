"""Key-value store conformance suite: every backend must pass these tests.

Provide a ``kv_store`` fixture (a :class:`kiln.store.KVStore` on a fresh namespace) and a
``kv_store_factory`` fixture (``namespace -> KVStore`` on the same backend), then::

    from kiln.testing.kv_store import *  # noqa: F403
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from kiln.core import InvalidInput
from kiln.store import KVStore


def test_put_then_get_in_order(kv_store: KVStore) -> None:
    kv_store.put_many({"a": b"1", "b": b"2", "c": b""})
    assert kv_store.get_many(["c", "missing", "a", "b"]) == [b"", None, b"1", b"2"]
    assert kv_store.get_many([]) == []


def test_put_replaces(kv_store: KVStore) -> None:
    kv_store.put_many({"k": b"old"})
    kv_store.put_many({"k": b"new"})
    assert kv_store.get_many(["k"]) == [b"new"]


def test_binary_values_and_unicode_keys(kv_store: KVStore) -> None:
    value = bytes(range(256)) * 4
    kv_store.put_many({"user:é/7": value})
    assert kv_store.get_many(["user:é/7"]) == [value]


def test_delete_counts_existing(kv_store: KVStore) -> None:
    kv_store.put_many({"a": b"1", "b": b"2"})
    assert kv_store.delete_many(["a", "nope"]) == 1
    assert kv_store.get_many(["a", "b"]) == [None, b"2"]
    assert kv_store.delete_many([]) == 0


def test_scan_by_prefix(kv_store: KVStore) -> None:
    kv_store.put_many({"user:1": b"x", "user:2": b"y", "item:1": b"z", "user*": b"w"})
    assert sorted(kv_store.scan("user:")) == ["user:1", "user:2"]
    assert sorted(kv_store.scan("user*")) == ["user*"]
    assert sorted(kv_store.scan()) == ["item:1", "user*", "user:1", "user:2"]


def test_namespaces_are_isolated(kv_store_factory: Callable[[str], KVStore]) -> None:
    one, two = kv_store_factory("one"), kv_store_factory("two")
    one.put_many({"k": b"1"})
    two.put_many({"k": b"2"})
    assert one.get_many(["k"]) == [b"1"] and two.get_many(["k"]) == [b"2"]
    assert list(one.scan()) == ["k"]


def test_bad_values_are_rejected(kv_store: KVStore) -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        kv_store.put_many({"k": "text"})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match="keys must be strings"):
        kv_store.put_many({1: b"x"})  # type: ignore[dict-item]
    assert kv_store.get_many(["k"]) == [None]


def test_batches_are_atomic_to_readers(kv_store: KVStore) -> None:
    """A reader never sees half of a batch: all keys carry the same generation."""
    keys = [f"k{i}" for i in range(50)]
    stop = threading.Event()
    torn: list[set[bytes | None]] = []

    def read() -> None:
        while not stop.is_set():
            seen = set(kv_store.get_many(keys))
            if len(seen) > 1:
                torn.append(seen)

    kv_store.put_many(dict.fromkeys(keys, b"0"))
    reader = threading.Thread(target=read)
    reader.start()
    for gen in range(1, 60):
        kv_store.put_many(dict.fromkeys(keys, str(gen).encode()))
    stop.set()
    reader.join()
    assert torn == []


# -- update_many ----------------------------------------------------------------------------


def test_update_sees_current_values_and_writes_a_subset(kv_store: KVStore) -> None:
    kv_store.put_many({"a": b"1", "b": b"2"})
    seen: list[list[bytes | None]] = []

    def update(values: list[bytes | None]) -> dict[str, bytes]:
        seen.append(list(values))
        return {"a": values[0] + b"!" if values[0] else b"?", "missing": b"new"}

    written = kv_store.update_many(["a", "missing", "b"], update)
    assert dict(written) == {"a": b"1!", "missing": b"new"}
    assert seen[-1] == [b"1", None, b"2"]
    assert kv_store.get_many(["a", "missing", "b"]) == [b"1!", b"new", b"2"]


def test_update_returning_nothing_writes_nothing(kv_store: KVStore) -> None:
    kv_store.put_many({"a": b"1"})
    assert dict(kv_store.update_many(["a", "b"], lambda values: {})) == {}
    assert kv_store.get_many(["a", "b"]) == [b"1", None]

    def never(values: list[bytes | None]) -> dict[str, bytes]:
        raise AssertionError("update_many with no keys must not call update")

    assert dict(kv_store.update_many([], never)) == {}


def test_update_errors_store_nothing(kv_store: KVStore) -> None:
    kv_store.put_many({"a": b"1"})

    def boom(values: list[bytes | None]) -> dict[str, bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        kv_store.update_many(["a"], boom)
    with pytest.raises(InvalidInput, match="'other'"):
        kv_store.update_many(["a"], lambda values: {"a": b"2", "other": b"x"})
    with pytest.raises(InvalidInput, match="must be bytes"):
        kv_store.update_many(["a"], lambda values: {"a": "text"})  # type: ignore[dict-item]
    assert kv_store.get_many(["a", "other"]) == [b"1", None]
    kv_store.update_many(["a"], lambda values: {"a": b"2"})  # the store is still usable
    assert kv_store.get_many(["a"]) == [b"2"]


def increment(values: list[bytes | None]) -> dict[str, bytes]:
    """``update_many`` callback: add one to each counter read (a missing one counts 0)."""
    return {f"c{i}": str(int(v or b"0") + 1).encode() for i, v in enumerate(values)}


def test_concurrent_updates_lose_nothing(kv_store: KVStore) -> None:
    """Threads incrementing the same counters through update_many: the totals are exact."""
    threads, times = 6, 40
    keys = ["c0", "c1", "c2"]
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            for _ in range(times):
                kv_store.update_many(keys, increment)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert kv_store.get_many(keys) == [str(threads * times).encode()] * 3


__all__ = [name for name in dir() if name.startswith("test_")]
