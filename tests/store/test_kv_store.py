"""The key-value conformance suite on SQLite and on the real Redis server."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.core import ConfigError, Conflict, StoreUnavailable
from kiln.store import KVStore, RedisKVStore, open_kv_store
from kiln.testing.kv_store import *  # noqa: F403
from kiln.testing.kv_store import increment

REDIS_URL = os.environ.get("KILN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=("sqlite", "redis"))
def kv_store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], KVStore]]:
    prefix = f"kiln-test-{uuid.uuid4().hex[:12]}"
    made: list[KVStore] = []

    def make(namespace: str) -> KVStore:
        if request.param == "sqlite":
            store = open_kv_store(f"sqlite:///{tmp_path / 'online.db'}", namespace)
        else:
            store = open_kv_store(REDIS_URL, f"{prefix}/{namespace}")
        made.append(store)
        return store

    yield make
    for store in made:  # leave nothing behind on the shared Redis server
        keys = list(store.scan())
        if keys:
            store.delete_many(keys)


@pytest.fixture
def kv_store(kv_store_factory: Callable[[str], KVStore]) -> KVStore:
    return kv_store_factory("main")


def test_redis_is_reachable() -> None:
    store = open_kv_store(REDIS_URL, f"kiln-test-{uuid.uuid4().hex[:8]}")
    store.put_many({"ping": b"pong"})
    assert store.get_many(["ping"]) == [b"pong"]
    store.delete_many(["ping"])


def test_unreachable_redis_is_a_clear_error() -> None:
    store = RedisKVStore("redis://127.0.0.1:1/0", "x")
    with pytest.raises(StoreUnavailable, match="cannot reach Redis"):
        store.get_many(["k"])


@pytest.mark.parametrize("url", ["memcached://x", "sqlite://", "nothing"])
def test_unknown_kv_url(url: str) -> None:
    with pytest.raises(ConfigError, match="sqlite"):
        open_kv_store(url)


def test_unreachable_redis_update_is_a_clear_error() -> None:
    store = RedisKVStore("redis://127.0.0.1:1/0", "x")
    with pytest.raises(StoreUnavailable, match="cannot reach Redis"):
        store.update_many(["k"], lambda values: {"k": b"1"})


def test_redis_update_that_always_clashes_is_a_conflict() -> None:
    store = RedisKVStore(REDIS_URL, f"kiln-test-{uuid.uuid4().hex[:8]}")
    other = RedisKVStore(REDIS_URL, store.namespace)
    store.update_attempts = 3
    calls: list[int] = []

    def clash(values: list[bytes | None]) -> dict[str, bytes]:
        calls.append(1)
        other.put_many({"k": str(len(calls)).encode()})  # another writer, every time
        return {"k": b"mine"}

    try:
        with pytest.raises(Conflict, match="3 attempts"):
            store.update_many(["k"], clash)
        assert len(calls) == 3 and store.get_many(["k"]) == [b"3"]
    finally:
        store.delete_many(["k"])


def test_redis_update_retries_when_a_read_key_changed() -> None:
    """The compare covers every key read, written or not, and tells b"" from missing."""
    store = RedisKVStore(REDIS_URL, f"kiln-test-{uuid.uuid4().hex[:8]}")
    other = RedisKVStore(REDIS_URL, store.namespace)
    store.put_many({"empty": b"", "x": b"0"})
    seen: list[list[bytes | None]] = []

    def update(values: list[bytes | None]) -> dict[str, bytes]:
        seen.append(values)
        if len(seen) == 1:
            other.delete_many(["empty"])  # b"" -> missing: same bytes, different state
        return {"x": str(len(seen)).encode()}

    try:
        assert dict(store.update_many(["empty", "x"], update)) == {"x": b"2"}
        assert seen == [[b"", b"0"], [None, b"0"]]
        assert store.get_many(["empty", "x"]) == [None, b"2"]
    finally:
        store.delete_many(["empty", "x"])


def _warm(ready: Any) -> None:
    """Pool initializer: the worker has imported this module; tell the parent."""
    ready.wait()


def _increment(url: str, namespace: str, times: int, start_at: float) -> None:
    store = open_kv_store(url, namespace)
    time.sleep(max(0.0, start_at - time.time()))  # every process starts together
    for _ in range(times):
        store.update_many(["c0", "c1"], increment)


@pytest.fixture(scope="module")
def process_pool() -> Iterator[Any]:
    """Warm spawned workers (nothing shared with this process but the store itself)."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(PROCESSES + 1)
    pool = ctx.Pool(PROCESSES, initializer=_warm, initargs=(ready,))
    ready.wait(60)
    yield pool
    pool.terminate()
    pool.join()


PROCESSES = 3


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_processes_updating_the_same_keys_lose_nothing(
    backend: str, tmp_path: Path, process_pool: Any
) -> None:
    """Separate processes increment the same counters through update_many: exact totals."""
    times = 60
    if backend == "sqlite":
        url, namespace = f"sqlite:///{tmp_path / 'kv.db'}", "n"
    else:
        url, namespace = REDIS_URL, f"kiln-test-{uuid.uuid4().hex[:12]}"
    store = open_kv_store(url, namespace)
    start_at = time.time() + 0.1
    try:
        process_pool.starmap(
            _increment, [(url, namespace, times, start_at)] * PROCESSES, chunksize=1
        )
        assert store.get_many(["c0", "c1"]) == [str(PROCESSES * times).encode()] * 2
    finally:
        store.delete_many(["c0", "c1"])
