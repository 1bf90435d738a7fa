"""The home page and the list of experiments."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

import kiln
from kiln.ui._render import page

RECENT = 10


def _home_data() -> dict[str, Any]:
    return {
        "experiments": kiln.experiments.list(),
        "recent": kiln.runs.search(limit=RECENT),
        "models": kiln.models.list_models(),
        "deployments": kiln.deployments.list(),
        "studies": kiln.tuning.list_studies()[:RECENT],  # no trials read: /studies counts them
    }


async def home(request: Request) -> Response:
    """Experiments (each linking to its runs), the newest runs, models, deployments and
    the newest studies."""
    return page(request, "home.html", **await run_in_threadpool(_home_data))


async def experiments(request: Request) -> Response:
    found = await run_in_threadpool(kiln.experiments.list)
    return page(request, "experiments.html", experiments=found)
