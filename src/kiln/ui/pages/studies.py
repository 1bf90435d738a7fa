"""Studies: every hyperparameter study with its trials by state and its best value; one
study's optimization history, parameter importances, parallel coordinates, Pareto front
(several objectives) and trials, each linking to its tracked run.

Reads are ``kiln.tuning`` (``study_summaries``, ``load_study``, ``Study.trials``,
``summary``, ``history``, ``importances``). A study's trials are read once per page and
handed to each of those, so every section shows the same moment of a running study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

import kiln
from kiln.core import InvalidInput
from kiln.ui._render import number, page
from kiln.ui.pages.parallel import parallel_axes

MAX_LINES = 1_000  # trials drawn in the parallel coordinates (the best ones)
SCATTER_W, SCATTER_H, SCATTER_PAD = 580, 340, 72


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"page must be a whole number >= 1; got {text!r}")
    return int(text)


def _is_number(value: Any) -> bool:
    """Whether a param's value is a number (right-aligned); a trial without it counts."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


async def studies(request: Request) -> Response:
    """Every study, newest first."""
    found = await run_in_threadpool(kiln.tuning.study_summaries)
    return page(request, "studies.html", studies=found)


def _history_chart(
    study: kiln.tuning.Study, trials: Sequence[kiln.tuning.TrialRecord], index: int
) -> dict[str, Any]:
    """One objective's values by trial number with the best so far (app.js
    ``series-chart``: the values as points, the best as a line)."""
    rows = study.history(objective=index, trials=trials)
    metric = study.config.metrics[index]
    return {
        "metric": metric,
        "direction": study.directions[index],
        "count": len(rows),
        "spec": {
            "x": [n for n, _, _ in rows],
            "xlabel": "trial",
            "ylabel": metric,
            "series": [
                {
                    "label": metric,
                    "values": [_finite(v) for _, v, _ in rows],
                    "points": True,
                    "line": False,
                },
                {"label": "best so far", "values": [_finite(b) for _, _, b in rows]},
            ],
        },
    }


def _importances(
    study: kiln.tuning.Study, trials: Sequence[kiln.tuning.TrialRecord]
) -> list[dict[str, Any]]:
    """Each objective's parameter importances, largest first."""
    return [
        {"metric": metric, "ranked": list(study.importances(objective=i, trials=trials).items())}
        for i, metric in enumerate(study.config.metrics)
    ]


def _described(t: kiln.tuning.TrialRecord, metrics: Sequence[str]) -> str:
    values = zip(metrics, t.values or (), strict=False)
    return f"trial {t.number}: " + ", ".join(f"{m}={number(v)}" for m, v in values)


def _signed(study: kiln.tuning.Study, values: Sequence[float]) -> float:
    """A trial's first objective as a score where lower is better."""
    return -values[0] if study.directions[0] == "maximize" else values[0]


def _parallel(
    study: kiln.tuning.Study, done: Sequence[kiln.tuning.TrialRecord]
) -> tuple[dict[str, Any], int]:
    """Completed trials over their params and objectives, colored by the first objective
    (the best :data:`MAX_LINES` when there are more)."""
    chosen = sorted(done, key=lambda t: _signed(study, t.values or (0.0,)))[:MAX_LINES]
    chosen.sort(key=lambda t: t.number)
    params = sorted({k for t in chosen for k in t.params})
    metrics = list(study.config.metrics)
    rows = [
        (
            _described(t, metrics),
            {**dict(t.params), **dict(zip(metrics, t.values or (), strict=False))},
        )
        for t in chosen
    ]
    scores = [_signed(study, t.values or (0.0,)) for t in chosen]
    return parallel_axes(rows, [*params, *metrics], scores=scores), len(chosen)


def _scale(values: Sequence[float], low_px: float, high_px: float) -> list[float]:
    low, high = min(values), max(values)
    if high == low:
        return [(low_px + high_px) / 2 for _ in values]
    return [low_px + (v - low) / (high - low) * (high_px - low_px) for v in values]


def _pareto(
    study: kiln.tuning.Study,
    done: Sequence[kiln.tuning.TrialRecord],
    front: Sequence[kiln.tuning.TrialRecord],
) -> dict[str, Any]:
    """The first two objectives as an SVG scatter: every completed trial a dot, the
    Pareto front's highlighted and joined."""
    shown = [t for t in done if t.values and all(math.isfinite(v) for v in t.values[:2])]
    if not shown:
        return {"points": [], "front_line": ""}
    xs = _scale([(t.values or ())[0] for t in shown], SCATTER_PAD, SCATTER_W - 16)
    ys = _scale([(t.values or ())[1] for t in shown], SCATTER_H - SCATTER_PAD, 16)
    on_front = {t.number for t in front}
    metrics = study.config.metrics
    points: list[dict[str, Any]] = [
        {"x": round(x, 1), "y": round(y, 1), "front": t.number in on_front,
         "title": _described(t, metrics)}
        for t, x, y in zip(shown, xs, ys, strict=True)
    ]  # fmt: skip
    points.sort(key=lambda p: p["front"])  # the front drawn on top
    joined = sorted((p["x"], p["y"]) for p in points if p["front"])
    firsts = [(t.values or ())[0] for t in shown]
    seconds = [(t.values or ())[1] for t in shown]
    return {
        "width": SCATTER_W,
        "height": SCATTER_H,
        "pad": SCATTER_PAD,
        "points": points,
        "front_line": " ".join(f"{x},{y}" for x, y in joined),
        "x": {"metric": metrics[0], "direction": study.directions[0],
              "low": min(firsts), "high": max(firsts)},
        "y": {"metric": metrics[1], "direction": study.directions[1],
              "low": min(seconds), "high": max(seconds)},
    }  # fmt: skip


def _study(name: str, page_number: int, size: int) -> dict[str, Any]:
    study = kiln.tuning.load_study(name)  # NotFound names the studies there are
    trials = study.trials
    summary = study.summary(trials=trials)
    done = [t for t in trials if t.state == "COMPLETE" and t.values]
    multi = len(study.directions) > 1
    axes, drawn = _parallel(study, done)
    start = (page_number - 1) * size
    keys = sorted({k for t in trials for k in t.params})
    return {
        "study": study,
        "summary": summary,
        "multi": multi,
        "completed": len(done),
        "histories": [_history_chart(study, trials, i) for i in range(len(study.directions))],
        "importances": _importances(study, trials),
        "axes": axes,
        "drawn": drawn,
        "pareto": _pareto(study, done, summary.front) if multi else None,
        "param_keys": keys,
        "numeric_params": {k for k in keys if all(_is_number(t.params.get(k)) for t in trials)},
        "trials": trials[start : start + size],
        "total": len(trials),
        "first": start + 1,
        "more": start + size < len(trials),
        "page_number": page_number,
    }


async def study_page(request: Request) -> Response:
    name = request.path_params["name"]
    page_number = _page_number(request)
    context = await run_in_threadpool(_study, name, page_number, request.app.state.ui.page_size)
    return page(request, "study.html", **context)
