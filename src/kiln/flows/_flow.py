"""``@kiln.flow``: a function that calls steps; ``flow.run(**params)`` runs it.

Running a flow builds its graph first (the function runs once with placeholders, see
``kiln.flows._graph``), so every definition mistake is reported, with its file and line,
before any step runs. Then the run is recorded (a flow run, which is also a tracked run),
and its tasks run on the executor. ``flow.resume(run_id)`` (or ``kiln flows resume``)
runs again only what did not finish, reusing every finished output, whether the run
failed, was cancelled, or its process was killed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import runpy
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from kiln.core import InvalidInput, KilnError
from kiln.flows import _records
from kiln.flows._graph import MapRef, Ref, trace
from kiln.flows._runner import Event, FlowStopped, Runner
from kiln.flows._values import ValueRef, load
from kiln.flows._worker import LazySequence, walk
from kiln.flows.executors import Executor, open_executor, settings_snapshot
from kiln.flows.graphs import GRAPH_ARTIFACT, describe
from kiln.flows.records import FlowRunRecord, TaskRecord
from kiln.tracking import TrackingClient, default_client

__all__ = ["Flow", "FlowFailed", "FlowRun", "flow", "load_flow"]

P = ParamSpec("P")
R = TypeVar("R")


class FlowFailed(KilnError):
    """A flow run ended without finishing; ``run_id`` says what to resume."""

    def __init__(self, message: str, run_id: str, status: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class FlowRun:
    """A finished flow run: its id, its tasks, and the flow's return value (loaded on
    first access; a mapped step's outputs come back as a lazy sequence)."""

    def __init__(
        self,
        run_id: str,
        flow: str,
        spec: Any,
        node_tasks: dict[int, list[str]],
        client: TrackingClient,
    ) -> None:
        self.id = run_id
        self.flow = flow
        self._spec = spec
        self._node_tasks = node_tasks
        self._client = client

    def __repr__(self) -> str:
        return f"<FlowRun {self.id} of flow {self.flow!r}>"

    @property
    def record(self) -> FlowRunRecord:
        return _records.get_run(self.id, client=self._client)

    def tasks(self) -> list[TaskRecord]:
        return _records.tasks(self.id, client=self._client)

    @functools.cached_property
    def result(self) -> Any:
        outputs = {t.task: t.output for t in self.tasks()}
        return _materialize(self._spec, self._node_tasks, outputs, self._client)


def _materialize(
    spec: Any, nodes: dict[int, list[str]], outputs: dict[str, ValueRef | None], client: Any
) -> Any:
    if isinstance(spec, Ref):
        ref = outputs[nodes[spec.node][0]]
        assert ref is not None
        return walk(load(ref, client.blobs), spec.path)
    if isinstance(spec, MapRef):
        refs = [outputs[k] for k in nodes[spec.node]]
        return LazySequence([r.to_json() for r in refs if r is not None], client.blobs)
    if isinstance(spec, tuple):
        return tuple(_materialize(s, nodes, outputs, client) for s in spec)
    if isinstance(spec, list):
        return [_materialize(s, nodes, outputs, client) for s in spec]
    if isinstance(spec, dict):
        return {k: _materialize(v, nodes, outputs, client) for k, v in spec.items()}
    return spec


