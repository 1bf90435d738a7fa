"""Definitions to and from their stored form: spec JSON, plus a pickled on-demand function.

A fresh process (a server, a notebook) rebuilds every applied definition from the metadata
store, so what serves online is exactly what was applied, not whatever code happens to be
imported there.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from kiln.core import InvalidInput
from kiln.features.definitions import (
    Aggregation,
    DeltaSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    ParquetSource,
    PushSource,
    RequestSource,
    Source,
    SQLSource,
    WindowedFeatureView,
    parse_duration,
)

Definition = Entity | FeatureView | WindowedFeatureView | OnDemandFeatureView | FeatureService

# Views share one namespace: a feature reference "view:feature" must name one view.
NAMESPACES = {
    "entity": "entity",
    "feature_view": "view",
    "windowed_view": "view",
    "on_demand_view": "view",
    "feature_service": "service",
}


def kind_of(obj: Any) -> str:
    kind = getattr(obj, "kind", None)
    if not isinstance(kind, str) or kind not in NAMESPACES:
        raise InvalidInput(
            "apply takes kiln.Entity, FeatureView, WindowedFeatureView, OnDemandFeatureView "
            f"and FeatureService objects; got {obj!r}"
        )
    return kind


def digest(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def payload_of(obj: Definition) -> str | None:
    if isinstance(obj, OnDemandFeatureView):
        import cloudpickle

        return base64.b64encode(cloudpickle.dumps(obj.function)).decode("ascii")
    return None


def _fields(items: list[Mapping[str, Any]]) -> list[Field]:
    return [Field(f["name"], f["dtype"]) for f in items]


def _ttl(text: str | None) -> timedelta | None:
    return parse_duration(text) if text else None


def source_from_spec(spec: Mapping[str, Any]) -> Source:
    kind = spec["type"]
    times = {"timestamp": spec["timestamp"], "created": spec.get("created")}
    if kind == "parquet":
        return ParquetSource(spec["path"], **times)
    if kind == "delta":
        return DeltaSource(spec["path"], version=spec.get("version"), **times)
    if kind == "sql":
        subs = {k: source_from_spec(v) for k, v in spec["sources"].items()}
        return SQLSource(spec["query"], sources=subs, **times)  # type: ignore[arg-type]
    if kind == "push":
        return PushSource(**times)
    raise InvalidInput(f"unknown source type {kind!r} in a stored definition")


def from_spec(
    kind: str, spec: Mapping[str, Any], payload: str | None, entities: Mapping[str, Entity]
) -> Definition:
    """Rebuild a definition; ``entities`` resolves the entity names views refer to."""
    if kind == "entity":
        return Entity(spec["name"], spec["join_keys"], description=spec.get("description", ""))
    if kind == "feature_service":
        return FeatureService(
            spec["name"], features=spec["features"], description=spec.get("description", "")
        )
    if kind == "on_demand_view":
        import cloudpickle

        if payload is None:
            raise InvalidInput(f"on-demand view {spec['name']!r} was stored without its function")
        function = cloudpickle.loads(base64.b64decode(payload))
        return OnDemandFeatureView(
            spec["name"],
            schema=_fields(spec["schema"]),
            function=function,
            sources=[RequestSource(s["name"], _fields(s["schema"])) for s in spec["sources"]],
            inputs=spec["inputs"],
            description=spec.get("description", ""),
        )
    ents = [entities[name] for name in spec["entities"]]
    source = source_from_spec(spec["source"])
    if kind == "feature_view":
        return FeatureView(
            spec["name"],
            entities=ents,
            source=source,
            schema=_fields(spec["schema"]) or None,
            ttl=_ttl(spec.get("ttl")),
            tags=spec.get("tags"),
            transformation=spec.get("transformation"),
            online=spec.get("online", True),
            description=spec.get("description", ""),
            key_types=spec.get("key_types"),
            checks=spec.get("checks"),
        )
    if kind == "windowed_view":
        return WindowedFeatureView(
            spec["name"],
            entities=ents,
            source=source,
            aggregations=[
                Aggregation(a["column"], a["function"], a["window"], name=a["name"])
                for a in spec["aggregations"]
            ],
            tags=spec.get("tags"),
            description=spec.get("description", ""),
            key_types=spec.get("key_types"),
        )
    raise InvalidInput(f"unknown definition kind {kind!r} in the metadata store")
