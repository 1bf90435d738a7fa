"""Layer 2: experiment tracking on the metadata and artifact stores.

Log into a live :class:`Run`; read back frozen :class:`RunRecord` values through
:mod:`kiln.tracking.runs` and :mod:`kiln.tracking.experiments`. Names load their module
on first use (:func:`kiln.core.lazy_exports`), so reading a record type does not start
SQLAlchemy.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports
from kiln.tracking.records import (
    ArtifactRecord,
    ExperimentRecord,
    LineageEdge,
    MetricPoint,
    RunRecord,
    RunStatus,
)

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "experiments": "kiln.tracking.experiments",
            "lineage": "kiln.tracking.lineage",
            "runs": "kiln.tracking.runs",
            "process_environment": "kiln.tracking._environment",
            "record_artifacts": "kiln.tracking.artifacts",
            "TrackingClient": "kiln.tracking.client",
            "default_client": "kiln.tracking.client",
            "Run": "kiln.tracking.run",
            "active_run": "kiln.tracking.run",
            "reopen_run": "kiln.tracking.run",
            "start_run": "kiln.tracking.run",
            "RunComparison": "kiln.tracking.runs",
        },
    )

if TYPE_CHECKING:
    from kiln.tracking import experiments, lineage, runs
    from kiln.tracking._environment import process_environment
    from kiln.tracking.artifacts import record_artifacts
    from kiln.tracking.client import TrackingClient, default_client
    from kiln.tracking.run import Run, active_run, reopen_run, start_run
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
    "reopen_run",
    "runs",
    "start_run",
]
