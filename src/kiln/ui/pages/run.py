"""One run (params, tags, metric charts, artifacts with previews, environment, lineage)
and several side by side (overlaid curves, a diff table, parallel coordinates)."""

from __future__ import annotations

import csv
import io
import mimetypes
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

import kiln
from kiln.core import InvalidInput
from kiln.ui._render import page
from kiln.ui.pages.parallel import parallel_axes

PREVIEW_BYTES = 256 * 1024  # text shown inline up to this size
PREVIEW_ROWS = 50
MAX_COMPARE = 50
_TEXT = (".txt", ".log", ".json", ".yaml", ".yml", ".md", ".py", ".toml", ".cfg", ".ini")
_IMAGES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
_TABLES = (".csv", ".tsv", ".parquet")


def _run_data(run_id: str) -> dict[str, Any]:
    run = kiln.runs.get(run_id)
    artifacts = kiln.runs.list_artifacts(run_id)
    edges = kiln.lineage.edges("run", run_id)
    children = kiln.runs.children([run_id]).get(run_id, [])
    return {
        "run": run,
        "artifacts": [(a, _preview_kind(a.path)) for a in artifacts],
        "inputs": [e for e in edges if e.dst_kind == "run" and e.dst_id == run_id],
        "outputs": [e for e in edges if e.src_kind == "run" and e.src_id == run_id],
        "children": children,
        "metric_keys": sorted(run.metrics),
    }


def _preview_kind(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(_TEXT):
        return "text"
    if lower.endswith(_IMAGES):
        return "image"
    if lower.endswith(_TABLES):
        return "table"
    if lower.endswith((".html", ".htm")):
        return "html"
    return None


async def run_page(request: Request) -> Response:
    data = await run_in_threadpool(_run_data, request.path_params["run_id"])
    return page(request, "run.html", **data)


def _artifact(run_id: str, path: str) -> dict[str, Any]:
    kind = _preview_kind(path)
    listed = {a.path: a for a in kiln.runs.list_artifacts(run_id, path)}
    record = listed.get(path)
    if record is None:
        kiln.runs.read_artifact(run_id, path)  # NotFound naming the close matches
    size = record.size if record is not None else 0
    context: dict[str, Any] = {"run_id": run_id, "path": path, "kind": kind, "size": size}
    if kind == "text":
        data = kiln.runs.read_artifact(run_id, path)
        context["text"] = data[:PREVIEW_BYTES].decode("utf-8", errors="replace")
        context["cut"] = len(data) > PREVIEW_BYTES
    elif kind == "table":
        context["header"], context["rows"] = _table_preview(run_id, path)
    return context


def _table_preview(run_id: str, path: str) -> tuple[list[str], list[list[Any]]]:
    data = kiln.runs.read_artifact(run_id, path)
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.ParquetFile(io.BytesIO(data)).read_row_group(0).slice(0, PREVIEW_ROWS)
        return table.column_names, [list(row.values()) for row in table.to_pylist()]
    dialect = "excel-tab" if path.lower().endswith(".tsv") else "excel"
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")), dialect=dialect)
    rows = [row for _, row in zip(range(PREVIEW_ROWS + 1), reader, strict=False)]
    return (rows[0], rows[1:]) if rows else ([], [])


async def artifact_page(request: Request) -> Response:
    context = await run_in_threadpool(
        _artifact, request.path_params["run_id"], request.path_params["path"]
    )
    return page(request, "artifact.html", **context)


async def artifact_raw(request: Request) -> Response:
    """The file itself. HTML is served under a sandbox policy (no scripts, no same
    origin), so a logged report cannot act as the dashboard."""
    run_id, path = request.path_params["run_id"], request.path_params["path"]
    data = await run_in_threadpool(kiln.runs.read_artifact, run_id, path)
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; "
               "style-src 'unsafe-inline'"}  # fmt: skip
    if media.startswith("text/") and media != "text/html":
        media = "text/plain; charset=utf-8"
    if request.query_params.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{path.rsplit("/", 1)[-1]}"'
    return Response(data, media_type=media, headers=headers)


def _compare_data(ids: list[str]) -> dict[str, Any]:
    if not ids:
        raise InvalidInput("compare needs runs: /compare?run=ID&run=ID")
    if len(ids) > MAX_COMPARE:
        raise InvalidInput(f"compare takes at most {MAX_COMPARE} runs; got {len(ids)}")
    comparison = kiln.runs.compare(ids)
    rows = []
    for field, values in comparison.rows():
        differs = len({repr(v) for v in values}) > 1
        rows.append((field, values, differs))
    common = sorted(set.intersection(*(set(r.metrics) for r in comparison.runs)))
    return {
        "comparison": comparison,
        "rows": rows,
        "metric_keys": common,
        "axes": _parallel_axes(comparison),
    }


def _parallel_axes(comparison: Any) -> dict[str, Any]:
    """Parallel coordinates of the runs: one axis per param and metric they all have."""
    columns = [f"params.{k}" for k in comparison.param_keys]
    columns += [f"metrics.{k}" for k in comparison.metric_keys]
    rows = [
        (
            run.name,
            {
                **{f"params.{k}": v for k, v in run.params.items()},
                **{f"metrics.{k}": v for k, v in run.metrics.items()},
            },
        )
        for run in comparison.runs
    ]
    return parallel_axes(rows, columns)


async def compare(request: Request) -> Response:
    ids = request.query_params.getlist("run")
    data = await run_in_threadpool(_compare_data, ids)
    return page(request, "compare.html", **data)
