"""Building a flow's graph: the flow function runs once with placeholders for step outputs.

Inside ``@flow``, calling a step runs nothing: it records a node (the step, its arguments,
the file and line of the call) and returns an :class:`Output` standing for the value the
step will return. Passing an output to another step draws an edge. The flow's parameters
are real values while it is built, so Python control flow over them works; control flow
over a step's output does not (its value is not known yet), and says so at its line.

Everything a graph can get wrong is found here, before any step runs: a missing or
unexpected argument, an output passed where the type hints cannot match, an output
unpacked into the wrong number of names. Cycles cannot be drawn (a step can only be given
outputs of calls made before it).
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.core import InvalidInput

if TYPE_CHECKING:
    from kiln.flows.steps import Step

__all__ = [
    "Each",
    "FlowDefinitionError",
    "Graph",
    "MapOutput",
    "Node",
    "Output",
    "Ref",
    "building",
    "each",
]


class FlowDefinitionError(InvalidInput):
    """The flow's graph is wrong; the message starts with the file and line to fix."""


@dataclass(frozen=True)
class Ref:
    """The output of node ``node``, or a part of it (``path``: indexes and attributes)."""

    node: int
    path: tuple[int | str, ...] = ()


@dataclass(frozen=True)
class Each:
    """Fan out over the items of an upstream output, known only when it has run."""

    ref: Ref


@dataclass(frozen=True)
class Unmapped:
    """A list (or any value) that ``.map`` hands whole to every task instead of fanning
    out over it: ``score.map(part=parts.each(), columns=unmapped(["a", "b"]))``."""

    value: Any


def unmapped(value: Any) -> Unmapped:
    """Give ``value`` whole to every task of a ``.map`` (a list is fanned out otherwise)."""
    return Unmapped(value)


@dataclass(frozen=True)
class MapRef:
    """All the outputs of a mapped node, handed on as one lazy sequence."""

    node: int


@dataclass
class Node:
    id: int
    step: Step[..., Any]
    name: str  # unique in the flow: the step's name, then name-2, name-3 for later calls
    args: dict[str, Any]  # parameter -> constant, Ref or MapRef
    fanned: dict[str, list[Any] | Each]  # for a map: parameter -> literal items or Each
    site: str  # "path/to/flow.py:12"
    mapped: bool = False

    def upstream(self) -> set[int]:
        found: set[int] = set()
        for value in (*self.args.values(), *self.fanned.values()):
            for part in value if isinstance(value, list) else (value,):
                if isinstance(part, Ref | MapRef):
                    found.add(part.node)
                elif isinstance(part, Each):
                    found.add(part.ref.node)
        return found


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)

    def add(self, node: Node) -> None:
        self.nodes.append(node)

    def unique_name(self, base: str) -> str:
        count = self.names.get(base, 0) + 1
        self.names[base] = count
        return base if count == 1 else f"{base}-{count}"


_current: contextvars.ContextVar[Graph | None] = contextvars.ContextVar(
    "kiln_flow_graph", default=None
)


def building() -> Graph | None:
    """The graph being built in this context, if a flow is being built."""
    return _current.get()


@typing.no_type_check
def trace(fn: Callable[..., Any], params: dict[str, Any]) -> tuple[Graph, Any]:
    """Run the flow function with ``params`` to build its graph; (graph, its result spec)."""
    graph = Graph()
    token = _current.set(graph)
    try:
        result = fn(**params)
    finally:
        _current.reset(token)
    return graph, _result_spec(result)


def _result_spec(value: Any) -> Any:
    if isinstance(value, Output):
        return value._ref
    if isinstance(value, MapOutput):
        return MapRef(value._node)
    if isinstance(value, tuple):
        return tuple(_result_spec(v) for v in value)
    if isinstance(value, list):
        return [_result_spec(v) for v in value]
    if isinstance(value, dict):
        return {k: _result_spec(v) for k, v in value.items()}
    return value


