"""Flow runs: the newest first with their schedules, and one run's graph, tasks and logs,
with the resume and cancel actions.

Reads are ``kiln.flows`` (``list_runs``, ``get_run``, ``tasks``, ``run_graph``,
``task_logs``, ``schedules``). The actions change a run, so each is a confirmation page
(GET) and a POST with the CSRF token, refused with 403 unless the dashboard runs with
``--allow-writes``; both are recorded with the actor ``kiln ui`` on the run. Resume starts
``kiln flows resume RUN`` as a process of its own (``kiln.flows.start_resume``): the run
outlives the request and the dashboard.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import kiln
from kiln.core import Conflict, InvalidInput, NotFound
from kiln.ui._render import page
from kiln.ui._security import check_write, form_fields
from kiln.ui.pages.flowgraph import layout

ACTOR = "kiln ui"
INLINE_LOGS = 50  # runs with more tasks show one task's logs at a time (?task=)
LOG_CHARS = 64 * 1024  # of each stream shown; the rest is cut
ACTIONS = ("resume", "cancel")


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"page must be a whole number >= 1; got {text!r}")
    return int(text)


def run_seconds(record: kiln.flows.FlowRunRecord) -> float:
    """How long a run has taken: to its last change once ended, to now while running."""
    end = time.time() * 1000 if record.status == "running" else record.updated_at
    return max(0.0, (end - record.created_at) / 1000.0)


def _ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def _runs(number: int, size: int) -> dict[str, Any]:
    found = kiln.flows.list_runs(limit=size + 1, offset=(number - 1) * size)
    return {
        "runs": found[:size],
        "more": len(found) > size,
        "page_number": number,
        "first": (number - 1) * size + 1,
        "schedules": kiln.flows.schedules(),
        "seconds": run_seconds,
        "at": _ms,
    }


async def flow_runs(request: Request) -> Response:
    number = _page_number(request)
    context = await run_in_threadpool(_runs, number, request.app.state.ui.page_size)
    return page(request, "flows.html", **context)


def _cut(text: str) -> tuple[str, bool]:
    return (text[-LOG_CHARS:], True) if len(text) > LOG_CHARS else (text, False)


def _logs(run_id: str, tasks: list[Any], task: str | None) -> list[dict[str, Any]]:
    if task is None and len(tasks) > INLINE_LOGS:
        return []
    logs = []
    for log in kiln.flows.task_logs(run_id, task):  # NotFound names the steps
        if task is not None and task not in (log.task, log.step):
            continue
        stdout, out_cut = _cut(log.stdout)
        stderr, err_cut = _cut(log.stderr)
        logs.append({"log": log, "stdout": stdout, "stderr": stderr, "cut": out_cut or err_cut})
    return logs


def _run(run_id: str, task: str | None) -> dict[str, Any]:
    record = kiln.flows.get_run(run_id)  # NotFound names the newest runs
    tasks = kiln.flows.tasks(run_id)
    try:
        graph, graph_note = kiln.flows.run_graph(run_id), None
    except NotFound as exc:  # no stored graph and the flow cannot be rebuilt here
        graph, graph_note = None, str(exc)
    if graph is not None and not graph.recorded:
        graph_note = "This run stored no graph; it is rebuilt from the flow's code as it is now."
    tracked = kiln.runs.get(run_id)
    return {
        "record": record,
        "tasks": tasks,
        "drawing": layout(graph, tasks),
        "graph_note": graph_note,
        "logs": _logs(run_id, tasks, task),
        "inline_logs": task is not None or len(tasks) <= INLINE_LOGS,
        "chosen_task": task,
        "tracked": tracked,
        "resumable": _resumable(record, tracked),
        "seconds": run_seconds(record),
        "at": _ms,
    }


def _resumable(record: kiln.flows.FlowRunRecord, tracked: kiln.RunRecord) -> bool:
    """Resume is offered for a run that failed or was cancelled, and for one whose
    process died (its tracked run lost its heartbeat)."""
    if record.status in ("failed", "cancelled"):
        return True
    return record.status == "running" and tracked.status != "RUNNING"


async def flow_run(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    task = request.query_params.get("task") or None
    context = await run_in_threadpool(_run, run_id, task)
    return page(request, "flow_run.html", **context)


def _action(request: Request) -> str:
    action = str(request.path_params["action"])
    if action not in ACTIONS:
        raise NotFound(f"no flow run action {action!r}; actions: {', '.join(ACTIONS)}")
    return action


async def flow_action(request: Request) -> Response:
    """GET: what the action will do, and the form. POST: do it, then back to the run."""
    action = _action(request)
    run_id = request.path_params["run_id"]
    record = await run_in_threadpool(kiln.flows.get_run, run_id)
    if request.method == "GET":
        possible = record.status == "running" if action == "cancel" else record.status != "finished"
        return page(request, "flow_confirm.html", action=action, record=record, possible=possible)
    form = await form_fields(request)
    settings = request.app.state.ui
    refusal = check_write(request, form.get("csrf"), settings.allow_writes)
    if refusal is not None:
        return page(request, "error.html", status_code=403, title="Refused", message=refusal)
    if action == "cancel" and record.status != "running":
        message = f"flow run {run_id} is {record.status}; only a running run can be cancelled"
        return page(request, "error.html", status_code=409, title="Conflict", message=message)
    reason = form.get("reason", "").strip()[:500] or None
    try:
        if action == "cancel":
            await run_in_threadpool(kiln.flows.request_cancel, run_id, actor=ACTOR, reason=reason)
        else:
            await run_in_threadpool(kiln.flows.start_resume, run_id, actor=ACTOR, reason=reason)
    except Conflict as exc:
        return page(request, "error.html", status_code=409, title="Conflict", message=str(exc))
    return RedirectResponse(f"/flows/{run_id}", status_code=303)
