"""Starting a flow run as a ``kiln flows run`` process of its own.

The scheduler starts due runs this way, and so does anything else that must start a
flow without waiting for it (a monitor's retraining action): the run outlives its
starter, a Ctrl-C or SIGTERM to the starter does not reach it, and it opens the same
stores as the starter wherever it imports from.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.core import Conflict, InvalidInput, NotFound, get_settings, now_millis
from kiln.flows._flow import load_flow
from kiln.flows.executors import parse_executor
from kiln.tracking import TrackingClient, default_client

__all__ = [
    "StartedFlow",
    "check_executor",
    "flow_command",
    "launch",
    "start_flow",
    "start_resume",
    "text_params",
]


@dataclass(frozen=True)
class StartedFlow:
    """A flow run started in its own process: its pid, command line and output file."""

    pid: int
    argv: tuple[str, ...]
    log: Path


def start_flow(
    target: str,
    params: Mapping[str, str | int | float | bool] | None = None,
    *,
    executor: str = "processes",
    max_parallel: int | None = None,
    log: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    client: TrackingClient | None = None,
) -> StartedFlow:
    """Start the flow ``target`` ("pkg.module:function") now, in a process of its own,
    and return without waiting for it.

    The flow is imported and ``params`` converted here first, so a mistake is this call's
    error rather than a run that dies unseen. Output is appended to ``log`` (default
    ``KILN_HOME/flows/<flow>.log``); the run is imported from ``workdir`` (default: the
    current directory).
    """
    check_executor(executor)
    if max_parallel is not None and (
        isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
    ):
        raise InvalidInput(f"max_parallel must be an integer >= 1; got {max_parallel!r}")
    text = text_params(params)
    flow = _load_from(target, workdir)
    flow.params(text, from_text=True)  # converted as the run will convert them
    argv = flow_command(target, text, executor, max_parallel)
    path = Path(log) if log is not None else get_settings().home / "flows" / f"{flow.name}.log"
    process = launch(argv, path, workdir, client=client, note=f"pid {os.getpid()} starts the run")
    # Waited for by a thread of its own: reaped when it ends, never left a zombie.
    threading.Thread(target=process.wait, name=f"kiln-flow-{process.pid}", daemon=True).start()
    return StartedFlow(process.pid, tuple(argv), path)


def start_resume(
    run_id: str,
    *,
    executor: str | None = None,
    max_parallel: int | None = None,
    log: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    actor: str | None = None,
    reason: str | None = None,
    client: TrackingClient | None = None,
) -> StartedFlow:
    """Resume flow run ``run_id`` (``kiln flows resume``) in a process of its own, and
    return without waiting for it.

    Refused (InvalidInput) when the run finished, and (Conflict) while its process is
    alive or another resume started it within the heartbeat timeout; a run whose process
    died (its tracked run lost its heartbeat) may be resumed. The flow is imported here
    first, from ``workdir`` (default: the directory of the schedule that started the run,
    else the current one), so an import error is this call's error. ``executor`` defaults
    to the run's own; ``actor`` and ``reason`` are recorded on the run's tracked run
    (tag ``kiln.flow.resumed_by``) and in the log's first line.
    """
    from kiln.flows._records import get_run, note_actor
    from kiln.flows._tables import flow_runs
    from kiln.tracking import RunStatus
    from kiln.tracking.runs import get as get_tracked

    client = client or default_client()
    record = get_run(run_id, client=client)
    if record.status == "finished":
        raise InvalidInput(f"flow run {run_id} already finished; nothing to resume")
    if record.status == "running":
        if get_tracked(run_id, client=client).status == RunStatus.RUNNING:
            raise Conflict(
                f"flow run {run_id} is still running (its process is alive); cancel it first"
            )
        waited = (now_millis() - record.updated_at) / 1000.0
        if waited < client.heartbeat_timeout_s:
            raise Conflict(
                f"flow run {run_id} was started again {waited:.0f} s ago; look at it again "
                f"after {client.heartbeat_timeout_s:g} s if it has not moved"
            )
    if executor is None:
        try:
            check_executor(record.executor)
            executor = record.executor
        except InvalidInput:
            executor = "processes"
    check_executor(executor)
    if max_parallel is not None and (
        isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
    ):
        raise InvalidInput(f"max_parallel must be an integer >= 1; got {max_parallel!r}")
    if workdir is None and record.schedule is not None:
        workdir = _schedule_workdir(record.schedule, client)
    flow = _load_from(record.target, workdir)
    if flow.name != record.flow:
        raise InvalidInput(
            f"{record.target!r} is now flow {flow.name!r}, but run {run_id} is a run of "
            f"{record.flow!r}"
        )
    # Claimed with a compare-and-set, so two resumes at once start one process.
    with client.meta.write() as conn:
        claimed = conn.execute(
            flow_runs.update()
            .where(
                flow_runs.c.id == run_id,
                flow_runs.c.status == record.status,
                flow_runs.c.updated_at == record.updated_at,
            )
            .values(status="running", cancel_requested=False, updated_at=now_millis())
        ).rowcount
    if not claimed:
        raise Conflict(f"flow run {run_id} changed while it was being resumed; look again")
    argv = [sys.executable, "-m", "kiln", "flows", "resume", run_id, "--executor", executor]
    if max_parallel is not None:
        argv += ["--max-parallel", str(max_parallel)]
    path = Path(log) if log is not None else get_settings().home / "flows" / f"{flow.name}.log"
    who = actor or f"pid {os.getpid()}"
    process = launch(argv, path, workdir, client=client, note=f"{who} resumes run {run_id}")
    threading.Thread(target=process.wait, name=f"kiln-flow-{process.pid}", daemon=True).start()
    if actor is not None:
        note_actor(client, run_id, "kiln.flow.resumed_by", actor, reason)
    return StartedFlow(process.pid, tuple(argv), path)


def _schedule_workdir(name: str, client: TrackingClient) -> str | None:
    from kiln.flows.scheduling import get_schedule

    try:
        return get_schedule(name, client=client).workdir
    except NotFound:  # the schedule was deleted since
        return None


def _load_from(target: str, workdir: str | os.PathLike[str] | None) -> Any:
    """The flow as the run will import it: from ``workdir`` when given."""
    if workdir is None:
        return load_flow(target)
    folder = str(Path(workdir).resolve())
    if not Path(folder).is_dir():
        raise InvalidInput(f"workdir {str(workdir)!r} is not a directory")
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        return load_flow(target)
    finally:
        if added:
            sys.path.remove(folder)


def flow_command(
    target: str, params: Mapping[str, str], executor: str, max_parallel: int | None
) -> list[str]:
    """The ``kiln flows run`` command line of one run."""
    argv = [sys.executable, "-m", "kiln", "flows", "run", target]
    for key, value in params.items():
        argv += ["--param", f"{key}={value}"]
    argv += ["--executor", executor]
    if max_parallel is not None:
        argv += ["--max-parallel", str(max_parallel)]
    return argv


def launch(
    argv: Sequence[str],
    log: Path,
    workdir: str | os.PathLike[str] | None,
    *,
    client: TrackingClient | None,
    note: str,
) -> subprocess.Popen[bytes]:
    """``argv`` in a session of its own, output appended to ``log`` after a line saying
    who started it, with this process's stores spelled out in its environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cwd = workdir if workdir is not None and Path(workdir).is_dir() else None
    stamp = datetime.fromtimestamp(now_millis() / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    with open(log, "ab") as out:
        out.write(f"--- {stamp} {note}: {shlex.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=_environment(client or default_client()),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _environment(client: TrackingClient) -> dict[str, str]:
    """This process's environment with its resolved Kiln settings spelled out, so the
    run opens the same stores wherever it imports from (its directory may hold another
    kiln.toml) and however this process was configured."""
    settings = get_settings()
    env = dict(os.environ)
    env.update(
        KILN_HOME=str(settings.home),
        KILN_DB_URL=client.meta.url,
        KILN_ARTIFACT_URI=settings.artifact_uri,
        KILN_ONLINE_URL=settings.online_url,
        KILN_HEARTBEAT_TIMEOUT_S=repr(settings.heartbeat_timeout_s),
        KILN_METRIC_FLUSH_INTERVAL_S=repr(settings.metric_flush_interval_s),
    )
    if settings.offline_dir is not None:
        env["KILN_OFFLINE_DIR"] = str(settings.offline_dir)
    if settings.s3_endpoint_url:
        env["KILN_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def check_executor(executor: str) -> None:
    """Refuse an executor ``kiln flows run --executor`` would refuse, now."""
    parse_executor(executor)


def text_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Parameters as ``--param NAME=VALUE`` takes them: text, numbers and bools as text."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidInput(f"params must map parameter names to values; got {params!r}")
    text: dict[str, str] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"params: a parameter name is a non-empty string; got {key!r}")
        if isinstance(value, bool):
            text[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text[key] = str(value)
        else:
            raise InvalidInput(
                f"params[{key!r}] must be text, as --param {key}=VALUE takes it, or a number; "
                f"got {value!r}"
            )
    return text
