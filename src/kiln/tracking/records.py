"""Frozen records returned by reads. Later writes never change a record already returned."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "ArtifactRecord",
    "ExperimentRecord",
    "LineageEdge",
    "MetricPoint",
    "RunRecord",
    "RunStatus",
]


class RunStatus:
    """The four states of a run. ``KILLED`` also covers a run whose heartbeat stopped."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    ALL = (RUNNING, FINISHED, FAILED, KILLED)
    TERMINAL = (FINISHED, FAILED, KILLED)


def frozen_mapping(data: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(data or {}))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


@dataclass(frozen=True, kw_only=True)
class ExperimentRecord:
    id: str
    name: str
    created_at: datetime
    run_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": _iso(self.created_at),
            "run_count": self.run_count,
        }


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """What a run was when it was read: identity, status, params, latest metrics, tags."""

    id: str
    experiment: str
    experiment_id: str
    name: str
    status: str
    start_time: datetime
    end_time: datetime | None
    parent_id: str | None
    error: str | None
    params: Mapping[str, Any] = field(default_factory=frozen_mapping)
    metrics: Mapping[str, float] = field(default_factory=frozen_mapping)
    tags: Mapping[str, str] = field(default_factory=frozen_mapping)
    environment: Mapping[str, Any] = field(default_factory=frozen_mapping)

    @property
    def duration_s(self) -> float | None:
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "experiment": self.experiment,
            "name": self.name,
            "status": self.status,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "duration_s": self.duration_s,
            "parent_id": self.parent_id,
            "error": self.error,
            "params": dict(self.params),
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "tags": dict(self.tags),
            "environment": dict(self.environment),
        }


@dataclass(frozen=True, kw_only=True)
class MetricPoint:
    key: str
    step: int
    value: float
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "step": self.step,
            "value": _json_number(self.value),
            "timestamp": _iso(self.timestamp),
        }


@dataclass(frozen=True, kw_only=True)
class ArtifactRecord:
    """A logged file (``is_dir`` False) or, in a non-recursive listing, a directory."""

    path: str
    size: int
    digest: str | None
    is_dir: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "digest": self.digest, "is_dir": self.is_dir}


@dataclass(frozen=True, kw_only=True)
class LineageEdge:
    """``src`` --relation--> ``dst``; for example a dataset ``input_to`` a run."""

    src_kind: str
    src_id: str
    relation: str
    dst_kind: str
    dst_id: str
    properties: Mapping[str, Any]
    created_at: datetime
