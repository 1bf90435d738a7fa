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

from kiln.core import InvalidInput, get_settings, now_millis
from kiln.flows._flow import load_flow
from kiln.flows.executors import parse_executor
from kiln.tracking import TrackingClient, default_client

__all__ = ["StartedFlow", "check_executor", "flow_command", "launch", "start_flow", "text_params"]


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
