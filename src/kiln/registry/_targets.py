"""What a model reference holds in the store's references, and the refusal to delete it.

A reference such as ``fraud@champion`` holds ``model:fraud`` (so the model cannot be
deleted) and ``alias:fraud@champion`` (nor the alias); ``fraud/3`` holds
``version:fraud/3``; ``fraud`` (the latest version) holds ``latest:fraud``, so its newest
version cannot be deleted from under it. The strings are written by whoever uses a model
(:mod:`kiln.registry.usage`) and checked by the registry's delete verbs.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

from kiln.core import Conflict
from kiln.registry._names import ModelRef
from kiln.store import references

__all__ = [
    "alias_target",
    "latest_target",
    "model_target",
    "refuse_if_used",
    "targets_of",
    "version_target",
]


def model_target(name: str) -> str:
    return f"model:{name}"


def alias_target(name: str, alias: str) -> str:
    return f"alias:{name}@{alias}"


def version_target(name: str, version: int) -> str:
    return f"version:{name}/{version}"


def latest_target(name: str) -> str:
    return f"latest:{name}"


def targets_of(ref: ModelRef) -> tuple[str, str]:
    """The two targets a parsed reference holds: its model and what it names in it."""
    if ref.alias is not None:
        return model_target(ref.name), alias_target(ref.name, ref.alias)
    if ref.version is not None:
        return model_target(ref.name), version_target(ref.name, ref.version)
    return model_target(ref.name), latest_target(ref.name)


def _holder_words(holder: str) -> str:
    """``deployment:fraud-api`` reads ``deployment 'fraud-api'``; other strings as given."""
    kind, sep, name = holder.partition(":")
    return f"{kind} {name!r}" if sep and kind and name else repr(holder)


def _shown(target: str) -> str:
    kind, _, rest = target.partition(":")
    return f"{rest}/latest" if kind == "latest" else rest


def _uses(conn: Connection, holder: str) -> str:
    """The references a holder uses, as a user wrote them (``fraud@champion, fraud/4``)."""
    held = references.held_by(conn, holder)
    named = sorted(_shown(t) for t in held if not t.startswith("model:"))
    return ", ".join(named or sorted(_shown(t) for t in held))


def refuse_if_used(conn: Connection, subject: str, targets: Iterable[str]) -> None:
    """Conflict naming every holder of ``targets``; call in the deleting transaction.

    ``subject`` is what would be deleted (``model 'fraud'``). The targets are locked
    against new holders until the transaction ends, so the delete that follows is safe.
    """
    held = references.holders_of(conn, targets)
    if not held:
        return
    users = "; ".join(
        f"{_holder_words(holder)} (uses {_uses(conn, holder)})" for holder in sorted(held)
    )
    them = "it" if len(held) == 1 else "them"
    raise Conflict(f"cannot delete {subject}: in use by {users}; update or delete {them} first")
