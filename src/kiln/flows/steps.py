"""``@kiln.step``: a plain function whose parameters are its inputs and its return value
its output.

Called outside a flow, a step is the function it wraps. Called while a flow is being
built, it runs nothing and returns an :class:`~kiln.flows._graph.Output` placeholder;
``step.map(...)`` records one task per item. The options say how the flow runs it:

- ``retries`` / ``retry_delay``: a failed attempt (an exception, a dead worker, a timeout)
  is tried again up to ``retries`` times, waiting ``retry_delay`` seconds doubled per
  attempt, with jitter, so that retries of many tasks do not arrive together;
- ``timeout``: seconds (or ``"30m"``, ``"2h"``) after which the attempt is killed;
- ``cache``: a task whose code and inputs were seen before reuses that output;
- ``resources``: ``{"cpus": 1, "memory": "2GB", "gpus": 0}``, what one task needs (for an
  executor that places tasks by resources; local processes run one task per process).
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, ParamSpec, TypeVar, overload

from kiln.core import InvalidInput
from kiln.flows._checks import check_checks, checked, checks_digest
from kiln.flows._codehash import code_hash
from kiln.flows._graph import (
    Each,
    FlowDefinitionError,
    MapOutput,
    MapRef,
    Node,
    Output,
    Ref,
    Unmapped,
    building,
    call_site,
    compatible,
    describe_type,
)

__all__ = ["Resources", "Step", "StepOptions", "parse_seconds", "step"]

P = ParamSpec("P")
R = TypeVar("R")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_seconds(value: float | str | None, what: str) -> float | None:
    """``30``, ``"30s"``, ``"30m"``, ``"2h"`` as seconds (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be seconds or a duration like '30m'; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise InvalidInput(
                f"{what} must be seconds or a duration like '30s', '30m' or '2h'; got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise InvalidInput(f"{what} must be more than 0 seconds; got {value!r}")
    return seconds


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one task of a step needs: for an executor that places tasks by resources
    (a cluster's); local processes run one task per process whatever it says."""

    cpus: float = 1.0
    memory: int | None = None  # bytes
    gpus: float = 0.0

    @classmethod
    def of(cls, value: Mapping[str, Any] | Resources | None) -> Resources:
        if value is None:
            return cls()
        if isinstance(value, Resources):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInput(
                f"resources must be a dict like {{'cpus': 2, 'memory': '4GB'}}; got {value!r}"
            )
        unknown = set(value) - {"cpus", "memory", "gpus"}
        if unknown:
            raise InvalidInput(
                f"unknown resource {sorted(unknown)[0]!r}; known: cpus, memory, gpus"
            )
        cpus, gpus = value.get("cpus", 1.0), value.get("gpus", 0.0)
        for name, number in (("cpus", cpus), ("gpus", gpus)):
            if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                raise InvalidInput(f"resources[{name!r}] must be a number >= 0; got {number!r}")
        return cls(cpus=float(cpus), memory=_bytes(value.get("memory")), gpus=float(gpus))


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", str(value), re.IGNORECASE)
    if match is None:
        raise InvalidInput(f"resources['memory'] must be bytes or like '4GB'; got {value!r}")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
    return int(float(match.group(1)) * scale)


@dataclass(frozen=True, kw_only=True)
class StepOptions:
    retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    cache: bool = True
    resources: Resources = Resources()
    checks: Mapping[str, Any] = field(default_factory=dict)  # name or "return" -> Schema


class Step(Generic[P, R]):
    """A step: the function, its options, and what the graph builder needs to know."""

    def __init__(self, fn: Callable[P, R], options: StepOptions, name: str | None = None) -> None:
        if not callable(fn):
            raise InvalidInput(f"@step decorates a function; got {fn!r}")
        self.fn = fn
        self.options = options
        self.name: str = name or str(getattr(fn, "__name__", "step"))
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)
        self._hints: dict[str, Any] | None = None
        self._code: str | None = None

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"

    @property
    def hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except Exception:  # unresolvable hints are not checked, never fatal
                self._hints = {}
        return self._hints

    @property
    def code_hash(self) -> str:
        """The hash of this step's code and the project code it calls (for its cache key)."""
        if self._code is None:
            self._code = code_hash(self.fn)
            if self.options.checks:
                self._code += checks_digest(self.options.checks)
        return self._code

    @property
    def runnable(self) -> Callable[..., Any]:
        """What a worker calls: the function, behind its quality gates if it has any."""
        if not self.options.checks:
            return self.fn
        return checked(self.fn, self.options.checks, self.name)

    def invalidate(self) -> int:
        """Forget every cached output of this step; its next run computes afresh."""
        from kiln.flows._records import forget_cached

        return forget_cached(self.name)

    # -- in a flow -------------------------------------------------------------------------

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        graph = building()
        if graph is None:
            if not self.options.checks:
                return self.fn(*args, **kwargs)
            given = self.signature.bind(*args, **kwargs)  # gated as in a flow
            given.apply_defaults()
            return self.runnable(**given.arguments)
        site = call_site()
        bound = self._bind(args, kwargs, site)
        node = Node(
            id=len(graph.nodes),
            step=self,
            name=graph.unique_name(self.name),
            args={k: self._arg(k, v, site) for k, v in bound.items()},
            fanned={},
            site=site,
        )
        graph.add(node)
        return Output(Ref(node.id), self.hints.get("return", Any), site, self.name)

    def map(self, *args: Any, **kwargs: Any) -> Any:
        """One task per item: a list (or ``output.each()``) argument fans out, every other
        argument (and a list wrapped in ``unmapped()``) goes to every task. Downstream,
        the results are one lazy sequence."""
        graph = building()
        if graph is None:
            raise FlowDefinitionError(
                f"{call_site()}: {self.name}.map() builds a fan-out inside a @flow; outside "
                "one, call the step in a loop"
            )
        site = call_site()
        bound = self._bind(args, kwargs, site)
        fanned: dict[str, list[Any] | Each] = {}
        fixed: dict[str, Any] = {}
        for name, value in bound.items():
            if isinstance(value, Unmapped):
                fixed[name] = self._arg(name, value.value, site)
            elif isinstance(value, list):
                fanned[name] = [self._arg(name, v, site) for v in value]
            elif isinstance(value, Each):
                fanned[name] = value
            else:
                fixed[name] = self._arg(name, value, site)
        if not fanned:
            raise FlowDefinitionError(
                f"{site}: {self.name}.map() needs a list argument (or output.each()) to fan "
                "out over; every argument given is a single value"
            )
        lengths = {len(v) for v in fanned.values() if isinstance(v, list)}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}={len(v)}" for k, v in fanned.items() if isinstance(v, list))
            raise FlowDefinitionError(
                f"{site}: {self.name}.map() fans out over lists of different lengths ({sizes}); "
                "give lists of one length, which are zipped"
            )
        node = Node(
            id=len(graph.nodes),
            step=self,
            name=graph.unique_name(self.name),
            args=fixed,
            fanned=fanned,
            site=site,
            mapped=True,
        )
        graph.add(node)
        return MapOutput(node.id, self.name)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any], site: str) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise FlowDefinitionError(f"{site}: step {self.name!r}: {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _arg(self, name: str, value: Any, site: str) -> Any:
        if isinstance(value, Output):
            wanted = self.hints.get(name, Any)
            if not compatible(value._annotation, wanted):
                raise FlowDefinitionError(
                    f"{site}: step {self.name!r} parameter {name!r} takes "
                    f"{describe_type(wanted)}, but it is given {value!r}, which returns "
                    f"{describe_type(value._annotation)} (from {value._site})"
                )
            return value._ref
        if isinstance(value, MapOutput):
            return MapRef(value._node)
        if isinstance(value, Each):
            raise FlowDefinitionError(
                f"{site}: output.each() fans out a .map(); step {self.name!r} is called "
                "once: pass the output itself"
            )
        return value


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(
    *,
    retries: int = 0,
    retry_delay: float | str = 1.0,
    timeout: float | str | None = None,
    cache: bool = True,
    resources: Mapping[str, Any] | Resources | None = None,
    name: str | None = None,
    checks: Mapping[str, Any] | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    retries: int = 0,
    retry_delay: float | str = 1.0,
    timeout: float | str | None = None,
    cache: bool = True,
    resources: Mapping[str, Any] | Resources | None = None,
    name: str | None = None,
    checks: Mapping[str, Any] | None = None,
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Make a function a step (``@step`` or ``@step(retries=2, timeout="30m")``).

    ``checks`` are quality gates: ``{"df": schema, "return": schema}`` validates that
    argument before the step runs and its value after (``kiln.validation``); a failing
    gate fails the task with the report, which is kept on the task's run either way.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInput(f"The 'retries' parameter of step must be an int >= 0. Got {retries!r}.")
    if not isinstance(cache, bool):
        raise InvalidInput(f"The 'cache' parameter of step must be True or False. Got {cache!r}.")
    delay = parse_seconds(retry_delay, "The 'retry_delay' parameter of step")
    options = StepOptions(
        retries=retries,
        retry_delay=delay if delay is not None else 1.0,
        timeout=parse_seconds(timeout, "The 'timeout' parameter of step"),
        cache=cache,
        resources=Resources.of(resources),
    )

    def wrap(f: Callable[P, R]) -> Step[P, R]:
        gated = replace(options, checks=check_checks(f, checks)) if checks else options
        return Step(f, gated, name)

    return wrap(fn) if fn is not None else wrap
