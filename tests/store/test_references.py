"""The references primitive on SQLite and PostgreSQL: holders, targets and their locks."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy as sa

from kiln.store import MetadataStore, open_metadata_store, references


@pytest.fixture
def store(db_url: str) -> MetadataStore:
    meta = open_metadata_store(db_url)
    meta.upgrade()
    return meta


def test_hold_replaces_what_a_holder_holds_and_returns_the_new_targets(
    store: MetadataStore,
) -> None:
    with store.write() as conn:
        assert references.hold(conn, "app:a", ["t:1", "t:2"]) == {"t:1", "t:2"}
        assert references.hold(conn, "app:b", ["t:2"]) == {"t:2"}
    with store.write() as conn:
        assert references.hold(conn, "app:a", ["t:2", "t:3"]) == {"t:3"}
        assert references.hold(conn, "app:a", ["t:2", "t:3"]) == frozenset()
    with store.read() as conn:
        assert references.held_by(conn, "app:a") == {"t:2", "t:3"}
        assert references.held_by(conn, "app:nobody") == frozenset()
    with store.write() as conn:
        assert references.holders_of(conn, ["t:1", "t:2", "t:3"]) == {
            "app:a": ("t:2", "t:3"),
            "app:b": ("t:2",),
        }
        assert references.holders_of(conn, ["t:1"]) == {}
        assert references.holders_of(conn, []) == {}
        references.hold(conn, "app:a", ())
    with store.write() as conn:
        assert references.holders_of(conn, ["t:2", "t:3"]) == {"app:b": ("t:2",)}


def test_a_rolled_back_hold_leaves_nothing(store: MetadataStore) -> None:
    with pytest.raises(RuntimeError), store.write() as conn:
        references.hold(conn, "app:a", ["t:1"])
        raise RuntimeError("the holder's own write failed")
    with store.write() as conn:
        assert references.holders_of(conn, ["t:1"]) == {}


def _blocked_until_commit(
    store: MetadataStore, first: str, second: str
) -> tuple[bool, dict[str, tuple[str, ...]] | frozenset[str]]:
    """Run ``first`` in an open transaction, then ``second`` in another thread.

    Returns whether ``second`` was still waiting while ``first`` was open, and what
    ``second`` got once ``first`` committed.
    """
    opened, release = threading.Event(), threading.Event()
    result: dict[str, object] = {}

    def run(step: str, conn: object) -> object:
        if step == "hold":
            return references.hold(conn, "app:a", ["t:1"])  # type: ignore[arg-type]
        return references.holders_of(conn, ["t:1"])  # type: ignore[arg-type]

    def first_txn() -> None:
        with store.write() as conn:
            run(first, conn)
            opened.set()
            release.wait(10)

    def second_txn() -> None:
        with store.write() as conn:
            result["value"] = run(second, conn)

    a = threading.Thread(target=first_txn)
    a.start()
    assert opened.wait(10)
    b = threading.Thread(target=second_txn)
    b.start()
    time.sleep(0.5)
    waiting = b.is_alive()
    release.set()
    a.join(10)
    b.join(10)
    return waiting, result["value"]  # type: ignore[return-value]


def test_a_check_waits_for_an_open_hold_and_then_sees_it(store: MetadataStore) -> None:
    waiting, holders = _blocked_until_commit(store, "hold", "check")
    assert waiting
    assert holders == {"app:a": ("t:1",)}


def test_a_hold_waits_for_an_open_check_until_the_deleter_commits(
    store: MetadataStore,
) -> None:
    waiting, added = _blocked_until_commit(store, "check", "hold")
    assert waiting
    # The holder went on after the deleter's transaction ended: it must check that its
    # targets exist now, which is what the returned new targets are for.
    assert added == {"t:1"}


def test_migration_backfills_the_references_of_stored_deployments(db_url: str) -> None:
    """A store at 0004 with deployments gets their references when upgraded to 0005."""
    from alembic import command

    from kiln.store.metadata_store import VERSION_TABLE, _alembic_config

    store = open_metadata_store(db_url)
    spec = {
        "model": "fraud@champion",
        "traffic": {"policy": "canary", "challenger": "fraud/4", "percent": 10.0},
        "fallback": {"model": "rules", "value": None},
    }
    with store._connect(write=True) as conn, conn.begin():
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        rows = [("api", json.dumps(spec)), ("plain", json.dumps({"model": "churn/latest"}))]
        for name, text in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO kiln_deployments (name, spec, revision, created_at, "
                    "updated_at, created_by) VALUES (:n, :s, 1, 0, 0, 'test')"
                ),
                {"n": name, "s": text},
            )
        version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        assert version == "0004"
    store.upgrade()
    with store.read() as conn:
        assert references.held_by(conn, "deployment:api") == {
            "model:fraud",
            "alias:fraud@champion",
            "version:fraud/4",
            "model:rules",
            "latest:rules",
        }
        assert references.held_by(conn, "deployment:plain") == {"model:churn", "latest:churn"}
