"""Monitoring: every deployment's drift verdicts and alerts, and one deployment's drift over
time, histograms, skew, live quality and alert events.

Reads are ``kiln.monitoring`` (``history``, ``report``, ``drift``, ``quality``, ``skew``,
``events``, ``get_event``) and ``kiln.deployments``. Every page takes ``?window=`` (one of
:data:`WINDOWS`): the span of traffic judged and of evaluations drawn, ending now, so a
link shows the same view to whoever opens it. Skew recomputes a sample of the served
features offline, so it has a page of its own, computed when asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

import kiln
from kiln.core import InvalidInput, NotFound
from kiln.ui._render import page

# window -> (its span, the buckets live quality is cut into)
WINDOWS = {
    "1h": (timedelta(hours=1), "10m"),
    "6h": (timedelta(hours=6), "1h"),
    "1d": (timedelta(days=1), "1h"),
    "7d": (timedelta(days=7), "1d"),
    "30d": (timedelta(days=30), "1d"),
}
DEFAULT_WINDOW = "1d"
HISTORY_LIMIT = 50_000  # the newest values drawn; an older rest is said to be left out
EVENTS_SHOWN = 50
# the order charts come in; metrics not listed follow by name
FEATURE_METRICS = (
    "drift",
    "psi",
    "ks",
    "wasserstein",
    "chi2",
    "jensenshannon",
    "missing_rate",
    "skew_rate",
)
MODEL_METRICS = ("share_drifted", "auc", "accuracy", "precision", "recall", "log_loss")
QUALITY_FIGURES = ("auc", "log_loss", "accuracy", "precision", "recall", "calibration_error")


def window_of(request: Request) -> str:
    """The ``?window=`` asked for (default 1d); anything else is a 400 naming the choices."""
    window = request.query_params.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise InvalidInput(f"window must be one of {', '.join(WINDOWS)}; got {window!r}")
    return window


def _span(window: str) -> tuple[datetime, datetime]:
    until = datetime.now(UTC)
    return until - WINDOWS[window][0], until


def arm_label(version: int | None, arm: str | None) -> str:
    if version is None and arm is None:
        return "deployment"
    return " ".join(p for p in (f"v{version}" if version is not None else None, arm) if p)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(order)), n))


def series_chart(values: Sequence[kiln.monitoring.MonitorValue], ylabel: str) -> dict[str, Any]:
    """The values of one metric as a time chart (app.js ``series-chart``): one series per
    version and arm, on the union of their evaluation times, gaps where one has none."""
    times = sorted({v.evaluated_at for v in values})
    index = {t: i for i, t in enumerate(times)}
    lanes: dict[tuple[int | None, str | None], list[float | None]] = {}
    for v in values:
        lane = lanes.setdefault((v.version, v.arm), [None] * len(times))
        lane[index[v.evaluated_at]] = _finite(v.value)
    return {
        "x": [t.timestamp() for t in times],
        "time": True,
        "points": True,
        "xlabel": "evaluated",
        "ylabel": ylabel,
        "series": [
            {"label": arm_label(version, arm), "values": lane}
            for (version, arm), lane in sorted(lanes.items(), key=lambda kv: _lane_key(kv[0]))
        ],
    }


def _lane_key(key: tuple[int | None, str | None]) -> tuple[int, str]:
    return (key[0] if key[0] is not None else -1, key[1] or "")


# -- every deployment --------------------------------------------------------------------------


def _verdicts(name: str, window: str) -> tuple[list[dict[str, Any]], str | None]:
    """Per version and arm, what drift says of the window's traffic, or why it cannot."""
    try:
        served = kiln.monitoring.drift(name, window=window)
    except (NotFound, InvalidInput) as exc:
        return [], str(exc)
    return [
        {
            "label": arm_label(version, arm),
            "drifted": result.drifted,
            "columns": len(result.columns),
        }
        for (version, arm), result in sorted(served.results.items())
    ], None


