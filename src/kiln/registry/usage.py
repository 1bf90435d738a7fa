"""Who uses a model: holders that keep the models, versions and aliases they use alive.

A capability that depends on models (a deployment serves ``fraud@champion``, falls back
to ``fraud/2``) calls :func:`use_in` in the same write transaction as its own change, with
a holder string of its own (``deployment:fraud-api``). From then on
``kiln.models.delete_model``, ``delete_version`` and ``delete_alias`` refuse, with a
Conflict naming the holders, to delete what it uses, until it calls :func:`use_in` with
other references or :func:`release_in`. The registry never learns what a holder is.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

from kiln.registry._names import ModelRef, parse_ref
from kiln.registry._targets import targets_of
from kiln.registry.aliases import resolve_in
from kiln.store import references

__all__ = ["release_in", "use_in"]


def use_in(conn: Connection, holder: str, refs: Iterable[str | ModelRef]) -> None:
    """Record that ``holder`` uses exactly ``refs`` now (replacing what it used before).

    NotFound if a reference it did not use before no longer resolves: a concurrent delete
    may have won since the caller resolved it, and the check runs after the references
    are locked, so either the delete sees this holder or this call sees the delete.
    """
    wanted: dict[str, ModelRef] = {}
    for ref in refs:
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        for target in targets_of(parsed):
            wanted.setdefault(target, parsed)
    added = references.hold(conn, holder, wanted)
    for parsed in dict.fromkeys(wanted[target] for target in sorted(added)):
        resolve_in(conn, parsed)


def release_in(conn: Connection, holder: str) -> None:
    """``holder`` uses no model any more (a deleted deployment)."""
    references.hold(conn, holder, ())
