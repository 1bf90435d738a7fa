"""Frozen records of flow runs and their tasks, as read back from the metadata store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.flows._values import ValueRef

__all__ = ["FlowRunRecord", "TaskRecord"]


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