def _overview(window: str) -> dict[str, Any]:
    firing: dict[str, int] = {}
    for event in kiln.monitoring.events(status="firing", limit=10_000):
        firing[event.deployment] = firing.get(event.deployment, 0) + 1
    rows = []
    for d in kiln.deployments.list():
        last = kiln.monitoring.history(d.name, limit=1)
        verdicts, note = _verdicts(d.name, window)
        rows.append(
            {
                "d": d,
                "last": last[0].evaluated_at if last else None,
                "verdicts": verdicts,
                "note": note,
                "firing": firing.get(d.name, 0),
            }
        )
    return {
        "rows": rows,
        "events": kiln.monitoring.events(limit=EVENTS_SHOWN),
        "window": window,
        "windows": list(WINDOWS),
        "label": arm_label,
    }


async def monitoring(request: Request) -> Response:
    window = window_of(request)
    return page(request, "monitoring.html", **await run_in_threadpool(_overview, window))


# -- one deployment ----------------------------------------------------------------------------


def _report(name: str, window: str) -> tuple[Any, str | None]:
    try:
        return kiln.monitoring.report(name, window=window), None
    except (NotFound, InvalidInput) as exc:  # nothing served, no reference profile
        return None, str(exc)


def _quality(name: str, window: str) -> tuple[Any, str | None]:
    since, until = _span(window)
    try:
        found = kiln.monitoring.quality(name, window=WINDOWS[window][1], since=since, until=until)
    except (NotFound, InvalidInput) as exc:  # no predictions or labels, no score
        return None, str(exc)
    return found, None


def _quality_chart(found: Any, figure: str) -> dict[str, Any]:
    starts = sorted({r.window_start for r in found.rows if r.window_start is not None})
    index = {t: i for i, t in enumerate(starts)}
    lanes: dict[tuple[int, str], list[float | None]] = {}
    for r in found.rows:
        if r.window_start is None:
            continue
        lane = lanes.setdefault((r.version, r.arm), [None] * len(starts))
        lane[index[r.window_start]] = _finite(getattr(r, figure))
    return {
        "x": [t.timestamp() for t in starts],
        "time": True,
        "points": True,
        "xlabel": "window start",
        "ylabel": figure,
        "series": [
            {"label": arm_label(v, a), "values": lane} for (v, a), lane in sorted(lanes.items())
        ],
    }


def _feature_sections(report: Any, values: Sequence[Any]) -> list[dict[str, Any]]:
    """Per feature: its histograms in the window (one per version and arm) and a chart per
    metric evaluated over time."""
    names: list[str] = []
    drawings: dict[str, list[dict[str, Any]]] = {}
    if report is not None:
        for arm in report.arms:
            for column in arm.columns:
                if column.column not in drawings:
                    names.append(column.column)
                # Built by kiln.monitoring from escaped parts (every name, category and
                # label in it is escaped), the drawing the HTML report shows.
                drawings.setdefault(column.column, []).append(
                    {
                        "label": arm_label(arm.version, arm.arm),
                        "c": column,
                        "svg": Markup(column.to_html()),
                    }
                )
    by_feature: dict[str, dict[str, list[Any]]] = {}
    for v in values:
        if v.feature is not None:
            by_feature.setdefault(v.feature, {}).setdefault(v.metric, []).append(v)
    names += sorted(f for f in by_feature if f not in drawings)
    sections = []
    for i, name in enumerate(names):
        metrics = by_feature.get(name, {})
        sections.append(
            {
                "name": name,
                "anchor": f"feature-{i}",
                "drawings": drawings.get(name, []),
                "drifted": [d["label"] for d in drawings.get(name, []) if d["c"].drift.drifted],
                "charts": [
                    {"metric": m, "points": len(metrics[m]), "spec": series_chart(metrics[m], m)}
                    for m in _ordered(metrics, FEATURE_METRICS)
                ],
            }
        )
    return sections


def _latest(values: Sequence[Any], metric: str) -> list[Any]:
    """The values of ``metric`` from the newest evaluation that measured it."""
    found = [v for v in values if v.metric == metric]
    if not found:
        return []
    newest = max(v.evaluated_at for v in found)
    return [v for v in found if v.evaluated_at == newest]


