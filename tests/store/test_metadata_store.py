"""The metadata store on SQLite and PostgreSQL: migrations, concurrent first use, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import kiln.features._tables  # declares the feature store's tables on kiln.store.metadata
import kiln.flows._tables  # declares the flows tables on kiln.store.metadata
import kiln.monitoring._tables  # declares monitoring's tables on kiln.store.metadata
import kiln.registry._tables  # declares the registry's tables on kiln.store.metadata
import kiln.serving._tables  # declares serving's tables on kiln.store.metadata
import kiln.store
import kiln.store.references  # declares the reference counts on kiln.store.metadata
import kiln.tracking._tables  # declares tracking's tables on kiln.store.metadata
from kiln.errors import ConfigError, StoreUnavailable
from kiln.store import VERSION_TABLE, MetadataStore, open_metadata_store

MIGRATIONS = Path(kiln.store.__file__).with_name("migrations")


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


@pytest.fixture
def store(db_url: str) -> Iterator[MetadataStore]:
    """A store of its own (not the per-process cache), disposed after the test."""
    store = MetadataStore(db_url)
    yield store
    store.dispose()


def schema_diff(store: MetadataStore) -> list[object]:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(ctx, kiln.store.metadata))


def table_names(store: MetadataStore) -> set[str]:
    with store.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def versions(store: MetadataStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


# -- migrations ---------------------------------------------------------------------------


def test_migrations_build_the_declared_schema_from_empty(store: MetadataStore) -> None:
    assert table_names(store) == set()
    assert store.current_revision() is None

    assert store.upgrade() == head_revision()

    declared = set(kiln.store.metadata.tables)
    assert declared, "no tables are declared on kiln.store.metadata"
    assert table_names(store) == declared | {VERSION_TABLE}
    # Every declared table, column, type, nullability, index and key matches the database.
    assert schema_diff(store) == []
    assert store.current_revision() == head_revision()
    assert versions(store) == [head_revision()]


def test_first_use_migrates_implicitly(store: MetadataStore) -> None:
    with store.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM kiln_experiments")).scalar() == 0
    assert store.current_revision() == head_revision()
    assert schema_diff(store) == []


def test_upgrade_is_idempotent(store: MetadataStore, db_url: str) -> None:
    head = store.upgrade()
    with store.write() as conn:
        conn.execute(
            sa.text("INSERT INTO kiln_experiments (id, name, created_at) VALUES ('e1', 'kept', 1)")
        )
    assert store.upgrade() == head
    assert store.upgrade() == head

    # A store opened later on the same database finds it current and changes nothing.
    again = MetadataStore(db_url)
    try:
        assert again.current_revision() == head
        assert again.upgrade() == head
        with again.read() as conn:
            names = conn.execute(sa.text("SELECT name FROM kiln_experiments")).scalars().all()
        assert names == ["kept"]
    finally:
        again.dispose()
    assert versions(store) == [head]
    assert schema_diff(store) == []


def test_open_metadata_store_shares_one_store_per_url(sqlite_url: str) -> None:
    first = open_metadata_store(sqlite_url)
    try:
        assert open_metadata_store(sqlite_url) is first
    finally:
        first.dispose()


# -- concurrent first use -----------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import sqlalchemy as sa
    from kiln.store import open_metadata_store

    url, index, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = open_metadata_store(url)
    open(os.path.join(sync, f"ready-{index}"), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(sync, "go")):
        if time.monotonic() > deadline:
            sys.exit("never told to go")
        time.sleep(0.001)
    if index % 2 == 0:
        store.upgrade()  # explicitly, as `kiln db upgrade` does
    with store.write() as conn:  # the others migrate on first use
        conn.execute(
            sa.text("INSERT INTO kiln_experiments (id, name, created_at) VALUES (:i, :n, 0)"),
            {"i": f"{index:032x}", "n": f"proc-{index}"},
        )
    print(store.current_revision())
    """
)


