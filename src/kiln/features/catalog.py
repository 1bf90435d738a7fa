"""The feature catalog: versioned definitions in the metadata store, with plan and apply.

``plan`` compares definitions with what is registered and says, per object, whether it
would be created, updated (with the fields that change) or left as it is. ``apply``
checks the whole batch first (references, name clashes, and each view's source against
its schema through ``check_source``) and then stores a new version of every changed
definition in one transaction, so a failed apply changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kiln.core import Conflict, InvalidInput, NotFound, close_matches, from_millis, now_millis
from kiln.features import _tables as t
from kiln.features._specs import NAMESPACES, Definition, digest, from_spec, kind_of, payload_of
from kiln.features.definitions import (
    Entity,
    FeatureService,
    FeatureView,
    OnDemandFeatureView,
    WindowedFeatureView,
)
from kiln.store import MetadataStore

__all__ = ["Catalog", "Change", "DefinitionRecord", "Plan"]

View = FeatureView | WindowedFeatureView | OnDemandFeatureView


@dataclass(frozen=True, kw_only=True)
class Change:
    kind: str
    name: str
    action: str  # "create", "update" or "unchanged"
    version: int
    differences: tuple[str, ...] = ()
    inferred: tuple[str, ...] = ()  # "name: dtype" of fields read from the source's schema

    def __str__(self) -> str:
        head = {"create": "+", "update": "~", "unchanged": "="}[self.action]
        line = f"{head} {self.kind} {self.name} (version {self.version})"
        found = [f"    inferred {f}" for f in self.inferred]
        return "\n".join([line, *found, *(f"    {d}" for d in self.differences)])


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]

    @property
    def has_changes(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    def __str__(self) -> str:
        return "\n".join(str(c) for c in self.changes) or "nothing to apply"

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": c.kind,
                "name": c.name,
                "action": c.action,
                "version": c.version,
                "differences": list(c.differences),
                "inferred": list(c.inferred),
            }
            for c in self.changes
        ]


@dataclass(frozen=True, kw_only=True)
class DefinitionRecord:
    """A stored version of a definition: the spec as applied, and when."""

    kind: str
    name: str
    version: int
    digest: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "spec": dict(self.spec),
            "created_at": self.created_at.isoformat(),
        }


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        else:
            out.append(
                f"{prefix}{key}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}"
            )
    return out


class Catalog:
    """Definitions stored in one metadata store; ``check_source`` validates a view's data."""

    def __init__(
        self, meta: MetadataStore, check_source: Callable[[FeatureView | WindowedFeatureView], None]
    ) -> None:
        self.meta = meta
        self._check_source = check_source

    # -- reads ----------------------------------------------------------------------------

    def _latest_rows(self, conn: Any, namespace: str | None = None) -> dict[tuple[str, str], Any]:
        d = t.feature_definitions.c
        latest = (
            sa.select(d.namespace, d.name, sa.func.max(d.version).label("version"))
            .group_by(d.namespace, d.name)
            .subquery()
        )
        query = sa.select(t.feature_definitions).join(
            latest,
            (d.namespace == latest.c.namespace)
            & (d.name == latest.c.name)
            & (d.version == latest.c.version),
        )
        if namespace is not None:
            query = query.where(d.namespace == namespace)
        return {(r.namespace, r.name): r for r in conn.execute(query)}

    def records(self, kind: str | None = None) -> list[DefinitionRecord]:
        """The latest version of every definition (of one kind), by kind and name."""
        with self.meta.read() as conn:
            rows = self._latest_rows(conn)
        out = [
            DefinitionRecord(
                kind=r.kind,
                name=r.name,
                version=r.version,
                digest=r.digest,
                spec=json.loads(r.spec),
                created_at=from_millis(r.created_at),
            )
            for r in rows.values()
            if kind is None or r.kind == kind
        ]
        return sorted(out, key=lambda r: (r.kind, r.name))

    def load(self) -> tuple[dict[str, Definition], dict[str, int]]:
        """Every applied definition rebuilt from its latest stored version, and the versions."""
        with self.meta.read() as conn:
            rows = self._latest_rows(conn)
        versions = {r.name: int(r.version) for r in rows.values() if r.namespace == "view"}
        return _rebuild(rows.values()), versions

    def version_of(self, namespace: str, name: str) -> int:
        with self.meta.read() as conn:
            row = self._latest_rows(conn, namespace).get((namespace, name))
        if row is None:
            raise NotFound(f"no {namespace} named {name!r} is applied")
        return int(row.version)

    # -- plan and apply -------------------------------------------------------------------

    def plan(self, objects: Iterable[Any]) -> Plan:
        batch = _batch(objects)
        with self.meta.read() as conn:
            stored = self._latest_rows(conn)
        return Plan(tuple(_change(obj, stored) for obj in batch))

    def apply(self, objects: Iterable[Any]) -> Plan:
        batch = _batch(objects)
        with self.meta.read() as conn:
            stored = self._latest_rows(conn)
        known = {
            **_rebuild(stored.values()),
            **{o.name: o for o in batch if not isinstance(o, Entity)},
        }
        entities = {
            **{n: o for n, o in _rebuild(stored.values()).items() if isinstance(o, Entity)},
            **{o.name: o for o in batch if isinstance(o, Entity)},
        }
        for obj in batch:
            _check_references(obj, known, entities)
        changes = [_change(obj, stored) for obj in batch]
        for obj, change in zip(batch, changes, strict=True):
            if change.action != "unchanged" and isinstance(obj, FeatureView | WindowedFeatureView):
                self._check_source(obj)
        now = now_millis()
        with self.meta.write() as conn:
            for obj, change in zip(batch, changes, strict=True):
                if change.action == "unchanged":
                    continue
                spec = obj.spec()
                conn.execute(
                    t.feature_definitions.insert().values(
                        namespace=NAMESPACES[obj.kind],
                        name=obj.name,
                        version=change.version,
                        kind=obj.kind,
                        digest=digest(spec),
                        spec=json.dumps(spec, sort_keys=True, default=str),
                        payload=payload_of(obj),
                        created_at=now,
                    )
                )
        return Plan(tuple(changes))


