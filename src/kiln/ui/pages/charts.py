"""Metric series for the charts, downsampled on the server and exact on zoom.

A run may log a metric 100,000 times; a chart 1,000 pixels wide shows at most that many
points. The series is cut into ``points / 2`` buckets by step and each bucket keeps its
lowest and highest value (in step order), so spikes survive; a zoomed range with fewer
steps than ``points`` comes back whole. numpy does the bucketing, never a Python loop over
the points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import kiln
from kiln.core import InvalidInput

MAX_POINTS = 2_000
DEFAULT_POINTS = 1_000


def downsample(steps: np.ndarray, values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` (step, value) pairs: each of ``points // 2`` buckets of equal
    step span keeps its minimum and maximum, in step order."""
    if steps.size <= points:
        return steps, values
    buckets = max(1, points // 2)
    edges = np.linspace(steps[0], steps[-1], buckets + 1)
    index = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, buckets - 1)
    order = np.lexsort((values, index))  # by bucket, then value
    starts = np.searchsorted(index[order], np.arange(buckets), side="left")
    ends = np.searchsorted(index[order], np.arange(buckets), side="right") - 1
    present = ends >= starts
    keep = np.unique(np.concatenate([order[starts[present]], order[ends[present]]]))
    return steps[keep], values[keep]


def _number(request: Request, name: str, default: float | None) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a number; got {text!r}") from None


def _series(run_id: str, key: str, request: Request) -> dict[str, Any]:
    low = _number(request, "from", None)
    high = _number(request, "to", None)
    series = kiln.runs.metric_series(run_id, key, min_step=low, max_step=high)
    steps, values = series.steps.astype(np.float64), series.values
    points = int(_number(request, "points", DEFAULT_POINTS) or DEFAULT_POINTS)
    if not 2 <= points <= MAX_POINTS:
        raise InvalidInput(f"points must be between 2 and {MAX_POINTS}; got {points}")
    total = int(steps.size)
    steps, values = downsample(steps, values, points)
    return {
        "run": run_id,
        "key": key,
        "total": total,
        "exact": int(steps.size) == total,
        "steps": steps.astype(np.int64).tolist(),
        "values": [None if not np.isfinite(v) else float(v) for v in values],
    }


async def metric_series(request: Request) -> Response:
    """``/api/runs/{run}/metrics/{key}?points=&from=&to=``: JSON steps and values."""
    data = await run_in_threadpool(
        _series, request.path_params["run_id"], request.path_params["key"], request
    )
    return JSONResponse(data)
