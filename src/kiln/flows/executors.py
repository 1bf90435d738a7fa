"""Where a flow's tasks run: in this process, or in local worker processes.

An :class:`Executor` takes tasks and hands back their results; the orchestrator
(``kiln.flows._runner``) decides what runs when, retries and records. The contract:

- ``slots()``: how many more tasks it can take now;
- ``submit(key, spec, timeout_s)``: start a task (only when a slot is free);
- ``collect(wait_s)``: results of tasks that ended, waiting up to ``wait_s`` for one;
  a task whose worker died or that passed its timeout ends as a failed result;
- ``cancel(key)``: stop a running task (its result is not reported);
- ``close()``: stop everything.

:class:`ProcessExecutor` keeps up to ``max_workers`` spawned worker processes and reuses
them from task to task, so a step costs milliseconds, not an interpreter start. A worker
that dies (out of memory, SIGKILL) fails its task, which is retried per its step's policy,
and is replaced; a task past its timeout has its worker killed the same way.
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol, runtime_checkable

from kiln.core import InvalidInput
from kiln.flows._worker import TaskResult, TaskSpec, run_task

__all__ = [
    "Executor",
    "InlineExecutor",
    "ProcessExecutor",
    "open_executor",
    "parse_executor",
    "prestart",
    "serve",
    "settings_snapshot",
    "task_output",
]


@runtime_checkable
class Executor(Protocol):
    name: str

    def slots(self) -> int: ...

    def submit(self, key: str, spec: TaskSpec, timeout_s: float | None) -> None: ...

    def collect(self, wait_s: float) -> list[tuple[str, TaskResult]]: ...

    def cancel(self, key: str) -> None: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs each task in this process, at once: for debugging (breakpoints work).

    A timeout is not enforced here (nothing can stop a function in its own thread);
    the other executors enforce it.
    """

    name = "inline"
    in_process = True  # tasks get the step function itself, not a pickled copy

    def __init__(self) -> None:
        self._done: list[tuple[str, TaskResult]] = []

    def slots(self) -> int:
        return 1

    def submit(self, key: str, spec: TaskSpec, timeout_s: float | None) -> None:
        self._done.append((key, run_task(spec)))

    def collect(self, wait_s: float) -> list[tuple[str, TaskResult]]:
        done, self._done = self._done, []
        return done

    def cancel(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None


def serve(fd: int) -> None:
    """A worker process: run the tasks sent over socket ``fd`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the orchestrator
    _exit_with_parent()
    conn = Connection(fd)
    import cloudpickle  # noqa: F401  what every task needs, loaded before the first one

    import kiln.tracking.run  # noqa: F401

    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        result = run_task(spec)
        try:
            conn.send(result)
        except OSError:
            return


def _exit_with_parent() -> None:
    """A worker does not outlive the process it works for: when that one dies (SIGKILL,
    out of memory), the task running here stops too, rather than finishing unseen and
    recording its end after a resume has already given its work to another worker."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="kiln-parent-watch", daemon=True).start()


class _Worker:
    """A worker process started as a fresh interpreter (not a fork, and not a re-run of
    the caller's ``__main__``, which a notebook or ``python -`` does not have): steps
    defined in ``__main__`` travel by value instead. It sees this process's ``sys.path``
    and working directory, so it imports the step modules this process imported."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from kiln.flows.executors import serve; serve({theirs.fileno()})",
            ],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(ours.detach())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.conn.close()

    def died(self) -> str:
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the worker process running it died ({name})"
        return f"the worker process running it exited (code {code})"


_spare: list[_Worker] = []
_exiting: list[subprocess.Popen[bytes]] = []  # told to stop; reaped later, never waited on


def _reap() -> None:
    """Collect the exit status of workers that have stopped (never waits for the rest)."""
    for process in list(_exiting):
        if process.poll() is not None:
            _exiting.remove(process)


@atexit.register
def _stop_the_rest() -> None:
    """At exit, idle workers still shutting down (and a prestarted one never used) are
    killed rather than waited for: none holds anything unsaved (a task's run is ended
    before its result is sent), and a kill is reaped at once."""
    for process in [*_exiting, *(w.process for w in _spare)]:
        if process.poll() is None:
            process.kill()
            process.wait()
    _exiting.clear()
    _spare.clear()


def prestart() -> None:
    """Start a worker process now, for the next :class:`ProcessExecutor` to take: the
    command line calls it first thing, so the worker's interpreter starts while the
    command's own imports run (a fresh interpreter takes a third of a second here)."""
    if not _spare:
        _spare.append(_Worker())


class ProcessExecutor:
    """Tasks in up to ``max_workers`` spawned local processes, each reused."""

    name = "processes"

    def __init__(self, max_workers: int | None = None) -> None:
        count = max_workers if max_workers is not None else (os.cpu_count() or 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidInput(f"max_parallel must be an integer >= 1; got {max_workers!r}")
        self.max_workers = count
        # the first worker starts now, while the flow is being recorded (or earlier: prestart)
        self._idle: list[_Worker] = [_spare.pop() if _spare else _Worker()]
        self._busy: dict[str, tuple[_Worker, float, float]] = {}  # worker, deadline, timeout
        self._done: list[tuple[str, TaskResult]] = []

    def slots(self) -> int:
        return self.max_workers - len(self._busy)

    def submit(self, key: str, spec: TaskSpec, timeout_s: float | None) -> None:
        worker = self._idle.pop() if self._idle else _Worker()
        try:
            worker.conn.send(spec)
        except OSError:  # it died while idle: a new one
            worker.kill()
            worker = _Worker()
            worker.conn.send(spec)
        deadline = time.monotonic() + timeout_s if timeout_s else math.inf
        self._busy[key] = (worker, deadline, timeout_s or 0.0)

    def collect(self, wait_s: float) -> list[tuple[str, TaskResult]]:
        if self._busy and not self._done:
            now = time.monotonic()
            soonest = min(deadline for _, deadline, _ in self._busy.values())
            timeout = max(0.0, min(wait_s, soonest - now))
            handles: dict[Any, str] = {
                worker.conn: key for key, (worker, _, _) in self._busy.items()
            }
            for ready in wait(list(handles), timeout):
                key = handles[ready]
                if key in self._busy:
                    self._receive(key)
            self._expire()
        done, self._done = self._done, []
        return done

    def _receive(self, key: str) -> None:
        worker, _, _ = self._busy[key]
        try:
            if worker.conn.poll():
                result = worker.conn.recv()
                del self._busy[key]
                self._idle.append(worker)
                self._done.append((key, result))
                return
        except (EOFError, OSError):
            pass
        else:
            return  # readable but no whole message yet
        del self._busy[key]
        reason = worker.died()
        worker.conn.close()
        now = time.time()
        self._done.append((key, TaskResult(False, error=reason, started=now, ended=now)))

    def _expire(self) -> None:
        now = time.monotonic()
        for key, (worker, deadline, timeout) in list(self._busy.items()):
            if now >= deadline:
                del self._busy[key]
                worker.kill()
                ended = time.time()
                self._done.append(
                    (
                        key,
                        TaskResult(
                            False,
                            error=f"timed out after {timeout:g} s (the step's timeout); killed",
                            started=ended - timeout,
                            ended=ended,
                        ),
                    )
                )

    def cancel(self, key: str) -> None:
        entry = self._busy.pop(key, None)
        if entry is not None:
            entry[0].kill()

    def close(self) -> None:
        for worker, _, _ in self._busy.values():
            worker.kill()
        self._busy.clear()
        for worker in self._idle:  # each exits by itself; nobody waits for it to
            with suppress(OSError):  # a worker gone already
                worker.conn.send(None)
            worker.conn.close()
            _exiting.append(worker.process)
        self._idle.clear()
        _reap()


def task_output(result: TaskResult, blobs: Any) -> Any:
    """The value a finished task returned (stored by the worker in the blob store), for
    callers other than a flow that run their own work on an executor."""
    from kiln.flows._values import ValueRef, load

    if not result.ok or result.output is None:
        raise InvalidInput(f"the task did not finish with an output: {result.error}")
    return load(ValueRef.from_json(result.output), blobs)


def settings_snapshot() -> dict[str, Any]:
    """What a worker needs to open the same stores as this process (its Kiln settings,
    as :func:`kiln.core.configure` takes them)."""
    from kiln.core import get_settings

    s = get_settings()
    return {
        "home": str(s.home),
        "db_url": s.db_url,
        "artifact_uri": s.artifact_uri,
        "online_url": s.online_url,
        "offline_dir": str(s.offline_dir) if s.offline_dir is not None else None,
        "s3_endpoint_url": s.s3_endpoint_url,
    }


def parse_executor(executor: str) -> tuple[str, str | None]:
    """An executor's name as (kind, Ray address): ``inline``, ``processes``, or Ray as
    ``ray`` (Ray's default: the local cluster, started for the run when none runs),
    ``ray:auto`` (the cluster this machine belongs to) or ``ray://host:port``. Checked
    without starting anything, so a schedule can be refused a bad name when it is made."""
    if executor in ("inline", "processes", "ray"):
        return executor, None
    if isinstance(executor, str) and executor.startswith("ray://"):
        return "ray", executor  # as Ray spells it
    if isinstance(executor, str) and executor.startswith("ray:") and len(executor) > 4:
        return "ray", executor.removeprefix("ray:")
    raise InvalidInput(
        f"unknown executor {executor!r}; known: inline, processes, ray, ray:auto, ray://HOST:PORT"
    )


def open_executor(executor: str | Executor, max_parallel: int | None) -> Executor:
    """The executor named (see :func:`parse_executor`), or the one given."""
    if isinstance(executor, Executor):
        return executor
    kind, address = parse_executor(executor)
    if kind == "inline":
        return InlineExecutor()
    if kind == "processes":
        return ProcessExecutor(max_parallel)
    from kiln.flows._ray import RayExecutor

    return RayExecutor(address, max_parallel)