def test_processes_opening_a_fresh_store_at_once_agree_on_one_schema(
    store: MetadataStore, db_url: str, tmp_path: Path
) -> None:
    n = 4
    sync = tmp_path / "sync"
    sync.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, db_url, str(i), str(sync)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(sync.glob("ready-*"))) < n:
            assert all(c.poll() is None for c in children), "a child exited before the start"
            assert time.monotonic() < deadline, "children did not start in time"
            time.sleep(0.005)
        (sync / "go").touch()
        results = [c.communicate(timeout=60) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()

    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == head_revision()
    assert versions(store) == [head_revision()]
    assert schema_diff(store) == []
    with store.read() as conn:
        names = conn.execute(sa.text("SELECT name FROM kiln_experiments ORDER BY name"))
        assert names.scalars().all() == [f"proc-{i}" for i in range(n)]


# -- SQLite specifics ---------------------------------------------------------------------


def test_sqlite_uses_wal_and_a_busy_timeout(sqlite_url: str) -> None:
    store = MetadataStore(sqlite_url)
    try:
        with store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with store.write() as conn:
            conn.execute(
                sa.text("INSERT INTO kiln_experiments (id, name, created_at) VALUES ('a', 'a', 0)")
            )
        assert Path(sqlite_url.removeprefix("sqlite:///") + "-wal").exists()
    finally:
        store.dispose()


def test_sqlite_writers_queue_instead_of_failing(sqlite_url: str) -> None:
    """A second writer waits on the busy timeout; readers are not blocked meanwhile."""
    first, second = MetadataStore(sqlite_url), MetadataStore(sqlite_url)
    insert = sa.text("INSERT INTO kiln_experiments (id, name, created_at) VALUES (:i, :i, 0)")
    try:
        first.upgrade()
        with first.write() as conn:
            conn.execute(insert, {"i": "held"})
            with second.read() as reader:  # WAL: a reader does not wait for the writer
                count = reader.execute(sa.text("SELECT count(*) FROM kiln_experiments"))
                assert count.scalar() == 0

            import threading

            done: list[float] = []

            def write_second() -> None:
                with second.write() as other:
                    other.execute(insert, {"i": "queued"})
                done.append(time.monotonic())

            thread = threading.Thread(target=write_second)
            thread.start()
            time.sleep(0.3)
            assert done == []  # still waiting for the lock
            released = time.monotonic()
        thread.join(timeout=30)
        assert done and done[0] >= released
        with second.read() as conn:
            names = conn.execute(sa.text("SELECT name FROM kiln_experiments ORDER BY name"))
            assert names.scalars().all() == ["held", "queued"]
    finally:
        first.dispose()
        second.dispose()


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user:secret@localhost/kiln",
        "redis://localhost:6379/0",
        "oracle://user:secret@db/kiln",
    ],
)
def test_unknown_scheme_is_a_config_error_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        MetadataStore(url)
    message = str(info.value)
    assert message.startswith("KILN_DB_URL:")
    assert url.split("://", 1)[0] in message
    assert "sqlite" in message and "postgresql" in message
    assert "secret" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "://nothing",
        "postgresql://user:secret@localhost:notaport/kiln",
    ],
)
def test_malformed_url_is_a_config_error_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        MetadataStore(url)
    message = str(info.value)
    assert message.startswith("KILN_DB_URL:")
    assert "secret" not in message
    assert "\n" not in message


def test_unreachable_postgresql_is_store_unavailable() -> None:
    store = MetadataStore("postgresql://postgres:hunter2@127.0.0.1:1/test")
    try:
        with pytest.raises(StoreUnavailable) as info, store.read():
            pass
        message = str(info.value)
        assert "127.0.0.1" in message
        assert "hunter2" not in message
        with pytest.raises(StoreUnavailable):
            store.upgrade()
        with pytest.raises(StoreUnavailable):
            store.current_revision()
        with pytest.raises(StoreUnavailable), store.write():
            pass
    finally:
        store.dispose()


def test_the_head_read_from_the_migration_files_is_alembics_head() -> None:
    """The store learns the packaged head without importing Alembic; it must agree."""
    from kiln.store import metadata_store

    assert metadata_store._head_revision() == head_revision()
    assert set(metadata_store._revisions()) == {
        s.revision for s in ScriptDirectory(str(MIGRATIONS)).walk_revisions()
    }
