"""``kiln flows schedule|schedules|unschedule`` and ``kiln scheduler``: flows on a cron
schedule, and the long-running process that starts their due runs."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

import kiln
import kiln.flows as flows
from kiln.cli._flows import ExecutorOpt, ParallelOpt, ParamOpt, _params, flows_app
from kiln.cli._format import JsonOpt, console, emit_json, report, status, table

MissedOpt = Annotated[
    str,
    typer.Option(
        "--missed",
        help="Due times missed while no scheduler ran: skip them, or run-once for the latest.",
    ),
]


def _when(ms: int | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


def _minute(ms: int) -> str:
    """A due time in a table: cron fires on whole minutes."""
    return str(_when(ms, "%Y-%m-%d %H:%M"))


def _claim_json(claim: flows.ScheduledRun | None) -> dict[str, Any] | None:
    if claim is None:
        return None
    return {
        "schedule": claim.schedule,
        "due_at": claim.due_at,
        "due": _when(claim.due_at),
        "status": claim.status,
        "run_id": claim.run_id,
        "run_status": claim.run_status,
        "skipped": claim.skipped,
        "skipped_from": claim.skipped_from,
        "claimed_by": claim.claimed_by,
        "error": claim.error,
    }


def _schedule_json(found: flows.Schedule) -> dict[str, Any]:
    return {
        "id": found.id,
        "name": found.name,
        "flow": found.flow,
        "target": found.target,
        "cron": found.cron,
        "params": found.params,
        "executor": found.executor,
        "max_parallel": found.max_parallel,
        "missed": found.missed,
        "workdir": found.workdir,
        "next_due_at": found.next_due_at,
        "next_run": _when(found.next_due_at),
        "created_at": found.created_at,
        "last": _claim_json(found.last),
    }


def _last(claim: flows.ScheduledRun | None) -> str | None:
    """One cell for the latest due time acted on: when, then the run's own status once it
    exists (else the claim's), and the missed due times passed over."""
    if claim is None:
        return None
    text = f"{_minute(claim.due_at)} "
    if claim.status == "skipped":
        return text + f"{status('skipped')} ({claim.skipped} missed)"
    text += status(claim.run_status or claim.status)
    if claim.skipped:
        text += f" ({claim.skipped} missed skipped)"
    if claim.status == "failed" and claim.error:
        text += f": {escape(claim.error)}"
    return text


@flows_app.command("schedule")
def schedule_flow(
    target: Annotated[str, typer.Argument(help="The flow, as pkg.module:function.")],
    cron: Annotated[
        str, typer.Option("--cron", help="When, in UTC: five cron fields, e.g. '0 3 * * *'.")
    ],
    param: ParamOpt = None,
    executor: ExecutorOpt = "processes",
    max_parallel: ParallelOpt = None,
    missed: MissedOpt = "skip",
    name: Annotated[
        str | None, typer.Option("--name", help="The schedule's name (default: the flow's).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a flow on a cron schedule; `kiln scheduler` starts its runs."""
    made = flows.schedule(
        target,
        cron,
        _params(param or []),
        executor=executor,
        max_parallel=max_parallel,
        missed=missed,
        name=name,
    )
    report(
        as_json,
        f"schedule {made.name} ({made.id}): flow {made.flow} at '{made.cron}' (UTC), "
        f"next run {_when(made.next_due_at)} UTC",
        {"action": "scheduled", "schedule": _schedule_json(made)},
    )


@flows_app.command("schedules")
def list_schedules(as_json: JsonOpt = False) -> None:
    """Every schedule with its next run and its last (times in UTC)."""
    found = flows.schedules()
    if as_json:
        emit_json([_schedule_json(s) for s in found])
        return
    console.print(
        table(
            None,
            ["id", "name", "flow", "cron", "params", "missed", "next run", "last run"],
            [
                [
                    s.id,
                    escape(s.name),
                    escape(s.flow),
                    s.cron,
                    escape(" ".join(f"{k}={v}" for k, v in s.params.items())) or None,
                    s.missed,
                    _minute(s.next_due_at),
                    _last(s.last),
                ]
                for s in found
            ],
        )
    )


@flows_app.command("unschedule")
def unschedule_flow(
    schedule: Annotated[str, typer.Argument(help="The schedule, by id or name.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a schedule; runs it started are kept."""
    gone = flows.unschedule(schedule)
    report(
        as_json,
        f"unscheduled {gone.name} ({gone.id})",
        {"action": "unscheduled", "schedule": _schedule_json(gone)},
    )


def scheduler(
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between looks at the schedules.")
    ] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Start what is due now, then exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start the due runs of every flow schedule, until SIGTERM or Ctrl-C.

    Run two for availability: each due time starts exactly one run. Each run is its own
    process (it goes on when the scheduler stops), its output in KILN_HOME/scheduler/.
    With --json, one JSON object per line: ready, each due time acted on, stopped.
    """
    settings = kiln.get_settings()
    url = kiln.core.mask_url(settings.db_url)

    def say(text: str, data: dict[str, Any]) -> None:
        print(json.dumps(data, default=str) if as_json else text, flush=True)

    def acted(claim: flows.ScheduledRun) -> None:
        due = f"schedule {claim.schedule}: due {_when(claim.due_at)} UTC"
        if claim.status == "skipped":
            since = _when(claim.skipped_from)
            text = f"{due}: skipped ({claim.skipped} missed due times since {since})"
        elif claim.status == "failed":
            text = f"{due}: the run could not start: {claim.error}"
        else:
            caught_up = f" ({claim.skipped} earlier missed ones skipped)" if claim.skipped else ""
            text = f"{due}: run starting{caught_up}, log {engine.log_dir / claim.schedule}.log"
        say(text, {"event": claim.status, **(_claim_json(claim) or {})})

    engine = flows.Scheduler(interval_s=interval, on_event=acted)
    count = len(flows.schedules())
    say(
        f"kiln scheduler: watching {url} ({count} schedule{'' if count == 1 else 's'}) "
        f"every {interval:g} s; "
        f"run logs in {engine.log_dir}",
        {
            "event": "ready",
            "db_url": url,
            "schedules": count,
            "interval_s": interval,
            "log_dir": str(engine.log_dir),
        },
    )
    if once:
        engine.tick()
        engine.wait_started()  # a run that cannot start is recorded failed before exiting
        return
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        # Set from another thread: the main one may hold the event's lock right now.
        threading.Thread(target=stop.set, daemon=True).start()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        engine.serve(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    running = engine.reap()
    say(
        f"kiln scheduler: stopped ({running} runs it started still going on their own)",
        {"event": "stopped", "running": running},
    )
    sys.stdout.flush()
