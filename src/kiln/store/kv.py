"""Key-value stores: SQLite (embedded default) and Redis, behind one five-method Protocol.

Keys are strings inside a namespace, values are bytes. ``put_many`` is atomic (one SQLite
transaction, one Redis MSET), so a reader sees all of a batch or none of it.
``update_many`` is a read-modify-write that no other writer can interleave with, so
several processes may update the same keys at once without losing an update. Rich logic
(online feature layouts, TTLs per view) is written once above this contract.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from kiln.core import (
    ConfigError,
    Conflict,
    InvalidInput,
    MissingDependency,
    StoreUnavailable,
    mask_url,
)

__all__ = ["KVStore", "RedisKVStore", "SQLiteKVStore", "open_kv_store"]

# update_many's callback: the current values of the keys, in order -> the pairs to store.
_Update = Callable[[list[bytes | None]], Mapping[str, bytes]]


@runtime_checkable
class KVStore(Protocol):
    """Contract every key-value backend meets (proved by ``kiln.testing.kv_store``).

    - ``get_many`` returns one value per key, in order, ``None`` for a missing key.
    - ``put_many`` stores every pair atomically; a later put of a key replaces its value.
    - ``delete_many`` removes keys (missing keys are ignored) and returns how many existed.
    - ``scan`` yields the keys that start with ``prefix``, in no particular order.
    - ``update_many(keys, update)`` reads the current values of ``keys`` (``None`` for a
      missing key), calls ``update(values)`` and stores the pairs it returns (some of
      ``keys``, possibly none) atomically, with no other writer's change to those keys in
      between: concurrent updates of the same keys, from any thread or process, never
      lose one. It returns the mapping it stored. ``update`` may be called more than once
      (an optimistic backend retries on a conflict), so it must be pure: compute from its
      argument, change nothing outside. An error it raises propagates and stores nothing.
      With no keys it returns ``{}`` without calling ``update``.
    - Two stores with different namespaces never see each other's keys.
    """

    namespace: str

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def put_many(self, items: Mapping[str, bytes]) -> None: ...

    def delete_many(self, keys: Sequence[str]) -> int: ...

    def scan(self, prefix: str = "") -> Iterator[str]: ...

    def update_many(
        self, keys: Sequence[str], update: Callable[[list[bytes | None]], Mapping[str, bytes]]
    ) -> Mapping[str, bytes]: ...


def _check_items(items: Mapping[str, bytes]) -> None:
    for key, value in items.items():
        if not isinstance(key, str):
            raise InvalidInput(f"key-value keys must be strings; got {key!r}")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InvalidInput(f"value of key {key!r} must be bytes; got {type(value).__name__}")


def _check_update(read: Container[str], items: Mapping[str, bytes]) -> None:
    """``update`` returned a mapping of bytes that writes only keys it was given."""
    if not isinstance(items, Mapping):
        raise InvalidInput(
            f"update_many: update must return a mapping of key to bytes; got {type(items).__name__}"
        )
    _check_items(items)
    if items:
        extra = [k for k in items if k not in read]
        if extra:
            raise InvalidInput(
                f"update_many: update returned key {extra[0]!r}, which is not one of the keys "
                "it was given; it may only write keys it read"
            )


_GET_JSON = "SELECT (SELECT value FROM kiln_kv WHERE key = ?1 || k.value) FROM json_each(?2) AS k"
_HAS_JSON = sqlite3.sqlite_version_info >= (3, 38)  # JSON functions always built in


_BUSY_TIMEOUT_S = 60.0


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out other processes that are creating the same fresh file.

    Changing the journal mode of a fresh file while another process does the same can fail
    at once with "database is locked" (the busy timeout does not cover it), so it is
    retried here, bounded by the same timeout as every other lock.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class SQLiteKVStore:
    """One table per file, keys prefixed by namespace; WAL so readers never block."""

    def __init__(self, path: str | Path, namespace: str = "") -> None:
        self.path = Path(path)
        self.namespace = namespace
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS kiln_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) "
            "WITHOUT ROWID"
        )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
        return conn

    def _key(self, key: str) -> str:
        return f"{self.namespace}\x00{key}"

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One statement over a JSON array of keys: one snapshot, values in key order.

        It is the online feature store's hot path; binding one array instead of an
        ``IN (?, ?, ...)`` list saves a quarter of the time. SQLite's JSON functions stop
        at an escaped NUL, so keys holding one take the ``IN`` path.
        """
        if not keys:
            return []
        payload = orjson.dumps(keys).decode()  # text: newer SQLite reads a BLOB as JSONB
        if _HAS_JSON and "\\u0000" not in payload:
            rows = self._conn().execute(_GET_JSON, (f"{self.namespace}\x00", payload))
            return [value for (value,) in rows.fetchall()]
        found: dict[str, bytes] = {}
        conn = self._conn()
        full = [self._key(k) for k in keys]
        for i in range(0, len(full), 500):
            chunk = full[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(f"SELECT key, value FROM kiln_kv WHERE key IN ({marks})", chunk)
            found.update(rows.fetchall())
        return [found.get(k) for k in full]

    def put_many(self, items: Mapping[str, bytes]) -> None:
        _check_items(items)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._put(conn, items)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _put(self, conn: sqlite3.Connection, items: Mapping[str, bytes]) -> None:
        conn.executemany(
            "INSERT INTO kiln_kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(self._key(k), bytes(v)) for k, v in items.items()],
        )

    def update_many(self, keys: Sequence[str], update: _Update) -> Mapping[str, bytes]:
        """Read, ``update`` and write in one ``BEGIN IMMEDIATE`` transaction.

        The transaction holds the file's write lock from the read to the commit, so
        writers in other threads and processes wait for it (up to the 60 s busy timeout)
        and ``update`` runs exactly once. Readers are not blocked (WAL).
        """
        if not keys:
            return {}
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            items = update(self.get_many(keys))
            _check_update(set(keys), items)
            if items:
                self._put(conn, items)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return items

    def delete_many(self, keys: Sequence[str]) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.executemany(
                "DELETE FROM kiln_kv WHERE key = ?", [(self._key(k),) for k in keys]
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(cursor.rowcount)

    def scan(self, prefix: str = "") -> Iterator[str]:
        start = self._key(prefix)
        rows = self._conn().execute(
            "SELECT key FROM kiln_kv WHERE key >= ? AND key < ? ORDER BY key",
            (start, start + "\U0010ffff"),
        )
        skip = len(self.namespace) + 1
        for (key,) in rows.fetchall():
            yield key[skip:]


# update_many's write on Redis: store the new values only if every key read still holds
# the value read. KEYS: the n keys read. ARGV: the lengths of the values read ("-1" where
# missing) joined by ",", the values read joined into one string, a mask with "1" per key
# to write, then the new values of those keys in key order. Two strings instead of one
# argument per value read keep the call as cheap to send and parse as a plain MSET. MGET
# and MSET go 1,000 keys at a time, well inside Lua's limit on unpacked values.
_COMPARE_AND_SET = """
local n = #KEYS
local lengths, values = {}, {}
for s = 1, n, 1000 do
  local now = redis.call('MGET', unpack(KEYS, s, math.min(s + 999, n)))
  for i = 1, #now do
    local value = now[i]
    if value then
      lengths[#lengths + 1] = #value
      values[#values + 1] = value
    else
      lengths[#lengths + 1] = -1
    end
  end
end
if table.concat(lengths, ",") ~= ARGV[1] or table.concat(values) ~= ARGV[2] then
  return 0
end
local write, j, batch = ARGV[3], 4, {}
for i = 1, n do
  if string.byte(write, i) == 49 then
    batch[#batch + 1] = KEYS[i]
    batch[#batch + 1] = ARGV[j]
    j = j + 1
    if #batch == 2000 then
      redis.call('MSET', unpack(batch))
      batch = {}
    end
  end
end
if #batch > 0 then redis.call('MSET', unpack(batch)) end
return 1
"""


class RedisKVStore:
    """Keys live as ``<namespace>:<key>`` strings; a batch is one ``MSET``.

    ``update_many`` is optimistic: ``MGET`` the keys, call ``update``, then write with a
    Lua script that first checks, atomically, that every key still holds the value read
    (compare-and-set). If another client changed one meanwhile it starts over after a short
    random pause, at most ``update_attempts`` times before raising
    :class:`kiln.core.Conflict`. (``WATCH`` would do the same, but Redis checks each
    watched key against every other one, so watching 5,000 keys costs ~0.25 s.)
    """

    update_attempts = 50

    def __init__(self, url: str, namespace: str = "", client: Any = None) -> None:
        try:
            import redis
        except ImportError:
            raise MissingDependency(
                "the Redis key-value store needs redis-py: pip install 'kiln[redis]'"
            ) from None
        self.url = url
        self.namespace = namespace
        self._redis = client or redis.Redis.from_url(url)
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError,)
        self._compare_and_set = self._redis.register_script(_COMPARE_AND_SET)

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise StoreUnavailable(f"cannot reach Redis at {mask_url(self.url)!r}: {exc}") from None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = self._call(self._redis.mget, [self._key(k) for k in keys])
        return values

    def put_many(self, items: Mapping[str, bytes]) -> None:
        _check_items(items)
        if items:
            self._call(self._redis.mset, {self._key(k): bytes(v) for k, v in items.items()})

    def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(self._call(self._redis.delete, *[self._key(k) for k in keys]))

    def scan(self, prefix: str = "") -> Iterator[str]:
        pattern = self._key(_escape_glob(prefix)) + "*"
        skip = len(self.namespace) + 1
        for key in self._call(self._redis.scan_iter, pattern, 1000):
            yield key.decode()[skip:]

    def update_many(self, keys: Sequence[str], update: _Update) -> Mapping[str, bytes]:
        if not keys:
            return {}
        full = [self._key(k) for k in keys]
        position = {k: i for i, k in enumerate(keys)}  # a repeated key: write it once
        for attempt in range(self.update_attempts):
            if attempt:
                # Full jitter, growing to 50 ms, so clashing writers drift apart.
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            values: list[bytes | None] = self._call(self._redis.mget, full)
            items = update(values)
            _check_update(position, items)
            if not items:
                return items
            order = sorted(position[k] for k in items)
            write = bytearray(b"0" * len(keys))
            for i in order:
                write[i] = 49  # "1"
            args = [
                ",".join(["-1" if v is None else str(len(v)) for v in values]),
                b"".join([v for v in values if v is not None]),
                bytes(write),
                *[bytes(items[keys[i]]) for i in order],
            ]
            if self._call(self._compare_and_set, full, args):
                return items
        raise Conflict(
            f"update_many: {len(keys)} key(s) of namespace {self.namespace!r} (first "
            f"{keys[0]!r}) were changed by other writers during each of {self.update_attempts} "
            "attempts; retry later, or write smaller batches so that fewer keys clash"
        )


def _escape_glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def open_kv_store(url: str, namespace: str = "") -> KVStore:
    """``sqlite:///PATH`` or ``redis://HOST:PORT/DB`` (``rediss://`` for TLS)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        path = url[len("sqlite:///") :]
        if not path:
            raise ConfigError(f"key-value URL {url!r} names no file; expected sqlite:///PATH")
        return SQLiteKVStore(path, namespace)
    if scheme in ("redis", "rediss"):
        return RedisKVStore(url, namespace)
    raise ConfigError(
        f"unknown key-value store scheme {scheme or url!r}; supported schemes: sqlite, redis"
    )