def call_site() -> str:
    """``file:line`` of the user's code that called into Kiln (the first frame outside)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("kiln.flows"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Output:
    """What a step will return, while the flow is being built (pass it to other steps)."""

    __slots__ = ("_annotation", "_ref", "_site", "_step")

    def __init__(self, ref: Ref, annotation: Any, site: str, step: str) -> None:
        self._ref = ref
        self._annotation = annotation
        self._site = site
        self._step = step

    def __repr__(self) -> str:
        part = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in self._ref.path)
        return f"<output of step {self._step!r}{part}>"

    def __getitem__(self, index: Any) -> Output:
        items = _tuple_items(self._annotation)
        if items is not None and isinstance(index, int) and not -len(items) <= index < len(items):
            raise FlowDefinitionError(
                f"{call_site()}: step {self._step!r} returns {len(items)} values; "
                f"index {index} is out of range"
            )
        if not isinstance(index, int | str):
            raise FlowDefinitionError(
                f"{call_site()}: index a step's output with an int or a str; got {index!r}"
            )
        part = items[index] if items is not None and isinstance(index, int) else Any
        return Output(Ref(self._ref.node, (*self._ref.path, index)), part, call_site(), self._step)

    def __getattr__(self, name: str) -> Output:
        if name.startswith("_"):
            raise AttributeError(name)
        hint = self._annotation
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            fields = {f.name: f.type for f in dataclasses.fields(hint)}
            if name not in fields:
                raise FlowDefinitionError(
                    f"{call_site()}: step {self._step!r} returns a {hint.__name__}, which has "
                    f"no field {name!r}; fields: {', '.join(fields)}"
                )
            hints = typing.get_type_hints(hint)
            part = hints.get(name, Any)
        else:
            part = Any
        return Output(Ref(self._ref.node, (*self._ref.path, name)), part, call_site(), self._step)

    def __iter__(self) -> Iterator[Output]:
        items = _tuple_items(self._annotation)
        if items is None:
            raise FlowDefinitionError(
                f"{call_site()}: the output of step {self._step!r} is unpacked, but its "
                "return type does not say how many values it holds; annotate it as "
                "tuple[X, Y] or index the output"
            )
        return iter([self[i] for i in range(len(items))])

    def __bool__(self) -> bool:
        raise FlowDefinitionError(
            f"{call_site()}: the output of step {self._step!r} is not known while the flow "
            "is being built, so the flow cannot branch on it; decide inside a step"
        )

    def each(self) -> Each:
        """Fan a ``.map`` out over this output's items (known once its step has run)."""
        return Each(self._ref)


class MapOutput:
    """What a mapped step will return: a sequence, one item per input item."""

    __slots__ = ("_node", "_step")

    def __init__(self, node: int, step: str) -> None:
        self._node = node
        self._step = step

    def __repr__(self) -> str:
        return f"<outputs of mapped step {self._step!r}>"

    def __iter__(self) -> Iterator[Any]:
        raise FlowDefinitionError(
            f"{call_site()}: the outputs of mapped step {self._step!r} are not known while "
            "the flow is being built; pass them to a step, which receives them as a sequence"
        )

    def __bool__(self) -> bool:
        raise FlowDefinitionError(
            f"{call_site()}: the outputs of mapped step {self._step!r} are not known while "
            "the flow is being built; decide inside a step"
        )


def each(output: Output) -> Each:
    """``step.map(x=each(out))``: fan out over ``out``'s items when its step has run."""
    if not isinstance(output, Output):
        raise FlowDefinitionError(
            f"{call_site()}: each() takes the output of a step; got {type(output).__name__}"
        )
    return output.each()


def _tuple_items(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if args and args[-1] is not Ellipsis:
            return args
    return None


def compatible(produced: Any, wanted: Any) -> bool:
    """Whether a value annotated ``produced`` may be passed where ``wanted`` is annotated.

    Only what is certain to fail is refused: two plain classes where neither is a subclass
    of the other (an int for a float is fine); anything less definite passes.
    """
    if produced in (Any, inspect.Parameter.empty, None) or wanted in (
        Any,
        inspect.Parameter.empty,
        object,
    ):
        return True
    if typing.get_origin(wanted) in (typing.Union, types.UnionType):
        return any(compatible(produced, w) for w in typing.get_args(wanted))
    produced_cls = typing.get_origin(produced) or produced
    wanted_cls = typing.get_origin(wanted) or wanted
    if not (isinstance(produced_cls, type) and isinstance(wanted_cls, type)):
        return True
    if wanted_cls is float and produced_cls is int:
        return True
    if wanted_cls in (Sequence, list) and produced_cls in (list, tuple):
        return True
    return issubclass(produced_cls, wanted_cls) or issubclass(wanted_cls, produced_cls)


def describe_type(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
