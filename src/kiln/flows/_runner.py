"""The orchestrator: runs a built graph's tasks on an executor, in dependency order.

Each node of the graph becomes one task, or one per item for a mapped node (for
``output.each()``, once the output is known). A task is ready when every node it reads has
finished. A ready task is, in this order: reused (a resumed run's finished task), served
from the step cache (same code, same inputs), or submitted to the executor while fewer
than ``max_parallel`` run. A failed attempt is retried after its step's back-off; a task
out of retries fails the run once the tasks still running have ended (their outputs are
kept for a resume). Every state change is written to the metadata store as it happens,
so ``kiln flows show`` sees a live run and a killed orchestrator loses nothing finished.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kiln.flows import _records
from kiln.flows._graph import Each, Graph, MapRef, Node, Ref
from kiln.flows._values import ValueRef, dump, load
from kiln.flows._worker import Arg, TaskResult, TaskSpec, walk
from kiln.flows.executors import Executor
from kiln.flows.records import TaskRecord
from kiln.tracking import TrackingClient

__all__ = ["Event", "Runner"]

_POLL_S = 0.5  # how often a cancel request is looked for


@dataclass(frozen=True)
class Event:
    """What the orchestrator reports as it goes: ``kind`` is started, finished, cached,
    reused, retrying or failed."""

    kind: str
    task: str
    step: str
    attempt: int = 0
    seconds: float | None = None
    error: str | None = None


@dataclass
class _Task:
    key: str
    node: Node
    index: int | None
    status: str = "waiting"  # waiting, queued, running, finished, failed, cancelled
    attempts: int = 0  # every attempt, across resumes (what is shown)
    tries: int = 0  # attempts in this execution (what the retry budget counts)
    history: list[dict[str, Any]] = field(default_factory=list)
    output: ValueRef | None = None
    args: dict[str, Arg] | None = None
    cache_key: str | None = None
    retry_at: float = 0.0


class FlowStopped(Exception):
    """Internal: the run ended without finishing (failed or cancelled)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class Runner:
    def __init__(
        self,
        *,
        graph: Graph,
        run_id: str,
        experiment: str,
        executor: Executor,
        max_parallel: int,
        cache: bool,
        client: TrackingClient,
        settings: dict[str, Any],
        prior: dict[str, TaskRecord],
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.graph = graph
        self.run_id = run_id
        self.experiment = experiment
        self.executor = executor
        self.max_parallel = max_parallel
        self.cache = cache
        self.client = client
        self.settings = settings
        self.prior = prior
        self.on_event = on_event
        self.tasks: dict[str, _Task] = {}
        self.by_node: dict[int, list[_Task]] = {}
        self.expanded: set[int] = set()
        self.running: set[str] = set()
        self.failure: str | None = None
        self._fns: dict[int, bytes] = {}

    # -- the graph as tasks -----------------------------------------------------------------

    def _expand(self, node: Node) -> None:
        """Make the node's tasks (a mapped node's once its item count is known)."""
        if node.id in self.expanded:
            return
        count: int | None = None
        if node.mapped:
            # an Each's count is its upstream output's length, read now it is known
            counts = {
                name: len(values) if isinstance(values, list) else len(self._value_of(values.ref))
                for name, values in node.fanned.items()
            }
            count = min(counts.values())
            if len(set(counts.values())) > 1 and self.failure is None:
                sizes = ", ".join(f"{name}={n}" for name, n in counts.items())
                self.failure = (
                    f"{node.site}: {node.step.name}.map() fans out over items of different "
                    f"lengths ({sizes}); wrap a list meant for every task in unmapped()"
                )
                count = 0
        self.expanded.add(node.id)
        if count is None:
            tasks = [_Task(node.name, node, None)]
        else:
            tasks = [_Task(f"{node.name}[{i}]", node, i) for i in range(count)]
        self.by_node[node.id] = tasks
        for task in tasks:
            self.tasks[task.key] = task

    def _value_of(self, ref: Ref) -> Any:
        upstream = self.by_node[ref.node][0]
        assert upstream.output is not None
        return walk(load(upstream.output, self.client.blobs), ref.path)

    def _node_done(self, node_id: int) -> bool:
        tasks = self.by_node.get(node_id)
        return tasks is not None and all(t.status == "finished" for t in tasks)

    def _ready(self, node: Node) -> bool:
        return all(self._node_done(n) for n in node.upstream())

    # -- arguments and cache keys -------------------------------------------------------------

    def _arg(self, value: Any) -> Arg:
        if isinstance(value, Ref):
            out = self.by_node[value.node][0].output
            assert out is not None
            return ("ref", out.to_json(), list(value.path))
        if isinstance(value, MapRef):
            outs = [t.output for t in self.by_node[value.node]]
            return ("seq", [o.to_json() for o in outs if o is not None])
        return ("const", value)

    def _args(self, task: _Task) -> dict[str, Arg]:
        node = task.node
        args = {name: self._arg(value) for name, value in node.args.items()}
        for name, values in node.fanned.items():
            assert task.index is not None
            if isinstance(values, Each):
                out = self.by_node[values.ref.node][0].output
                assert out is not None
                args[name] = ("item", out.to_json(), list(values.ref.path), task.index)
            else:
                args[name] = self._arg(values[task.index])
        order = list(node.step.signature.parameters)
        return {name: args[name] for name in order if name in args}

    @staticmethod
    def _fingerprint(arg: Arg) -> Any:
        kind = arg[0]
        if kind == "const":
            try:
                _, data, _ = dump(arg[1])
            except Exception:
                data = repr(arg[1]).encode()
            return ["c", hashlib.sha256(data).hexdigest()]
        if kind == "seq":
            return ["s", [ValueRef.from_json(r).digest for r in arg[1]]]
        ref = ValueRef.from_json(arg[1])
        return [kind, ref.digest, arg[2], *arg[3:]]

    def _cache_key(self, task: _Task, args: dict[str, Arg]) -> str:
        step = task.node.step
        parts = {
            "step": step.name,
            "code": step.code_hash,
            "args": {name: self._fingerprint(arg) for name, arg in args.items()},
        }
        return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()

    # -- running ------------------------------------------------------------------------------

    def run(self) -> None:
        """Run every task; return when all finished, raise FlowStopped otherwise."""
        for node in self.graph.nodes:
            if not any(isinstance(v, Each) for v in node.fanned.values()):
                self._expand(node)
        next_poll = time.monotonic() + _POLL_S
        while True:
            while self._schedule():  # reuse and cache hits can make more tasks ready
                pass
            if not self.running:
                if self.failure is not None:
                    raise FlowStopped("failed", self.failure)
                if self._complete():
                    return
                retries = [t.retry_at for t in self.tasks.values() if t.status == "waiting"]
                if not any(retries):
                    raise FlowStopped("failed", "no task can run: an input never arrived")
                time.sleep(max(0.0, min(r for r in retries if r) - time.monotonic()))
                continue
            for key, result in self.executor.collect(_POLL_S):
                self._finished(key, result)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + _POLL_S
                if _records.cancel_requested(self.client, self.run_id):
                    self.cancel_all()
                    raise FlowStopped("cancelled", "cancelled on request")

    def _complete(self) -> bool:
        return len(self.expanded) == len(self.graph.nodes) and all(
            t.status == "finished" for t in self.tasks.values()
        )

    def _schedule(self) -> bool:
        """Start (or reuse) what is ready; whether anything changed."""
        changed = False
        for node in self.graph.nodes:
            if node.id not in self.expanded and self._ready(node):
                self._expand(node)
                changed = True
        if self.failure is not None:
            return False
        now = time.monotonic()
        for task in list(self.tasks.values()):
            if task.status != "waiting" or task.retry_at > now or not self._ready(task.node):
                continue
            if task.args is None:
                task.args = self._args(task)
            if self._reuse(task):
                changed = True
                continue
            if len(self.running) >= self.max_parallel or self.executor.slots() <= 0:
                break
            self._submit(task)
        return changed

    def _reuse(self, task: _Task) -> bool:
        """A resumed run's finished task, or a cache hit: no need to run it."""
        prior = self.prior.pop(task.key, None)
        if prior is not None and prior.status in ("finished", "cached") and prior.output:
            task.status, task.output = "finished", prior.output
            task.attempts, task.history = prior.attempts, list(prior.history)
            self._emit(Event("reused", task.key, task.node.step.name))
            return True
        if prior is not None:  # it failed, or its process died under it: its history stays
            task.attempts, task.history = prior.attempts, list(prior.history)
            if prior.status == "running":
                task.history.append({"attempt": prior.attempts, "status": "interrupted"})
        step = task.node.step
        assert task.args is not None
        task.cache_key = self._cache_key(task, task.args)
        if not (self.cache and step.options.cache):
            return False
        hit = _records.cached(self.client, task.cache_key)
        if hit is None:
            return False
        task.status, task.output = "finished", hit
        self._record_end(task, "cached")
        self._emit(Event("cached", task.key, step.name))
        return True

    def _submit(self, task: _Task) -> None:
        step = task.node.step
        task.attempts += 1
        task.tries += 1
        task.status = "running"
        _records.start_task(
            self.client, self.run_id, task.key, step.name, task.attempts, task.history
        )
        in_process = getattr(self.executor, "in_process", False)
        fn = b"" if in_process else self._fns.get(task.node.id)
        if fn is None:
            import cloudpickle

            fn = self._fns[task.node.id] = cloudpickle.dumps(step.runnable)
        assert task.args is not None
        spec = TaskSpec(
            run_id=self.run_id,
            task=task.key,
            step=step.name,
            fn=fn,
            args=task.args,
            settings=self.settings,
            experiment=self.experiment,
            attempt=task.attempts,
            resources=self._resources(step),
            function=step.runnable if in_process else None,
        )
        self.running.add(task.key)
        self._emit(Event("started", task.key, step.name, task.attempts))
        self.executor.submit(task.key, spec, step.options.timeout)

    @staticmethod
    def _resources(step: Any) -> dict[str, float]:
        wanted = step.options.resources
        resources = {"cpus": wanted.cpus, "gpus": wanted.gpus}
        if wanted.memory is not None:
            resources["memory"] = float(wanted.memory)
        return resources

    def _finished(self, key: str, result: TaskResult) -> None:
        task = self.tasks[key]
        self.running.discard(key)
        step = task.node.step
        seconds = max(0.0, result.ended - result.started)
        if result.ok and result.output is not None:
            task.output = ValueRef.from_json(result.output)
            task.status = "finished"
            task.history.append(
                {"attempt": task.attempts, "status": "finished", "seconds": round(seconds, 4)}
            )
            self._record_end(task, "finished", result.child_run_id)
            self._emit(Event("finished", key, step.name, task.attempts, seconds))
            return
        task.history.append(
            {
                "attempt": task.attempts,
                "status": "failed",
                "seconds": round(seconds, 4),
                "error": result.error,
                "traceback": result.traceback,
                "run_id": result.child_run_id,
            }
        )
        options = step.options
        if task.tries <= options.retries and self.failure is None:
            delay = options.retry_delay * 2 ** (task.tries - 1) * random.uniform(0.5, 1.5)
            task.status = "waiting"
            task.retry_at = time.monotonic() + delay
            _records.upsert_task(
                self.client, self.run_id, key, step.name, status="retrying", history=task.history
            )
            self._emit(Event("retrying", key, step.name, task.attempts, seconds, result.error))
            return
        task.status = "failed"
        self._record_end(task, "failed", result.child_run_id)
        self._emit(Event("failed", key, step.name, task.attempts, seconds, result.error))
        if self.failure is None:
            tries = "1 attempt" if task.tries == 1 else f"{task.tries} attempts"
            self.failure = f"step {key!r} failed after {tries}: {result.error}"

    def _record_end(self, task: _Task, status: str, child_run_id: str | None = None) -> None:
        """A task's last state, with its output (entering the step cache when it may)."""
        step = task.node.step
        _records.finish_task(
            self.client,
            self.run_id,
            task.key,
            step.name,
            status=status,
            history=task.history,
            output=task.output if status in ("finished", "cached") else None,
            cache_key=task.cache_key,
            child_run_id=child_run_id,
            cache=status == "finished" and self.cache and step.options.cache,
        )

    def cancel_all(self) -> None:
        for key in list(self.running):
            self.executor.cancel(key)
            task = self.tasks[key]
            task.status = "cancelled"
            self._record_end(task, "cancelled")
        self.running.clear()

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
