"""References: rows of ``holder -> target`` that keep a target from being deleted.

A capability that depends on another's object records the dependency here, in the same
transaction as its own write; the owner of the target asks :func:`holders_of` in the
transaction that would delete it and refuses while someone holds it. Holders and targets
are the callers' strings (``"app:x"`` holds ``"thing:y"``); this module gives them no
meaning.

The check and the delete are race-free on both dialects. On SQLite every write
transaction is serialized (``BEGIN IMMEDIATE``). On PostgreSQL a holder takes a shared
transaction-level advisory lock per target before it writes its rows, and a deleter an
exclusive one before it reads the holders: whichever commits first, the other sees it.
A holder must therefore check that its new targets still exist *after* :func:`hold`
returns, in the same transaction. Locks are taken in one global order (by key), so
holders and deleters never wait on each other in a cycle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.store._schema import metadata

__all__ = ["held_by", "hold", "holders_of", "table"]

table = sa.Table(
    "kiln_references",
    metadata,
    sa.Column("holder", sa.String(256), primary_key=True),
    sa.Column("target", sa.String(256), primary_key=True),
    sa.Index("ix_kiln_references_target", "target"),
)


def _key(target: str) -> int:
    """A signed 64-bit advisory-lock key for ``target`` (a collision only serializes more)."""
    return int.from_bytes(
        hashlib.blake2b(target.encode(), digest_size=8).digest(), "big", signed=True
    )


def _lock(conn: Connection, targets: Iterable[str], *, shared: bool) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite write transactions are already serialized
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    for key in sorted({_key(t) for t in targets}):
        conn.execute(sa.text(f"SELECT {fn}(:key)"), {"key": key})


def held_by(conn: Connection, holder: str) -> frozenset[str]:
    """The targets ``holder`` holds now."""
    r = table.c
    return frozenset(conn.execute(sa.select(r.target).where(r.holder == holder)).scalars())


def hold(conn: Connection, holder: str, targets: Iterable[str]) -> frozenset[str]:
    """Make ``targets`` exactly what ``holder`` holds (none: it holds nothing any more).

    Returns the targets that are new to the holder: the ones whose existence the caller
    must check now, in this transaction (a concurrent delete may have removed them since
    the caller last looked).
    """
    wanted = frozenset(targets)
    _lock(conn, wanted, shared=True)
    current = held_by(conn, holder)
    r = table.c
    gone = current - wanted
    if gone:
        conn.execute(table.delete().where(r.holder == holder, r.target.in_(sorted(gone))))
    added = wanted - current
    if added:
        conn.execute(table.insert(), [{"holder": holder, "target": t} for t in sorted(added)])
    return added


def holders_of(conn: Connection, targets: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``{holder: targets it holds}`` among ``targets``, locking them against new holders.

    Call it in the write transaction that deletes the targets; the lock lasts until that
    transaction ends, so no holder can appear between the check and the delete.
    """
    wanted = sorted(set(targets))
    if not wanted:
        return {}
    _lock(conn, wanted, shared=False)
    r = table.c
    found: dict[str, list[str]] = {}
    rows = conn.execute(
        sa.select(r.holder, r.target).where(r.target.in_(wanted)).order_by(r.holder, r.target)
    )
    for holder, target in rows:
        found.setdefault(holder, []).append(target)
    return {h: tuple(ts) for h, ts in found.items()}
