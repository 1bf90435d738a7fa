"""The online store conformance suite on SQLite and on the real Redis server."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.core import ConfigError
from kiln.features.online import OnlineStore
from kiln.store import RedisKVStore, SQLiteKVStore
from kiln.testing.online_store import *  # noqa: F403
from kiln.testing.online_store import (
    expected_totals,
    newest_of_shares,
    push_share,
    pushed_totals,
    stored_shares,
    write_share,
)

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


PROCESSES = 3


def _warm(ready: Any) -> None:
    """Pool initializer: the worker has imported this module; tell the parent."""
    ready.wait()


def _share(work: str, url: str, namespace: str, writer: int, start_at: float) -> None:
    store = OnlineStore.open(url, namespace)
    time.sleep(max(0.0, start_at - time.time()))  # every process starts together
    {"write": write_share, "push": push_share}[work](store, writer, PROCESSES)


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


@pytest.fixture(params=("sqlite", "redis"))
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A backend URL and namespace that separate processes can open."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'online.db'}", "main"
        return
    namespace = f"kiln-test-{uuid.uuid4().hex[:12]}/online"
    yield REDIS_URL, namespace
    store = OnlineStore.open(REDIS_URL, namespace)
    keys = list(store.kv.scan())
    if keys:
        store.kv.delete_many(keys)


@pytest.mark.parametrize("work", ["write", "push"])
def test_writer_processes_lose_nothing(
    work: str, shared_url: tuple[str, str], process_pool: Any
) -> None:
    """Processes writing rows (or pushing window events) for the same entities at once."""
    url, namespace = shared_url
    start_at = time.time() + 0.1
    jobs = [(work, url, namespace, writer, start_at) for writer in range(PROCESSES)]
    process_pool.starmap(_share, jobs, chunksize=1)
    store = OnlineStore.open(url, namespace)
    if work == "write":
        assert stored_shares(store) == newest_of_shares(PROCESSES)
    else:
        assert pushed_totals(store) == expected_totals(PROCESSES)
