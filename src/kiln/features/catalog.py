"""The feature catalog: versioned definitions in the metadata store, with plan and apply.

``plan`` compares definitions with what is registered and says, per object, whether it
would be created, updated (with the fields that change) or left as it is. ``apply``
checks the whole batch first (references, name clashes, and each view's source against
its schema through ``check_source``) and then stores a new version of every changed
definition in one transaction, so a failed apply changes nothing. Every version stays
stored: ``history`` reads them back, and ``DefinitionRecord.changes_from`` says what
changed between two of them in the words ``plan`` uses.
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

    def changes_from(self, previous: DefinitionRecord | None) -> tuple[str, ...]:
        """What changed from ``previous`` (an earlier version) to this one, in the words
        ``plan`` uses: fields added, removed or retyped, TTL, source, and every other
        setting as ``old -> new``; empty for a first version (``previous`` None)."""
        if previous is None:
            return ()
        return tuple(_differences(previous.spec, self.spec))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "spec": dict(self.spec),
            "created_at": self.created_at.isoformat(),
        }


def _text(value: Any) -> str:
    return json.dumps(value, default=str)


def _named(items: Any) -> dict[str, Mapping[str, Any]] | None:
    """A list of named items (schema fields, aggregations, request sources) by name, or
    None for any other value."""
    if not isinstance(items, list) or not items:
        return None
    if not all(isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items):
        return None
    by_name = {i["name"]: i for i in items}
    return by_name if len(by_name) == len(items) else None


def _item(item: Mapping[str, Any]) -> str:
    if set(item) == {"name", "dtype"}:  # a field: "amount: float64"
        return f"{item['name']}: {item['dtype']}"
    return str(item["name"])


def _list_differences(key: str, old: Any, new: Any) -> list[str] | None:
    """Named items compared by name: added, removed, retyped or changed, reordered."""
    before, after = _named(old), _named(new)
    if (before is None and old not in (None, [])) or (after is None and new not in (None, [])):
        return None
    before, after = before or {}, after or {}
    out = [f"{key}: added {_item(after[n])}" for n in after if n not in before]
    out += [f"{key}: removed {_item(before[n])}" for n in before if n not in after]
    for name in (n for n in after if n in before and before[n] != after[n]):
        a, b = before[name], after[name]
        if set(a) == set(b) == {"name", "dtype"}:
            out.append(f"{key}: {name} retyped {a['dtype']} -> {b['dtype']}")
        else:
            out.extend(_differences(a, b, f"{key}[{name}]."))
    kept = [n for n in before if n in after]
    if not out and kept != [n for n in after if n in before]:
        out.append(
            f"{key}: order {', '.join(kept)} -> {', '.join(n for n in after if n in before)}"
        )
    return out


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_differences(a, b, f"{prefix}{key}."))
            continue
        listed = _list_differences(f"{prefix}{key}", a, b)
        if listed is not None:
            out.extend(listed)
        else:
            out.append(f"{prefix}{key}: {_text(a)} -> {_text(b)}")
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
        out = [_record(r) for r in rows.values() if kind is None or r.kind == kind]
        return sorted(out, key=lambda r: (r.kind, r.name))

    def load(self) -> tuple[dict[str, Definition], dict[str, int]]:
        """Every applied definition rebuilt from its latest stored version, and the versions."""
        with self.meta.read() as conn:
            rows = self._latest_rows(conn)
        versions = {r.name: int(r.version) for r in rows.values() if r.namespace == "view"}
        return _rebuild(rows.values()), versions

    def history(self, namespace: str, name: str) -> list[DefinitionRecord]:
        """Every stored version of ``name`` in ``namespace`` (entity, view, service),
        oldest first; NotFound (naming close matches) when none is applied."""
        d = t.feature_definitions.c
        with self.meta.read() as conn:
            rows = conn.execute(
                sa.select(t.feature_definitions)
                .where(d.namespace == namespace, d.name == name)
                .order_by(d.version)
            ).all()
            known = [] if rows else list(self._latest_rows(conn, namespace))
        if not rows:
            names = [n for _, n in known]
            raise NotFound(f"no {namespace} named {name!r} is applied{close_matches(name, names)}")
        return [_record(r) for r in rows]

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


def _record(row: Any) -> DefinitionRecord:
    return DefinitionRecord(
        kind=row.kind,
        name=row.name,
        version=row.version,
        digest=row.digest,
        spec=json.loads(row.spec),
        created_at=from_millis(row.created_at),
    )


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
