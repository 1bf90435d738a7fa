"""Layer 2: experiment tracking on the metadata and artifact stores.

Log into a live :class:`Run`; read back frozen :class:`RunRecord` values through
:mod:`kiln.tracking.runs` and :mod:`kiln.tracking.experiments`.
"""

from kiln.tracking import experiments, lineage, runs
from kiln.tracking._environment import process_environment
from kiln.tracking.artifacts import record_artifacts
from kiln.tracking.client import TrackingClient, default_client
from kiln.tracking.records import (
    ArtifactRecord,
    ExperimentRecord,
    LineageEdge,
    MetricPoint,
    RunRecord,
    RunStatus,
)
from kiln.tracking.run import Run, active_run, start_run
from kiln.tracking.runs import RunComparison

__all__ = [
    "ArtifactRecord",
    "ExperimentRecord",
    "LineageEdge",
    "MetricPoint",
    "Run",
    "RunComparison",
    "RunRecord",
    "RunStatus",
    "TrackingClient",
    "active_run",
    "default_client",
    "experiments",
    "lineage",
    "process_environment",
    "record_artifacts",
    "runs",
    "start_run",
]
