"""The feature store: entities, views and services with their versions, what each version
changed, sources, TTLs, fields, freshness and the stores in use.

Everything comes from ``kiln.FeatureStore`` (``list_definitions``, ``history``,
``materializations``) and ``kiln.get_settings()``. A definition's page has a stable URL,
``/features/{entity|view|service}/NAME``, and ``?version=N`` shows an earlier version as
it was applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import kiln
from kiln.core import InvalidInput, NotFound
from kiln.ui._render import page

# URL kind -> the definition kinds it covers (views share one namespace).
KINDS = {
    "entity": ("entity",),
    "view": ("feature_view", "windowed_view", "on_demand_view"),
    "service": ("feature_service",),
}
LABELS = {
    "entity": "entity",
    "feature_view": "feature view",
    "windowed_view": "windowed view",
    "on_demand_view": "on-demand view",
    "feature_service": "feature service",
}
_SETTINGS = (
    ("online store", "online_url"),
    ("offline store", "offline_dir"),
    ("metadata", "db_url"),
    ("artifacts", "artifact_uri"),
)


def url_kind(kind: str) -> str:
    """The URL segment of a definition kind: ``windowed_view`` -> ``view``."""
    return next(k for k, kinds in KINDS.items() if kind in kinds)


def source_text(spec: Mapping[str, Any] | None) -> str:
    """A source in one line: its type and where it reads (path, query or push)."""
    if not spec:
        return ""
    kind = spec.get("type", "?")
    if kind in ("parquet", "delta"):
        version = f" @ version {spec['version']}" if spec.get("version") is not None else ""
        return f"{kind}: {spec.get('path', '')}{version}"
    if kind == "sql":
        return f"sql over {', '.join(sorted(spec.get('sources', {})))}"
    return str(kind)


def _stores(fs: Any) -> list[tuple[str, str]]:
    shown = kiln.get_settings().describe()  # passwords in URLs are masked
    shown["offline_dir"] = str(fs.offline_dir)
    return [(label, shown.get(key, "")) for label, key in _SETTINGS]


def _freshness(fs: Any) -> dict[tuple[str, int], Any]:
    return {(m.view, m.version): m for m in fs.materializations()}


def _catalog() -> dict[str, Any]:
    fs = kiln.FeatureStore()
    records = fs.list_definitions()
    fresh = _freshness(fs)
    return {
        "entities": [r for r in records if r.kind == "entity"],
        "views": [
            (r, fresh.get((r.name, r.version))) for r in records if url_kind(r.kind) == "view"
        ],
        "services": [r for r in records if r.kind == "feature_service"],
        "stores": _stores(fs),
        "labels": LABELS,
        "source_text": source_text,
    }


async def features(request: Request) -> Response:
    return page(request, "features.html", **await run_in_threadpool(_catalog))


def _version(request: Request) -> int | None:
    text = request.query_params.get("version")
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"version must be a whole number >= 1; got {text!r}")
    return int(text)


def _used_by(records: list[Any], kind: str, name: str) -> list[Any]:
    """Definitions that refer to this one: views of an entity, services and on-demand
    views reading a view."""
    found = []
    for r in records:
        spec = r.spec
        if kind == "entity" and name in spec.get("entities", ()):
            found.append(r)
        elif kind == "view":
            refs = [*spec.get("features", ()), *spec.get("inputs", ())]
            if any(ref.partition(":")[0] == name for ref in refs):
                found.append(r)
    return found


def _definition(kind: str, name: str, wanted: int | None) -> dict[str, Any]:
    if kind not in KINDS:
        raise NotFound(f"no definition kind {kind!r}; kinds: {', '.join(KINDS)}")
    fs = kiln.FeatureStore()
    history = fs.history(name, kind=kind)  # NotFound with close matches
    by_version = {r.version: r for r in history}
    if wanted is not None and wanted not in by_version:
        raise NotFound(
            f"{kind} {name!r} has no version {wanted}; versions: "
            f"{', '.join(str(v) for v in by_version)}"
        )
    current = history[-1]
    shown = by_version[wanted] if wanted is not None else current
    versions = [(r, r.changes_from(history[i - 1] if i else None)) for i, r in enumerate(history)][
        ::-1
    ]
    fresh = fs.materializations(name) if kind == "view" else []
    return {
        "kind": kind,
        "name": name,
        "record": shown,
        "spec": shown.spec,
        "current": current,
        "versions": versions,
        "freshness": fresh,
        "used_by": _used_by(fs.list_definitions(), kind, name),
        "stores": _stores(fs) if kind == "view" else [],
        "labels": LABELS,
        "url_kind": url_kind,
        "source_text": source_text,
    }


async def feature_definition(request: Request) -> Response:
    kind, name = request.path_params["kind"], request.path_params["name"]
    if kind in LABELS and kind not in KINDS:  # a definition kind (search links use them)
        target = f"/features/{url_kind(kind)}/{quote(name)}"
        query = request.url.query
        return RedirectResponse(target + (f"?{query}" if query else ""), status_code=308)
    wanted = _version(request)
    context = await run_in_threadpool(_definition, kind, name, wanted)
    return page(request, "feature.html", **context)
