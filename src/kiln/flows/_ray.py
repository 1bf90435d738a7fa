"""The Ray executor: each task a Ray task, placed by its step's resources.

Ray places and runs the tasks; Kiln keeps doing what it does on every executor: the
task runs :func:`~kiln.flows._worker.run_task` (so it is a tracked child run, its
output stored content-addressed and loaded lazily downstream), and retries follow the
step's policy, not Ray's (Ray's own task retries are off, so a worker that dies is one
failed attempt, recorded with its reason, as on local processes).

Where the cluster is: ``ray://host:10001`` (a remote cluster through Ray Client),
``auto`` (the cluster this machine belongs to), or nothing: Ray's own default, which
joins a local cluster if one runs and otherwise starts one for the run (stopped when the
run ends). A Ray already initialized in this process (a notebook, a test fixture) is
used as it is and left running.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Any

from kiln.core import InvalidInput
from kiln.flows._worker import TaskResult, TaskSpec, run_task

__all__ = ["RayExecutor"]


def _ray_task(spec: TaskSpec, sys_path: list[str]) -> TaskResult:
    """What a Ray worker runs: the flow process's import path first (so the step's module
    imports by name where the paths exist, as on a local cluster), then the task."""
    for entry in sys_path:
        if entry and entry not in sys.path:
            sys.path.append(entry)
    return run_task(spec)


class RayExecutor:
    """Tasks as Ray tasks on a running cluster, or on a local one started for the run."""

    name = "ray"

    def __init__(self, address: str | None = None, max_parallel: int | None = None) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - the extra is installed in the tests
            raise InvalidInput("the Ray executor needs Ray: pip install 'kiln[ray]'") from None
        if max_parallel is not None and (
            isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
        ):
            raise InvalidInput(f"max_parallel must be an integer >= 1; got {max_parallel!r}")
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an unreachable cluster is our error below
                try:
                    ray.init(
                        address=address,
                        include_dashboard=False,
                        configure_logging=False,
                        log_to_driver=True,
                    )
                except (ConnectionError, TimeoutError) as exc:
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise InvalidInput(
                        f"cannot reach the Ray cluster at {address!r}: {reason}"
                    ) from None
            self._started = True
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        cpus = int(resources.get("CPU", 1)) or 1
        self.max_workers = max_parallel or cpus
        self._remote = ray.remote(max_retries=0, retry_exceptions=False)(_ray_task)
        self._path = [p for p in sys.path if p]
        self._running: dict[Any, tuple[str, float, float, float]] = {}  # ref: key, ...
        self._done: list[tuple[str, TaskResult]] = []

    def slots(self) -> int:
        return self.max_workers - len(self._running)

    def submit(self, key: str, spec: TaskSpec, timeout_s: float | None) -> None:
        resources = spec.resources or {}
        options: dict[str, Any] = {
            "num_cpus": resources.get("cpus", 1.0),
            "num_gpus": resources.get("gpus", 0.0),
            "name": f"kiln:{spec.task}",
        }
        if resources.get("memory"):
            options["memory"] = int(resources["memory"])
        ref = self._remote.options(**options).remote(spec, self._path)
        now = time.monotonic()
        deadline = now + timeout_s if timeout_s else math.inf
        self._running[ref] = (key, deadline, timeout_s or 0.0, time.time())

    def collect(self, wait_s: float) -> list[tuple[str, TaskResult]]:
        ray = self._ray
        if self._running and not self._done:
            soonest = min(entry[1] for entry in self._running.values())
            timeout = max(0.0, min(wait_s, soonest - time.monotonic()))
            ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
            if ready:  # and whatever else ended meanwhile
                ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
            for ref in ready:
                key, _, _, started = self._running.pop(ref)
                self._done.append((key, self._result(ref, started)))
            self._expire()
        done, self._done = self._done, []
        return done

    def _result(self, ref: Any, started: float) -> TaskResult:
        ray = self._ray
        try:
            result: TaskResult = ray.get(ref)
            return result
        except ray.exceptions.WorkerCrashedError:
            reason = "the Ray worker running it died"
        except ray.exceptions.OutOfMemoryError:
            reason = "the Ray worker running it was killed for using too much memory"
        except ray.exceptions.RayError as exc:
            reason = f"Ray could not run it: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        return TaskResult(False, error=reason, started=started, ended=time.time())

    def _expire(self) -> None:
        now = time.monotonic()
        for ref, (key, deadline, timeout, started) in list(self._running.items()):
            if now >= deadline:
                del self._running[ref]
                self._kill(ref)
                error = f"timed out after {timeout:g} s (the step's timeout); killed"
                self._done.append(
                    (key, TaskResult(False, error=error, started=started, ended=time.time()))
                )

    def _kill(self, ref: Any) -> None:
        try:
            self._ray.cancel(ref, force=True)
        except Exception as exc:  # already ended: nothing to stop
            print(f"kiln: could not cancel a Ray task: {exc}", file=sys.stderr)

    def cancel(self, key: str) -> None:
        for ref, entry in list(self._running.items()):
            if entry[0] == key:
                del self._running[ref]
                self._kill(ref)

    def close(self) -> None:
        for ref in list(self._running):
            self._kill(ref)
        self._running.clear()
        if self._started:
            self._ray.shutdown()