def _deployment(name: str, window: str) -> dict[str, Any]:
    d = kiln.deployments.get(name)  # NotFound names the deployments there are
    since, until = _span(window)
    values = kiln.monitoring.history(name, since=since, limit=HISTORY_LIMIT)
    report, report_note = _report(name, window)
    buckets, quality_note = _quality(name, window)
    model_values: dict[str, list[Any]] = {}
    for v in values:
        if v.feature is None:
            model_values.setdefault(v.metric, []).append(v)
    return {
        "d": d,
        "window": window,
        "windows": list(WINDOWS),
        "bucket": WINDOWS[window][1],
        "since": since,
        "until": until,
        "report": report,
        "report_note": report_note,
        "features": _feature_sections(report, values),
        "model_charts": [
            {"metric": m, "points": len(model_values[m]), "spec": series_chart(model_values[m], m)}
            for m in _ordered(model_values, MODEL_METRICS)
        ],
        "evaluations": len({v.evaluated_at for v in values}),
        "values_cut": len(values) >= HISTORY_LIMIT,
        "skew": _latest(values, "skew_rate"),
        "online_features": bool(d.features or d.service),
        "quality": report.quality if report is not None else None,
        "quality_note": (report.quality_note if report is not None else report_note),
        "buckets": buckets,
        "bucket_note": quality_note,
        "quality_charts": (
            [_quality_chart(buckets, f) for f in ("accuracy", "auc")] if buckets else []
        ),
        "figures": QUALITY_FIGURES,
        "events": kiln.monitoring.events(name, limit=EVENTS_SHOWN),
        "label": arm_label,
    }


async def monitoring_deployment(request: Request) -> Response:
    name = request.path_params["name"]
    window = window_of(request)
    context = await run_in_threadpool(_deployment, name, window)
    return page(request, "monitoring_deployment.html", **context)


# -- skew, on request --------------------------------------------------------------------------


def _skew(name: str, window: str) -> dict[str, Any]:
    d = kiln.deployments.get(name)
    try:
        result, note = kiln.monitoring.skew(name, window=window), None
    except (NotFound, InvalidInput) as exc:  # nothing served, no keys, no online features
        result, note = None, str(exc)
    return {"d": d, "window": window, "windows": list(WINDOWS), "result": result, "note": note}


async def monitoring_skew(request: Request) -> Response:
    name = request.path_params["name"]
    window = window_of(request)
    context = await run_in_threadpool(_skew, name, window)
    return page(request, "monitoring_skew.html", **context)


# -- one alert event ---------------------------------------------------------------------------


def _event(name: str, event_id: str, window: str) -> dict[str, Any]:
    kiln.deployments.get(name)
    event = kiln.monitoring.get_event(event_id)  # NotFound names the id
    if event.deployment != name:
        raise NotFound(f"deployment {name!r} has no alert event {event_id!r}")
    span = WINDOWS[window][0]
    end = min((event.resolved_at or datetime.now(UTC)) + span, datetime.now(UTC))
    found = kiln.monitoring.history(
        name,
        metric=event.metric,
        feature=event.feature,
        version=event.version,
        arm=event.arm,
        since=event.started_at - span,
        until=end + timedelta(milliseconds=1),
    )
    same = [
        v
        for v in found
        if (v.feature, v.version, v.arm) == (event.feature, event.version, event.arm)
    ]
    chart = series_chart(same, event.metric) if same else None
    if chart is not None and event.threshold is not None:
        chart["series"].append(
            {"label": "threshold", "values": [event.threshold] * len(chart["x"])}
        )
    return {
        "event": event,
        "window": window,
        "windows": list(WINDOWS),
        "chart": chart,
        "points": len(same),
        "results": [
            orjson.dumps(a.result, option=orjson.OPT_INDENT_2).decode() if a.result else ""
            for a in event.actions
        ],
    }


async def monitoring_event(request: Request) -> Response:
    name, event_id = request.path_params["name"], request.path_params["event_id"]
    window = window_of(request)
    context = await run_in_threadpool(_event, name, event_id, window)
    return page(request, "monitoring_event.html", **context)
