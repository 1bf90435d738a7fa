"""The key-value conformance suite on SQLite and on the real Redis server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.core import ConfigError, StoreUnavailable
from kiln.store import KVStore, RedisKVStore, open_kv_store
from kiln.testing.kv_store import *  # noqa: F403

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
