"""Frozen records of flow runs, tasks and schedules, as read back from the metadata store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.flows._values import ValueRef

__all__ = ["FlowGraph", "FlowNode", "FlowRunRecord", "Schedule", "ScheduledRun", "TaskRecord"]


@dataclass(frozen=True)
class FlowRunRecord:
    """One run of a flow. Its id is also its tracked run's id (``kiln runs show ID``)."""

    id: str
    flow: str
    target: str  # "pkg.module:function", what ``kiln flows resume`` imports
    params: dict[str, Any]
    status: str  # running, finished, failed, cancelled
    executor: str
    created_at: int  # ms since the epoch
    updated_at: int
    cancel_requested: bool
    error: str | None
    schedule: str | None = None  # the name of the schedule that started it


@dataclass(frozen=True)
class TaskRecord:
    """One task of a flow run: a step call, or one item of a mapped step."""

    run_id: str
    task: str  # "train", "train-2" for a second call, "score[3]" for a mapped item
    step: str
    status: str  # pending, running, finished, cached, failed, cancelled
    attempts: int
    cache_key: str | None
    output: ValueRef | None
    child_run_id: str | None  # the tracked run of its last attempt
    started_at: int | None
    ended_at: int | None
    history: tuple[dict[str, Any], ...]  # every attempt: its start, end, error, traceback

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at) / 1000.0)

    @property
    def cache_hit(self) -> bool:
        return self.status == "cached"


@dataclass(frozen=True)
class ScheduledRun:
    """What a scheduler did for one due time of a schedule: started a run or skipped it.

    ``status`` is ``starting`` (claimed, its process launched), ``started`` (the flow run
    ``run_id`` exists; ``run_status`` is that run's own status), ``failed`` (the process
    could not start the run: ``error`` says why and where its log is) or ``skipped`` (the
    missed policy passed it over). ``skipped`` counts the missed due times this decision
    passed over, from ``skipped_from`` up to ``due_at``.
    """

    schedule_id: str
    schedule: str
    due_at: int  # ms since the epoch, UTC
    status: str
    run_id: str | None
    run_status: str | None
    skipped: int
    skipped_from: int | None
    claimed_at: int
    claimed_by: str  # host:pid of the scheduler that claimed it
    error: str | None


@dataclass(frozen=True)
class Schedule:
    """A flow on a cron schedule: what runs, when next, and what happened last."""

    id: str
    name: str
    flow: str
    target: str  # "pkg.module:function", imported from ``workdir``
    cron: str  # five fields or an @alias, evaluated in UTC
    params: dict[str, str]  # as ``--param NAME=VALUE`` takes them
    executor: str
    max_parallel: int | None
    missed: str  # skip, run-once
    workdir: str
    next_due_at: int  # ms since the epoch, UTC
    created_at: int
    updated_at: int
    last: ScheduledRun | None  # the latest due time acted on


@dataclass(frozen=True)
class FlowNode:
    """One call of a step in a flow's graph: a task, or a mapped step's tasks
    (``score[0]``, ``score[1]``...). ``upstream`` names the nodes whose outputs it reads."""

    name: str  # unique in the flow: "train", "train-2" for a second call
    step: str
    upstream: tuple[str, ...]
    mapped: bool
    site: str  # "path/to/flow.py:12", where the flow calls the step


@dataclass(frozen=True)
class FlowGraph:
    """The graph a flow run ran: its nodes in the order the flow called them.

    ``recorded`` is True when the run stored its graph as it started; False when it was
    rebuilt from the flow's code (a run from before graphs were recorded), which shows
    the code as it is now.
    """

    run_id: str
    flow: str
    nodes: tuple[FlowNode, ...]
    recorded: bool = True

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(upstream, downstream) node names, in node order."""
        return [(up, node.name) for node in self.nodes for up in node.upstream]

    @staticmethod
    def node_of(task: str) -> str:
        """The node a task belongs to: ``score[3]`` -> ``score``."""
        return task.split("[", 1)[0] if task.endswith("]") else task

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "nodes": [
                {
                    "name": n.name,
                    "step": n.step,
                    "upstream": list(n.upstream),
                    "mapped": n.mapped,
                    "site": n.site,
                }
                for n in self.nodes
            ],
        }
