"""The metadata store: one SQL database (SQLite by default, PostgreSQL at scale).

Capabilities never open connections themselves; they ask for a :meth:`MetadataStore.read`
or :meth:`MetadataStore.write` transaction. On SQLite a write transaction starts with
``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout instead of failing
with "database is locked" when a read transaction tries to upgrade to a write. The schema
is migrated by the Alembic scripts shipped in this package on first use, under a lock so
two processes opening a fresh store at once do not race.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from kiln.core import ConfigError, KilnError, MissingDependency, StoreUnavailable, mask_url

__all__ = ["VERSION_TABLE", "MetadataStore", "open_metadata_store"]

VERSION_TABLE = "kiln_alembic_version"
_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x6B696C6E  # "kiln"
_SQLITE_BUSY_TIMEOUT_S = 60.0
_SQLITE_AUTOCHECKPOINT_PAGES = 1000
_C = TypeVar("_C")


def _normalize_url(url: str) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(f"KILN_DB_URL: malformed database URL {mask_url(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise MissingDependency(
                "the PostgreSQL metadata store needs psycopg: pip install 'kiln[postgres]'"
            ) from None
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise ConfigError(
        f"KILN_DB_URL: unknown database scheme {backend!r}; supported schemes: sqlite, postgresql"
    )


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints (the only fsyncs in WAL mode) run in the background through
        # checkpoint(); the automatic one stays as a safety net for a large WAL.
        cursor.execute(f"PRAGMA wal_autocheckpoint = {_SQLITE_AUTOCHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("kiln_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL, waiting out other processes that are creating the same fresh file.

    Changing the journal mode of a fresh file while another process migrates it can
    fail at once with "database is locked" (seen when several processes open a new store
    together), so it is retried here, bounded by the same timeout as every other lock.
    """
    import sqlite3

    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class MetadataStore:
    """A handle on one metadata database; cheap to share, safe across threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sa_url = _normalize_url(url)
        self.dialect: str = self._sa_url.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(self._sa_url)
        else:
            self.engine = sa.create_engine(self._sa_url, pool_pre_ping=True)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"MetadataStore({mask_url(self.url)!r})"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot on both dialects)."""
        self._ensure_schema()
        with self._connect(write=False) as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on exit, rolled back on any exception."""
        self._ensure_schema()
        with self._connect(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def write_cursor(self) -> Iterator[Any]:
        """A write transaction on a raw DB-API cursor, for hot paths that run plain SQL.

        It skips SQLAlchemy's statement machinery (about a tenth of a millisecond per
        statement); semantics match :meth:`write`: commit on exit, rollback on error.
        """
        self._ensure_schema()
        if self.dialect == "sqlite":
            conn = self._thread_connection()
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cursor.close()
            return
        conn = self._checkout(self.engine.raw_connection)
        cursor = conn.cursor()
        try:
            yield cursor
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            cursor.close()
            conn.close()

    @property
    def placeholder(self) -> str:
        """The bound-parameter marker of this store's driver, for raw-cursor SQL."""
        return "?" if self.dialect == "sqlite" else "%s"

    @contextmanager
    def read_cursor(self) -> Iterator[Any]:
        """A read transaction on a raw DB-API cursor, for hot reads that run plain SQL.

        The read twin of :meth:`write_cursor`: one consistent snapshot, without the
        statement-building cost of SQLAlchemy.
        """
        self._ensure_schema()
        if self.dialect == "sqlite":
            conn = self._thread_connection()
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN")
                yield cursor
            finally:
                cursor.close()
                conn.rollback()
            return
        conn = self._checkout(self.engine.raw_connection)
        cursor = conn.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
            conn.rollback()
            conn.close()

    def _thread_connection(self) -> Any:
        """This thread's own SQLite connection, detached from the pool and kept open.

        SQLite connections are cheap to keep and a pool round trip costs more than the
        commit of a small transaction; each thread keeps one for its hot-path writes.
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._checkout(self.engine.raw_connection)
            conn.detach()
            self._local.conn = conn
        return conn

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[Connection]:
        conn: Connection = self._checkout(self.engine.connect)
        try:
            if write:
                conn = conn.execution_options(kiln_write=True)
            yield conn
        finally:
            conn.close()

    def _checkout(self, connect: Callable[[], _C]) -> _C:
        """A pooled connection, or StoreUnavailable naming the (masked) URL."""
        try:
            return connect()
        except sa.exc.OperationalError as exc:
            raise StoreUnavailable(
                f"cannot reach the metadata store {mask_url(self.url)!r}: {exc.orig}"
            ) from None

    # -- schema ---------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The schema revision stored (None for an empty database), read without Alembic."""
        with self._connect(write=False) as conn, conn.begin():
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        if len(rows) > 1:
            raise ConfigError(f"the metadata store has {len(rows)} schema heads; expected one")
        return str(rows[0][0]) if rows else None

    def upgrade(self) -> str:
        """Apply every pending migration (idempotent, safe to race); return the revision."""
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        head = _head_revision()
        with self._connect(write=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            current = ctx.get_current_revision()
            if current != head:
                _check_known(current)
                cfg = _alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        self._ready = True
        return head

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            if self.current_revision() != _head_revision():
                self.upgrade()
            self._ready = True

    def dispose(self) -> None:
        self.engine.dispose()


_HEAD: str | None = None
_REVISION = re.compile(r'^(down_revision|revision) = (?:"(\w+)"|None)$', re.MULTILINE)


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def _revisions() -> dict[str, str | None]:
    """Each packaged migration's revision and the one it revises, read from the files
    (importing Alembic to learn the head costs every process 0.2 s)."""
    found: dict[str, str | None] = {}
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        values = dict((m.group(1), m.group(2)) for m in _REVISION.finditer(path.read_text()))
        if values.get("revision"):
            found[str(values["revision"])] = values.get("down_revision")
    return found


def _head_revision() -> str:
    global _HEAD
    if _HEAD is None:
        revisions = _revisions()
        revised = {down for down in revisions.values() if down is not None}
        heads = [r for r in revisions if r not in revised]
        if len(heads) != 1:  # pragma: no cover - the package always ships one line
            raise KilnError(f"the packaged metadata migrations have heads {sorted(heads)}")
        _HEAD = heads[0]
    return _HEAD


def _check_known(revision: str | None) -> None:
    if revision is None:
        return
    if revision not in _revisions():
        raise ConfigError(
            f"the metadata store is at schema revision {revision!r}, which this version of "
            "kiln does not know; upgrade kiln"
        )


_stores: dict[tuple[str, int], MetadataStore] = {}
_stores_lock = threading.Lock()


def open_metadata_store(url: str) -> MetadataStore:
    """One shared :class:`MetadataStore` per URL and process (a forked child gets its own)."""
    key = (url, os.getpid())
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = MetadataStore(url)
    return store