def _batch(objects: Iterable[Any]) -> list[Definition]:
    if isinstance(
        objects, Entity | FeatureView | WindowedFeatureView | OnDemandFeatureView | FeatureService
    ):
        objects = [objects]
    batch = list(objects)
    seen: dict[tuple[str, str], Definition] = {}
    for obj in batch:
        key = (NAMESPACES[kind_of(obj)], obj.name)
        if key in seen and seen[key] != obj:
            raise Conflict(f"two different definitions named {obj.name!r} in one apply")
        seen[key] = obj
    return list(seen.values())


def _change(obj: Definition, stored: Mapping[tuple[str, str], Any]) -> Change:
    kind = obj.kind
    row = stored.get((NAMESPACES[kind], obj.name))
    spec = obj.spec()
    if row is None:
        return Change(kind=kind, name=obj.name, action="create", version=1)
    if row.kind != kind:
        raise Conflict(
            f"{obj.name!r} is already applied as a {row.kind.replace('_', ' ')}; a "
            f"{kind.replace('_', ' ')} cannot take its name (feature references 'view:feature' "
            "must name one view)"
        )
    if row.digest == digest(spec):
        return Change(kind=kind, name=obj.name, action="unchanged", version=row.version)
    diffs = tuple(_differences(json.loads(row.spec), json.loads(json.dumps(spec, default=str))))
    return Change(
        kind=kind, name=obj.name, action="update", version=row.version + 1, differences=diffs
    )


def _rebuild(rows: Iterable[Any]) -> dict[str, Definition]:
    rows = list(rows)
    entities: dict[str, Entity] = {}
    out: dict[str, Definition] = {}
    for r in rows:
        if r.kind == "entity":
            obj = from_spec(r.kind, json.loads(r.spec), r.payload, {})
            assert isinstance(obj, Entity)
            entities[r.name] = obj
            out[r.name] = obj
    for r in rows:
        if r.kind != "entity":
            out[r.name] = from_spec(r.kind, json.loads(r.spec), r.payload, entities)
    return out


def _feature_names(view: Definition) -> tuple[str, ...]:
    return tuple(getattr(view, "feature_names", ()))


def _check_ref(owner: str, ref: str, known: Mapping[str, Definition]) -> None:
    view_name, _, feature = ref.partition(":")
    view = known.get(view_name)
    if view is None or isinstance(view, Entity | FeatureService):
        views = [
            n
            for n, v in known.items()
            if isinstance(v, FeatureView | WindowedFeatureView | OnDemandFeatureView)
        ]
        raise InvalidInput(
            f"{owner} refers to unknown feature view {view_name!r}{close_matches(view_name, views)}"
        )
    names = _feature_names(view)
    if feature not in names:
        raise InvalidInput(
            f"{owner} refers to unknown feature {ref!r}; view {view_name!r} has: {', '.join(names)}"
        )


def _check_references(
    obj: Definition,
    known: Mapping[str, Definition],
    entities: Mapping[str, Entity],
) -> None:
    if isinstance(obj, FeatureView | WindowedFeatureView):
        for entity in obj.entities:
            if entity.name not in entities:
                raise InvalidInput(
                    f"{obj.kind.replace('_', ' ')} {obj.name!r} uses entity {entity.name!r}, which "
                    "is neither applied nor in this batch; apply the entity too"
                )
            if entities[entity.name] != entity:
                raise Conflict(
                    f"{obj.kind.replace('_', ' ')} {obj.name!r} uses entity {entity.name!r} with "
                    f"join keys {list(entity.join_keys)}, but the applied entity has "
                    f"{list(entities[entity.name].join_keys)}; apply the entity too"
                )
    elif isinstance(obj, OnDemandFeatureView):
        for ref in obj.inputs:
            _check_ref(f"on-demand view {obj.name!r}", ref, known)
    elif isinstance(obj, FeatureService):
        for ref in obj.features:
            _check_ref(f"feature service {obj.name!r}", ref, known)


def require_views(refs: Sequence[str], known: Mapping[str, Definition]) -> None:
    """InvalidInput for the first reference that names no applied view or feature."""
    for ref in refs:
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise InvalidInput(f"feature references look like 'view:feature'; got {ref!r}")
        _check_ref("the request", ref, known)
