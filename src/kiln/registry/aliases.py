"""Aliases: named pointers (``champion``, ``challenger``...) at one version each.

Every move is an event in the alias history (from, to, when, who, why). The history is
also what :func:`rollback` walks: replaying it gives the stack of targets the alias has
had, a ``set`` pushes, a ``rollback`` pops, a ``delete`` clears; rolling back moves the
alias to the target below the current one, so rolling back twice goes two steps back.
Versions deleted since are skipped.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.core import Conflict, NotFound, close_matches, from_millis, now_millis
from kiln.registry import _tables as t
from kiln.registry._names import ModelRef, check_alias, check_model_name, check_version, parse_ref
from kiln.registry._targets import alias_target, refuse_if_used
from kiln.registry.records import AliasEvent, ModelVersion
from kiln.registry.versions import (
    _actor,
    _text,
    _version_record,
    _version_row,
    model_exists,
    version_record,
)
from kiln.store import MetadataStore
from kiln.tracking import TrackingClient, default_client

__all__ = [
    "alias_history",
    "delete_alias",
    "resolve",
    "resolve_in",
    "rollback",
    "set_alias",
    "set_alias_in",
]

SET, ROLLBACK, DELETE = "set", "rollback", "delete"


def _current(conn: Connection, name: str, alias: str) -> int | None:
    a = t.model_aliases.c
    found = conn.execute(
        sa.select(a.version).where(a.name == name, a.alias == alias)
    ).scalar_one_or_none()
    return int(found) if found is not None else None


def _known_aliases(conn: Connection, name: str) -> list[str]:
    a = t.model_aliases.c
    return list(conn.execute(sa.select(a.alias).where(a.name == name)).scalars())


def _move(
    conn: Connection,
    *,
    name: str,
    alias: str,
    action: str,
    old: int | None,
    new: int | None,
    actor: str | None,
    reason: str | None,
) -> AliasEvent:
    now = now_millis()
    a = t.model_aliases.c
    if new is None:
        conn.execute(t.model_aliases.delete().where(a.name == name, a.alias == alias))
    elif old is None:
        conn.execute(
            t.model_aliases.insert().values(name=name, alias=alias, version=new, updated_at=now)
        )
    else:
        conn.execute(
            t.model_aliases.update()
            .where(a.name == name, a.alias == alias)
            .values(version=new, updated_at=now)
        )
    who = _text(actor, "actor") or _actor()
    why = _text(reason, "reason")
    event_id = conn.execute(
        t.alias_events.insert()
        .values(
            name=name,
            alias=alias,
            action=action,
            from_version=old,
            to_version=new,
            actor=who,
            reason=why,
            created_at=now,
        )
        .returning(t.alias_events.c.id)
    ).scalar_one()
    return AliasEvent(
        id=int(event_id),
        name=name,
        alias=alias,
        action=action,
        from_version=old,
        to_version=new,
        actor=who,
        reason=why,
        created_at=from_millis(now),
    )


def set_alias(
    name: str,
    alias: str,
    version: int | str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    client: TrackingClient | None = None,
) -> AliasEvent:
    """Point ``alias`` at ``version`` (promotion); the move is recorded in the history.

    Setting an alias to the version it already points at records nothing and returns the
    event that put it there.
    """
    with (client or default_client()).meta.write() as conn:
        return set_alias_in(conn, name, alias, version, reason=reason, actor=actor)


def set_alias_in(
    conn: Connection,
    name: str,
    alias: str,
    version: int | str,
    *,
    reason: str | None = None,
    actor: str | None = None,
) -> AliasEvent:
    """:func:`set_alias` inside the caller's write transaction.

    For a capability whose own change must commit together with the alias move (a
    deployment's promotion moves ``fraud@champion`` in the same transaction).
    """
    name, alias, number = check_model_name(name), check_alias(alias), check_version(version)
    # NotFound naming the versions there are; the row stays locked so a concurrent
    # delete of that version cannot leave the alias pointing at nothing.
    _version_row(conn, name, number, lock=True)
    old = _current(conn, name, alias)
    if old == number:
        return _history(conn, name, alias)[-1]
    return _move(
        conn,
        name=name,
        alias=alias,
        action=SET,
        old=old,
        new=number,
        actor=actor,
        reason=reason,
    )


def delete_alias(
    name: str,
    alias: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    client: TrackingClient | None = None,
) -> AliasEvent:
    """Remove ``alias``; refused while anything (a deployment) follows it."""
    name, alias = check_model_name(name), check_alias(alias)
    with (client or default_client()).meta.write() as conn:
        old = _require_alias(conn, name, alias)
        refuse_if_used(conn, f"alias {name}@{alias}", [alias_target(name, alias)])
        return _move(
            conn,
            name=name,
            alias=alias,
            action=DELETE,
            old=old,
            new=None,
            actor=actor,
            reason=reason,
        )


def rollback(
    name: str,
    alias: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    client: TrackingClient | None = None,
) -> AliasEvent:
    """Move ``alias`` back to the target it had before its current one."""
    name, alias = check_model_name(name), check_alias(alias)
    with (client or default_client()).meta.write() as conn:
        current = _require_alias(conn, name, alias)
        stack = _target_stack(_history(conn, name, alias))
        mv = t.model_versions.c
        alive = set(conn.execute(sa.select(mv.version).where(mv.name == name)).scalars())
        stack.pop()  # the current target
        while stack and stack[-1] not in alive:
            stack.pop()
        if not stack:
            raise Conflict(
                f"alias {alias!r} of model {name!r} has no earlier target to roll back to "
                f"(it points at version {current} and its history holds no earlier version "
                "that still exists)"
            )
        return _move(
            conn,
            name=name,
            alias=alias,
            action=ROLLBACK,
            old=current,
            new=stack[-1],
            actor=actor,
            reason=reason,
        )


def _target_stack(events: list[AliasEvent]) -> list[int]:
    stack: list[int] = []
    for event in events:
        if event.action == SET and event.to_version is not None:
            stack.append(event.to_version)
        elif event.action == ROLLBACK:
            while stack and stack[-1] != event.to_version:
                stack.pop()
        elif event.action == DELETE:
            stack.clear()
    return stack


def _require_alias(conn: Connection, name: str, alias: str) -> int:
    current = _current(conn, name, alias)
    if current is None:
        model_exists(conn, name)
        raise NotFound(
            f"model {name!r} has no alias {alias!r}"
            f"{close_matches(alias, _known_aliases(conn, name))}"
        )
    return current


def _history(conn: Connection, name: str, alias: str | None) -> list[AliasEvent]:
    e = t.alias_events.c
    query = sa.select(t.alias_events).where(e.name == name)
    if alias is not None:
        query = query.where(e.alias == alias)
    return [
        AliasEvent(
            id=r.id,
            name=r.name,
            alias=r.alias,
            action=r.action,
            from_version=r.from_version,
            to_version=r.to_version,
            actor=r.actor,
            reason=r.reason,
            created_at=from_millis(r.created_at),
        )
        for r in conn.execute(query.order_by(e.id))
    ]


def alias_history(
    name: str, alias: str | None = None, *, client: TrackingClient | None = None
) -> list[AliasEvent]:
    """Every move of ``alias`` (or of all the model's aliases), oldest first."""
    name = check_model_name(name)
    if alias is not None:
        alias = check_alias(alias)
    with (client or default_client()).meta.read() as conn:
        model_exists(conn, name)
        events = _history(conn, name, alias)
        if alias is not None and not events:
            known = {e.alias for e in _history(conn, name, None)}
            raise NotFound(
                f"model {name!r} has no alias {alias!r} and never had one"
                f"{close_matches(alias, known)}"
            )
        return events


_VERSION_COLUMNS = tuple(c.name for c in t.model_versions.columns)


@cache
def _resolve_sql(kind: str, placeholder: str) -> str:
    cols = ", ".join(f"v.{c}" for c in _VERSION_COLUMNS)
    p = placeholder
    if kind == "alias":
        return (
            f"SELECT {cols} FROM kiln_model_aliases a JOIN kiln_model_versions v "
            f"ON v.name = a.name AND v.version = a.version WHERE a.name = {p} AND a.alias = {p}"
        )
    if kind == "version":
        return f"SELECT {cols} FROM kiln_model_versions v WHERE v.name = {p} AND v.version = {p}"
    if kind == "latest":
        return (
            f"SELECT {cols} FROM kiln_model_versions v WHERE v.name = {p} "
            "ORDER BY v.version DESC LIMIT 1"
        )
    return f"SELECT alias FROM kiln_model_aliases WHERE name = {p} AND version = {p} ORDER BY alias"


def _resolve_fast(meta: MetadataStore, ref: ModelRef) -> ModelVersion | None:
    """The common case on a raw cursor (load resolves on every call); None if not found."""
    params: tuple[str | int, ...]
    if ref.alias is not None:
        kind, params = "alias", (ref.name, ref.alias)
    elif ref.version is not None:
        kind, params = "version", (ref.name, ref.version)
    else:
        kind, params = "latest", (ref.name,)
    with meta.read_cursor() as cursor:
        cursor.execute(_resolve_sql(kind, meta.placeholder), params)
        row = cursor.fetchone()
        if row is None:
            return None
        found = SimpleNamespace(**dict(zip(_VERSION_COLUMNS, row, strict=True)))
        cursor.execute(_resolve_sql("aliases", meta.placeholder), (found.name, found.version))
        aliases = tuple(r[0] for r in cursor.fetchall())
    return version_record(found, aliases)


def resolve(ref: str | ModelRef, *, client: TrackingClient | None = None) -> ModelVersion:
    """The version ``ref`` names now: ``name/3``, ``name@champion`` or ``name`` (latest)."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    meta = (client or default_client()).meta
    found = _resolve_fast(meta, parsed)
    if found is not None:
        return found
    # Not found: the slower path says precisely what is missing.
    with meta.read() as conn:
        return resolve_in(conn, parsed)


def resolve_in(conn: Connection, ref: str | ModelRef) -> ModelVersion:
    """:func:`resolve` inside the caller's transaction, NotFound saying what is missing."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    mv, a = t.model_versions.c, t.model_aliases.c
    if parsed.alias is not None:
        row = conn.execute(
            sa.select(t.model_versions)
            .join(t.model_aliases, (a.name == mv.name) & (a.version == mv.version))
            .where(a.name == parsed.name, a.alias == parsed.alias)
        ).first()
        if row is None:
            _require_alias(conn, parsed.name, parsed.alias)
            raise NotFound(f"alias {parsed} points at a version that no longer exists")
        return _version_record(conn, row)
    if parsed.version is not None:
        return _version_record(conn, _version_row(conn, parsed.name, parsed.version))
    row = conn.execute(
        sa.select(t.model_versions)
        .where(mv.name == parsed.name)
        .order_by(mv.version.desc())
        .limit(1)
    ).first()
    if row is None:
        model_exists(conn, parsed.name)
        raise NotFound(f"model {parsed.name!r} has no versions")
    return _version_record(conn, row)
