"""The global search box: runs, models, deployments, feature definitions and studies by
name (runs also by id).

Runs are searched by the database (a name containing the text, or the exact id); the
other kinds are few enough to filter by name in memory. Each kind shows at most
:data:`LIMIT` matches.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

import kiln
from kiln.core import NotFound
from kiln.ui._render import page

LIMIT = 20
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _found(text: str) -> dict[str, Any]:
    needle = text.lower()
    if not needle:
        return {"runs": [], "models": [], "deployments": [], "features": [], "studies": []}
    quoted = text.replace("'", "''")
    runs = kiln.runs.search(filter=f"attributes.name ILIKE '%{quoted}%'", limit=LIMIT)
    if _RUN_ID.match(needle):
        with contextlib.suppress(NotFound):  # an id-shaped name, not an id
            runs = [kiln.runs.get(needle), *runs]
    models = [m for m in kiln.models.list_models() if needle in m.name.lower()][:LIMIT]
    deployments = [d for d in kiln.deployments.list() if needle in d.name.lower()][:LIMIT]
    studies = [st for st in kiln.tuning.list_studies() if needle in st.name.lower()][:LIMIT]
    definitions = kiln.FeatureStore().list_definitions()
    latest: dict[tuple[str, str], Any] = {}
    for record in definitions:
        if needle in record.name.lower():
            key = (record.kind, record.name)
            if key not in latest or record.version > latest[key].version:
                latest[key] = record
    return {
        "runs": runs,
        "models": models,
        "deployments": deployments,
        "features": sorted(latest.values(), key=lambda r: (r.kind, r.name))[:LIMIT],
        "studies": studies,
    }


async def search(request: Request) -> Response:
    text = request.query_params.get("q", "").strip()
    found = await run_in_threadpool(_found, text)
    return page(request, "search.html", query=text, limit=LIMIT, **found)
