"""Registered models: every model with its aliases, one model's versions with flavors,
sizes, metrics and signatures and its aliases' full history, and one version's files,
environment and lineage graph (back to its run, the flow it ran in, its datasets and the
feature view versions they were built from).

Reads are ``kiln.models`` (``list_models``, ``get_model``, ``list_versions``,
``get_version``, ``alias_history``, ``lineage``) and ``kiln.deployments.list`` (which
deployments serve a model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

import kiln
from kiln.core import InvalidInput
from kiln.ui._render import page
from kiln.ui.pages.flowgraph import BOX_H, arrange

_LABEL = 24


def _served_by(name: str) -> dict[str, list[str]]:
    """Per deployment serving ``name``: the references it uses (model, challenger)."""
    out: dict[str, list[str]] = {}
    for d in kiln.deployments.list():
        refs = [d.model, d.traffic.challenger, d.fallback.model if d.fallback else None]
        mine = [r for r in refs if r and r.split("@")[0].split("/")[0] == name]
        if mine:
            out[d.name] = mine
    return out


def _models() -> dict[str, Any]:
    return {"models": kiln.models.list_models()}


async def models(request: Request) -> Response:
    context = await run_in_threadpool(_models)
    return page(request, "models.html", **context)


def _model(name: str) -> dict[str, Any]:
    record = kiln.models.get_model(name)  # NotFound names the models there are
    versions = kiln.models.list_versions(name)
    metric_keys = sorted({k for v in versions for k in v.metrics})
    return {
        "model": record,
        "versions": versions,
        "metric_keys": metric_keys,
        "history": list(reversed(kiln.models.alias_history(name))),
        "served_by": _served_by(name),
    }


async def model_page(request: Request) -> Response:
    context = await run_in_threadpool(_model, request.path_params["name"])
    return page(request, "model.html", **context)


@dataclass
class LineageBox:
    """A node of the lineage drawing, placed by :func:`flowgraph.arrange`."""

    name: str
    kind: str
    label: str
    detail: str
    href: str | None
    upstream: tuple[str, ...] = ()
    height: int = BOX_H
    x: float = 0.0
    y: float = 0.0

    @property
    def short(self) -> str:
        return self.label if len(self.label) <= _LABEL else self.label[: _LABEL - 1] + "…"


def _href(node: Any) -> str | None:
    if node.kind in ("run", "flow_step"):
        return f"/runs/{node.id}"
    if node.kind == "flow_run":
        return f"/flows/{node.id}"
    if node.kind == "feature_view" and node.attributes.get("view"):
        return f"/features/view/{node.attributes['view']}"
    return None


def _box(node: Any, upstream: list[str]) -> LineageBox:
    kind = node.kind.replace("_", " ")
    detail = kind
    if node.kind == "flow_step":
        detail = f"step {node.attributes.get('step', '')}"
    elif node.kind == "dataset" and node.attributes.get("rows") is not None:
        detail = f"dataset · {int(node.attributes['rows']):,} rows"
    elif node.kind == "code" and node.attributes.get("dirty"):
        detail = "code · uncommitted changes"
    return LineageBox(
        name=f"{node.kind}:{node.id}",
        kind=node.kind,
        label=node.label,
        detail=detail,
        href=_href(node),
        upstream=tuple(upstream),
    )


def lineage_drawing(found: Any) -> dict[str, Any]:
    """The lineage as boxes in columns, upstream on the left and the version on the
    right: feature view versions → datasets → the run (under the flow run it ran in)
    → the version, with the code commit beside the run."""
    boxes: dict[str, LineageBox] = {}

    def add(box: LineageBox) -> str:
        boxes.setdefault(box.name, box)
        return box.name

    inputs = []
    for node in found.inputs:
        ups = [add(_box(child, [])) for child in node.children]
        inputs.append(add(_box(node, ups)))
    above: list[str] = []
    for parent in reversed(found.parents):  # the outermost run first
        above = [add(_box(parent, above))]
    version_ups = []
    if found.run is not None:
        version_ups.append(add(_box(found.run, [*above, *inputs])))
    else:
        version_ups.extend(inputs)
    if found.code is not None:
        version_ups.append(add(_box(found.code, [])))
    v = found.version
    target = LineageBox(
        name=f"model_version:{v.id}",
        kind="model_version",
        label=v.ref,
        detail=f"{v.flavor} · {', '.join(v.aliases) or 'no alias'}",
        href=None,
        upstream=tuple(version_ups),
    )
    add(target)
    return arrange(list(boxes.values()))


def _version(name: str, number: str) -> dict[str, Any]:
    if not number.isdigit():
        raise InvalidInput(f"a model version is a whole number; got {number!r}")
    version = kiln.models.get_version(name, int(number))  # NotFound names the versions
    found = kiln.models.lineage(version)
    return {
        "v": version,
        "found": found,
        "drawing": lineage_drawing(found),
        "history": [
            e
            for e in reversed(kiln.models.alias_history(name))
            if version.version in (e.from_version, e.to_version)
        ],
        "served_by": _served_by(name),
    }


async def version_page(request: Request) -> Response:
    params = request.path_params
    context = await run_in_threadpool(_version, params["name"], str(params["version"]))
    return page(request, "model_version.html", **context)
