"""``kiln flows``: run, resume, list, show, read the logs of, cancel and schedule flow runs.

A flow is named as ``pkg.module:function`` (or ``path/to/file.py:function``), imported
the way Python imports it from the current directory.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.tree import Tree

import kiln.flows as flows
from kiln.cli._format import JsonOpt, console, emit_json, fmt, status, table
from kiln.errors import InvalidInput

flows_app = typer.Typer(help="Run, resume and inspect flows.", no_args_is_help=True)

ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where tasks run: processes (default), inline, ray, ray:auto or ray://HOST:PORT.",
    ),
]
ParallelOpt = Annotated[
    int | None,
    typer.Option("--max-parallel", min=1, help="Tasks at once (default: the CPU count)."),
]
CacheOpt = Annotated[
    bool, typer.Option("--cache/--no-cache", help="Reuse outputs of steps seen before.")
]
ParamOpt = Annotated[
    list[str] | None, typer.Option("--param", help="A flow parameter, NAME=VALUE.")
]
# Set by `kiln scheduler` on the runs it starts, so the run links itself to its due time.
ScheduleIdOpt = Annotated[str | None, typer.Option("--schedule-id", hidden=True)]
DueAtOpt = Annotated[int | None, typer.Option("--due-at", hidden=True)]


def _engine(executor: str, max_parallel: int | None) -> flows.Executor:
    return flows.open_executor(executor, max_parallel)


def _params(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidInput(f"--param takes NAME=VALUE; got {pair!r}")
        values[name.strip()] = value
    return values


def _progress(event: flows.Event) -> None:
    color = {
        "started": "cyan",
        "finished": "green",
        "cached": "blue",
        "reused": "blue",
        "retrying": "yellow",
        "failed": "red",
    }.get(event.kind, "white")
    took = f" in {event.seconds:.2f} s" if event.seconds is not None else ""
    attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
    error = f": {escape(event.error)}" if event.error else ""
    console.print(
        f"[{color}]{event.kind:<9}[/] {escape(event.task)}{attempt}{took}{error}", highlight=False
    )


def _finish(run: flows.FlowRun | None, failed: flows.FlowFailed | None, as_json: bool) -> None:
    run_id = failed.run_id if failed is not None else run.id if run is not None else ""
    if as_json:
        record = flows.get_run(run_id)
        emit_json({**_run_json(record), "tasks": [_task_json(t) for t in flows.tasks(run_id)]})
    if failed is not None:
        raise SystemExit(_fail_line(failed))
    if not as_json:
        tasks = flows.tasks(run_id)
        hits = sum(t.status == "cached" for t in tasks)
        console.print(
            f"flow run {run_id} finished: {len(tasks)} tasks, {hits} from the cache",
            highlight=False,
        )


def _fail_line(failed: flows.FlowFailed) -> int:
    print(f"kiln: error: {' '.join(str(failed).split())}", file=sys.stderr)
    return 1


@flows_app.command("run")
def run_flow(
    target: Annotated[str, typer.Argument(help="The flow, as pkg.module:function.")],
    param: ParamOpt = None,
    executor: ExecutorOpt = "processes",
    max_parallel: ParallelOpt = None,
    cache: CacheOpt = True,
    as_json: JsonOpt = False,
    schedule_id: ScheduleIdOpt = None,
    due_at: DueAtOpt = None,
) -> None:
    """Run a flow; prints its run id first, exits non-zero when it fails."""
    if (schedule_id is None) != (due_at is None):
        raise InvalidInput("--schedule-id and --due-at go together")
    engine = _engine(executor, max_parallel)  # its workers start while the flow loads
    try:
        flow = flows.load_flow(target)
        values = flow.params(_params(param or []), from_text=True)
    except BaseException:
        engine.close()
        raise

    def started(run_id: str) -> None:
        print(f"flow run {run_id} ({flow.name}) started", file=sys.stderr if as_json else None)
        sys.stdout.flush()
        if schedule_id is not None and due_at is not None:
            from kiln.flows.scheduling import record_started

            record_started(schedule_id, due_at, run_id)

    run, failed = None, None
    try:
        run = flow.run(
            executor=engine,
            max_parallel=max_parallel,
            cache=cache,
            on_event=None if as_json else _progress,
            on_start=started,
            **values,
        )
    except flows.FlowFailed as exc:
        failed = exc
    _finish(run, failed, as_json)


@flows_app.command("resume")
def resume_flow(
    run_id: Annotated[str, typer.Argument(help="The flow run to resume.")],
    executor: ExecutorOpt = "processes",
    max_parallel: ParallelOpt = None,
    cache: CacheOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Run again what a flow run did not finish, reusing every finished output."""
    record = flows.get_run(run_id)
    flow = flows.load_flow(record.target)
    if not as_json:
        console.print(f"resuming flow run {run_id} ({flow.name})", highlight=False)
    run, failed = None, None
    try:
        run = flow.resume(
            run_id,
            executor=executor,
            max_parallel=max_parallel,
            cache=cache,
            on_event=None if as_json else _progress,
        )
    except flows.FlowFailed as exc:
        failed = exc
    _finish(run, failed, as_json)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@flows_app.command("list")
