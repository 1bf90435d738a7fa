"""Frozen records the registry returns. Later writes never change a record already read."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from kiln.registry.signature import Signature

__all__ = [
    "AliasEvent",
    "FileEntry",
    "LineageNode",
    "ModelLineage",
    "ModelVersion",
    "RegisteredModel",
]


def _frozen(data: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(data or {}))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file of a model package: its path inside the package, sha256 and size."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True, kw_only=True)
class RegisteredModel:
    name: str
    description: str
    tags: Mapping[str, str] = field(default_factory=_frozen)
    latest_version: int | None = None
    aliases: Mapping[str, int] = field(default_factory=_frozen)
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tags": dict(self.tags),
            "latest_version": self.latest_version,
            "aliases": dict(self.aliases),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    """One registered version: what it is, where its bytes are, and where it came from."""

    name: str
    version: int
    id: str
    flavor: str
    run_id: str | None
    digest: str
    files: tuple[FileEntry, ...]
    config: Mapping[str, Any]
    signature: Signature
    environment: Mapping[str, Any]
    metrics: Mapping[str, float]
    git_commit: str | None
    description: str
    tags: Mapping[str, str]
    size: int
    created_by: str
    created_at: datetime
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """The reference that loads exactly this version (``name/version``)."""
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "id": self.id,
            "flavor": self.flavor,
            "run_id": self.run_id,
            "digest": self.digest,
            "files": [{"path": f.path, "digest": f.digest, "size": f.size} for f in self.files],
            "config": dict(self.config),
            "signature": self.signature.to_dict(),
            "environment": dict(self.environment),
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "git_commit": self.git_commit,
            "description": self.description,
            "tags": dict(self.tags),
            "size": self.size,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True, kw_only=True)
class AliasEvent:
    """One move of an alias: ``action`` is ``set``, ``rollback`` or ``delete``."""

    id: int
    name: str
    alias: str
    action: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "alias": self.alias,
            "action": self.action,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "actor": self.actor,
            "reason": self.reason,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True, kw_only=True)
class LineageNode:
    """A node of a version's lineage graph: ``kind`` and ``id``, a label and attributes."""

    kind: str
    id: str
    label: str
    relation: str
    attributes: Mapping[str, Any] = field(default_factory=_frozen)
    children: tuple[LineageNode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "label": self.label,
            "relation": self.relation,
            "attributes": {k: _json_number(v) for k, v in self.attributes.items()},
            "children": [c.to_dict() for c in self.children],
        }


@dataclass(frozen=True, kw_only=True)
class ModelLineage:
    """What made a version: its run (params, metrics), data inputs, code commit, parents."""

    version: ModelVersion
    run: LineageNode | None
    params: Mapping[str, Any] = field(default_factory=_frozen)
    metrics: Mapping[str, float] = field(default_factory=_frozen)
    inputs: tuple[LineageNode, ...] = ()
    code: LineageNode | None = None
    parents: tuple[LineageNode, ...] = ()

    def nodes(self) -> tuple[LineageNode, ...]:
        """Every direct upstream node, for callers that want a flat list."""
        out = [n for n in (self.run, self.code) if n is not None]
        return (*out, *self.inputs, *self.parents)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": {"ref": self.version.ref, "id": self.version.id},
            "run": self.run.to_dict() if self.run else None,
            "params": dict(self.params),
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "inputs": [n.to_dict() for n in self.inputs],
            "code": self.code.to_dict() if self.code else None,
            "parents": [n.to_dict() for n in self.parents],
        }
