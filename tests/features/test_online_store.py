"""The online store conformance suite on SQLite and on the real Redis server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.core import ConfigError
from kiln.features.online import OnlineStore
from kiln.store import RedisKVStore, SQLiteKVStore
from kiln.testing.online_store import *  # noqa: F403

REDIS_URL = os.environ.get("KILN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


def test_open_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(OnlineStore.open(f"sqlite:///{tmp_path / 'o.db'}").kv, SQLiteKVStore)
    redis_store = OnlineStore.open(REDIS_URL, "ns")
    assert isinstance(redis_store.kv, RedisKVStore) and redis_store.kv.namespace == "ns"
    with pytest.raises(ConfigError, match="sqlite"):
        OnlineStore.open("memcached://x")