def _target(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", "__main__")
    return f"{module}:{getattr(fn, '__qualname__', getattr(fn, '__name__', 'flow'))}"


class Flow(Generic[P, R]):
    """A flow: its function, name and experiment; run it with :meth:`run`."""

    def __init__(
        self, fn: Callable[P, R], *, name: str | None = None, experiment: str | None = None
    ):
        if not callable(fn):
            raise InvalidInput(f"@flow decorates a function; got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "flow"))
        self.experiment: str = experiment or self.name
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<flow {self.name!r}>"

    @property
    def target(self) -> str:
        return _target(self.fn)

    def params(self, raw: Mapping[str, Any], *, from_text: bool = False) -> dict[str, Any]:
        """The flow's parameters checked against its signature (and converted from text
        by their type hints when ``from_text``, as the CLI passes them)."""
        known = self.signature.parameters
        unknown = [k for k in raw if k not in known]
        if unknown:
            raise InvalidInput(
                f"flow {self.name!r} has no parameter {unknown[0]!r}; its parameters: "
                f"{', '.join(known) or '(none)'}"
            )
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception:
            hints = {}
        values: dict[str, Any] = {}
        for name, param in known.items():
            if name in raw:
                value = raw[name]
                if from_text and isinstance(value, str):
                    value = _convert(name, value, hints.get(name, param.annotation))
                values[name] = value
            elif param.default is inspect.Parameter.empty:
                raise InvalidInput(
                    f"flow {self.name!r} needs parameter {name!r}"
                    + (f" ({_type_name(hints[name])})" if name in hints else "")
                )
            else:
                values[name] = param.default
        return values

    def graph(self, **params: Any) -> Any:
        """The graph the flow builds with ``params`` (checked; nothing runs)."""
        return trace(self.fn, self.params(params))[0]

    def run(
        self,
        *,
        executor: str | Executor = "processes",
        max_parallel: int | None = None,
        cache: bool = True,
        on_event: Callable[[Event], None] | None = None,
        on_start: Callable[[str], None] | None = None,
        client: TrackingClient | None = None,
        **params: Any,
    ) -> FlowRun:
        """Run the flow with ``params``; raises :class:`FlowFailed` (naming the run to
        resume) when a step fails for good or the run is cancelled."""
        from kiln.tracking import start_run

        client = client or default_client()
        values = self.params(params)
        graph, spec = trace(self.fn, values)  # every definition error, before anything runs
        engine = open_executor(executor, max_parallel)  # its first worker starts meanwhile
        try:
            tracked = start_run(
                self.experiment, name=self.name, tags={"kiln.flow": self.name}, client=client
            )
            plain = {k: v for k, v in values.items() if isinstance(v, bool | int | float | str)}
            if plain:
                tracked.log_params(plain)
            _records.create_run(
                client,
                tracked.id,
                flow=self.name,
                target=self.target,
                params=values,
                executor=engine.name,
            )
            # The graph as it ran, for `kiln.flows.run_graph` and the dashboard.
            described = describe(graph, run_id=tracked.id, flow=self.name)
            tracked.log_dict(described.to_dict(), GRAPH_ARTIFACT)
        except BaseException:
            engine.close()
            raise
        if on_start is not None:
            on_start(tracked.id)
        return self._execute(
            tracked, graph, spec, engine, max_parallel, cache, {}, on_event, client
        )

    def resume(
        self,
        run_id: str,
        *,
        executor: str | Executor = "processes",
        max_parallel: int | None = None,
        cache: bool = True,
        on_event: Callable[[Event], None] | None = None,
        client: TrackingClient | None = None,
    ) -> FlowRun:
        """Run ``run_id`` again, reusing every task it finished; same parameters."""
        from kiln.tracking import reopen_run

        client = client or default_client()
        record = _records.get_run(run_id, client=client)
        if record.flow != self.name:
            raise InvalidInput(f"run {run_id} is a run of flow {record.flow!r}, not {self.name!r}")
        if record.status == "finished":
            raise InvalidInput(f"flow run {run_id} already finished; nothing to resume")
        graph, spec = trace(self.fn, self.params(record.params))
        engine = open_executor(executor, max_parallel)
        try:
            prior = {t.task: t for t in _records.tasks(run_id, client=client)}
            tracked = reopen_run(run_id, client=client)
            _records.set_run_status(client, run_id, "running", executor=engine.name)
        except BaseException:
            engine.close()
            raise
        return self._execute(
            tracked, graph, spec, engine, max_parallel, cache, prior, on_event, client
        )

    def _execute(
        self,
        tracked: Any,
        graph: Any,
        spec: Any,
        engine: Executor,
        max_parallel: int | None,
        cache: bool,
        prior: dict[str, TaskRecord],
        on_event: Callable[[Event], None] | None,
        client: TrackingClient,
    ) -> FlowRun:
        from kiln.tracking import RunStatus

        runner = Runner(
            graph=graph,
            run_id=tracked.id,
            experiment=self.experiment,
            executor=engine,
            max_parallel=max_parallel or int(getattr(engine, "max_workers", 1)),
            cache=cache,
            client=client,
            settings=settings_snapshot(),
            prior=prior,
            on_event=on_event,
        )
        try:
            runner.run()
        except FlowStopped as stop:
            _records.set_run_status(client, tracked.id, stop.status, error=str(stop))
            status = RunStatus.KILLED if stop.status == "cancelled" else RunStatus.FAILED
            tracked.end(status, error=str(stop))
            raise FlowFailed(
                f"flow {self.name!r} run {tracked.id} {stop.status}: {stop}; resume it with "
                f"`kiln flows resume {tracked.id}`",
                tracked.id,
                stop.status,
            ) from None
        except BaseException as exc:
            runner.cancel_all()
            _records.set_run_status(client, tracked.id, "failed", error=repr(exc))
            tracked.end(RunStatus.KILLED, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            engine.close()
        _records.set_run_status(client, tracked.id, "finished")
        tracked.end(RunStatus.FINISHED)
        node_tasks = {n: [t.key for t in ts] for n, ts in runner.by_node.items()}
        return FlowRun(tracked.id, self.name, spec, node_tasks, client)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _convert(name: str, text: str, hint: Any) -> Any:
    """A CLI ``--param name=text`` as the flow's type hint says."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null") and len(options) < len(typing.get_args(hint)):
            return None
        hint = options[0] if len(options) == 1 else str
    try:
        if hint is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if hint in (int, float, str):
            return hint(text)
        if hint in (list, dict) or typing.get_origin(hint) in (list, dict):
            import orjson

            return orjson.loads(text)
    except ValueError:
        raise InvalidInput(
            f"--param {name}={text}: {_type_name(hint)} expected, got {text!r}"
        ) from None
    return text


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...
@overload
def flow(
    *, name: str | None = None, experiment: str | None = None
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    experiment: str | None = None,
) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Make a function that calls steps a flow (``@flow`` or ``@flow(name=...)``)."""

    def wrap(f: Callable[P, R]) -> Flow[P, R]:
        return Flow(f, name=name, experiment=experiment)

    return wrap(fn) if fn is not None else wrap


def load_flow(target: str) -> Flow[Any, Any]:
    """The flow ``pkg.module:function`` or ``path/to/file.py:function`` names, imported
    the way Python imports it from the current directory (as ``kiln flows run`` does)."""
    module_name, sep, attr = target.rpartition(":") if isinstance(target, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise InvalidInput(f"name a flow as pkg.module:function; got {target!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        if module_name.endswith(".py"):
            namespace = runpy.run_path(module_name, run_name="kiln_flow")
            found = namespace.get(attr)
        else:
            found = getattr(importlib.import_module(module_name), attr, None)
    except (ImportError, OSError) as exc:
        raise InvalidInput(f"cannot import {module_name!r}: {exc}") from None
    if not isinstance(found, Flow):
        what = "nothing" if found is None else f"a {type(found).__name__}"
        raise InvalidInput(f"{target!r} is {what}, not a @kiln.flow")
    return found
