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


__all__ = [name for name in dir() if name.startswith("test_")]
