"""Deployments: every deployment with its traffic policy, and one deployment's traffic
split as configured and as served, request rate, latency percentiles and fallback rate
per version and arm over a window (from the prediction log), requests by outcome with
the error rate (from the live servers' metrics), its history, and the rollout actions.

Reads are ``kiln.deployments`` (``list``, ``get``, ``history``, ``activity``,
``server_counts``) and ``kiln.models.resolve``. Promote, roll back and switch back
change what serves production, so each is a confirmation page (GET) and a POST carrying
the CSRF token and the revision the user confirmed: refused with 403 unless the
dashboard runs with ``--allow-writes``, and with 409 when the deployment changed since
the confirmation was shown (compare-and-set on the revision). The actor recorded in the
deployment's history is ``kiln ui``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import kiln
from kiln.core import Conflict, InvalidInput, KilnError, NotFound
from kiln.ui._render import page
from kiln.ui._security import check_write, form_fields

ACTOR = "kiln ui"
WINDOWS = ("15m", "1h", "6h", "1d", "7d")
ACTIONS = {
    "promote": "Promote the challenger",
    "rollback": "Roll back to the champion",
    "switch_back": "Switch back to blue",
}


def _resolved(ref: str | None) -> Any:
    """The version a reference serves now, or the reason it cannot be resolved."""
    if ref is None:
        return None
    try:
        return kiln.models.resolve(ref)
    except KilnError as exc:
        return str(exc)


def _list() -> dict[str, Any]:
    return {"deployments": kiln.deployments.list(), "resolved": _resolved}


async def deployments(request: Request) -> Response:
    context = await run_in_threadpool(_list)
    return page(request, "deployments.html", **context)


def possible_actions(d: Any) -> list[str]:
    """The rollout actions that apply to the deployment as it is now."""
    policy, percent = d.traffic.policy, d.traffic.percent
    if policy == "blue_green":
        return ["promote", "switch_back"] if percent == 100 else ["promote"]
    if policy in ("canary", "ab", "shadow"):
        return ["promote", "rollback"]
    return []


def _window(request: Request) -> str:
    window = request.query_params.get("window", "1h")
    if window not in WINDOWS:
        raise InvalidInput(f"window must be one of {', '.join(WINDOWS)}; got {window!r}")
    return window


def _timeline_chart(found: Any) -> dict[str, Any]:
    return {
        "x": [t.timestamp() for t in found.times],
        "time": True,
        "xlabel": "time (UTC)",
        "ylabel": "requests",
        "series": [
            {"label": arm, "values": counts} for arm, counts in sorted(found.timeline.items())
        ],
    }


def _deployment(name: str, window: str) -> dict[str, Any]:
    d = kiln.deployments.get(name)  # NotFound names the deployments there are
    found = kiln.deployments.activity(name, window=window)
    counts = kiln.deployments.server_counts(name)
    outcomes = sorted({o for _, _, o in counts.counts})
    lanes = sorted({(v, a) for v, a, _ in counts.counts})
    history = list(reversed(kiln.deployments.history(name)))
    percent = d.traffic.percent if d.traffic.policy != "single" else 0.0
    configured = {"champion": 100.0 - percent, "challenger": percent}
    if d.traffic.policy == "shadow":
        configured = {"champion": 100.0, "challenger": 0.0}
    guard = d.traffic.guard
    return {
        "d": d,
        "guard": {k: v for k, v in asdict(guard).items() if v is not None} if guard else None,
        "champion": _resolved(d.model),
        "challenger": _resolved(d.traffic.challenger),
        "window": window,
        "windows": WINDOWS,
        "found": found,
        "configured": configured,
        "chart": _timeline_chart(found),
        "counts": counts,
        "outcomes": outcomes,
        "lanes": lanes,
        "history": history,
        "actions": possible_actions(d),
        "labels": ACTIONS,
    }


async def deployment_page(request: Request) -> Response:
    name = request.path_params["name"]
    context = await run_in_threadpool(_deployment, name, _window(request))
    return page(request, "deployment.html", **context)


def _action(request: Request) -> str:
    action = str(request.path_params["action"])
    if action not in ACTIONS:
        raise NotFound(f"no deployment action {action!r}; actions: {', '.join(ACTIONS)}")
    return action


def _act(action: str, name: str, revision: int, reason: str | None) -> Any:
    verb = {
        "promote": kiln.deployments.promote,
        "rollback": kiln.deployments.rollback,
        "switch_back": kiln.deployments.switch_back,
    }[action]
    return verb(name, reason=reason, actor=ACTOR, expected_revision=revision)


async def deployment_action(request: Request) -> Response:
    """GET: what the action will do, and the form. POST: do it, then back to the page."""
    action = _action(request)
    name = request.path_params["name"]
    d = await run_in_threadpool(kiln.deployments.get, name)
    possible = action in possible_actions(d)
    if request.method == "GET":
        return page(
            request,
            "deployment_confirm.html",
            action=action,
            label=ACTIONS[action],
            d=d,
            possible=possible,
        )
    form = await form_fields(request)
    refusal = check_write(request, form.get("csrf"), request.app.state.ui.allow_writes)
    if refusal is not None:
        return page(request, "error.html", status_code=403, title="Refused", message=refusal)
    text = form.get("revision", "")
    if not text.isdigit():
        raise InvalidInput(f"revision must be the whole number shown on the form; got {text!r}")
    if not possible or int(text) != d.revision:
        message = (
            f"deployment {name!r} changed since the confirmation was shown (revision "
            f"{d.revision}, confirmed {text}); nothing was done: look at it again"
            if possible
            else f"deployment {name!r} is {d.traffic.policy}: {action} does not apply"
        )
        return page(request, "error.html", status_code=409, title="Conflict", message=message)
    reason = form.get("reason", "").strip()[:500] or None
    try:
        done = await run_in_threadpool(_act, action, name, int(text), reason)
    except Conflict as exc:
        return page(request, "error.html", status_code=409, title="Conflict", message=str(exc))
    if done is None:
        message = f"deployment {name!r} changed while acting; nothing was done: look at it again"
        return page(request, "error.html", status_code=409, title="Conflict", message=message)
    return RedirectResponse(f"/deployments/{name}", status_code=303)