def list_flows(
    flow: Annotated[str | None, typer.Option("--flow", help="Only runs of this flow.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Flow runs, newest first."""
    runs = flows.list_runs(flow, limit=limit)
    if as_json:
        emit_json([_run_json(r) for r in runs])
        return
    # The schedule column appears when a run listed was started by a schedule.
    scheduled = any(r.schedule for r in runs)
    console.print(
        table(
            None,
            ["id", "flow", "status", "executor", "started"]
            + (["schedule"] if scheduled else [])
            + ["params"],
            [
                [r.id, r.flow, status(r.status), r.executor, _when(r.created_at)]
                + ([r.schedule] if scheduled else [])
                + [fmt(r.params)]
                for r in runs
            ],
        )
    )


def _run_json(record: flows.FlowRunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "flow": record.flow,
        "target": record.target,
        "status": record.status,
        "executor": record.executor,
        "params": record.params,
        "created_at": record.created_at,
        "error": record.error,
        "schedule": record.schedule,
    }


def _task_json(task: flows.TaskRecord) -> dict[str, Any]:
    return {
        "task": task.task,
        "step": task.step,
        "status": task.status,
        "attempts": task.attempts,
        "duration_s": task.duration_s,
        "cache_hit": task.cache_hit,
        "run_id": task.child_run_id,
        "errors": [h.get("error") for h in task.history if h.get("error")],
    }


@flows_app.command("show")
def show_flow(
    run_id: Annotated[str, typer.Argument(help="The flow run.")],
    as_json: JsonOpt = False,
) -> None:
    """A flow run's graph: each task with its status, duration, attempts and cache hit."""
    record = flows.get_run(run_id)
    tasks = flows.tasks(run_id)
    if as_json:
        emit_json({**_run_json(record), "tasks": [_task_json(t) for t in tasks]})
        return
    tree = Tree(f"[bold]{escape(record.flow)}[/] {record.id} {status(record.status)}")
    by_step: dict[str, list[flows.TaskRecord]] = {}
    for task in tasks:
        by_step.setdefault(task.step, []).append(task)
    for step_name, group in by_step.items():
        branch = tree.add(f"[bold]{escape(step_name)}[/]") if len(group) > 1 else tree
        for task in group:
            took = f"{task.duration_s:.2f} s" if task.duration_s is not None else "-"
            line = (
                f"{escape(task.task)}  {status(task.status)}  {took}  "
                f"attempts {task.attempts}{'  cache hit' if task.cache_hit else ''}"
            )
            node = branch.add(line)
            for attempt in task.history:
                if attempt.get("error"):
                    node.add(f"[red]attempt {attempt['attempt']}: {escape(attempt['error'])}[/]")
    console.print(tree)
    if record.error:
        console.print(f"[red]{escape(record.error)}[/]", highlight=False)


@flows_app.command("logs")
def flow_logs(
    run_id: Annotated[str, typer.Argument(help="The flow run.")],
    step: Annotated[str | None, typer.Argument(help="Only this step (or task).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What the tasks printed (stdout and stderr), and the traceback of each failure."""
    logs = flows.task_logs(run_id, step)
    if as_json:
        emit_json([dataclasses.asdict(log) for log in logs])
        return
    for log in logs:
        console.rule(f"{log.task} ({log.status})")
        sys.stdout.write(log.stdout)
        sys.stderr.write(log.stderr)
        for n, text in enumerate(log.tracebacks, 1):
            sys.stdout.write(f"failed attempt {n}:\n{text}")
    sys.stdout.flush()


@flows_app.command("cancel")
def cancel_flow(
    run_id: Annotated[str, typer.Argument(help="The flow run.")], as_json: JsonOpt = False
) -> None:
    """Ask the process running a flow to stop it (its finished tasks stay resumable)."""
    record = flows.request_cancel(run_id)
    if as_json:
        emit_json(_run_json(record) | {"cancel_requested": record.cancel_requested})
        return
    if record.status != "running":
        console.print(f"flow run {run_id} is {record.status}; nothing to cancel", highlight=False)
        return
    console.print(f"cancel requested for flow run {run_id}", highlight=False)
