"""Kiln: one ML platform — data, training and deployment on one lineage graph.

The public verbs live here; each capability package keeps its own public API in its
``__init__``.

Only settings and errors are imported with ``kiln``: every other name loads its package
on first use (PEP 562), so ``import kiln`` and ``kiln --version`` cost a few milliseconds
and a command or worker pays for SQLAlchemy, numpy, DuckDB or pandas only when it
touches the capability that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln import errors
from kiln.core import Settings, configure, get_settings, lazy_exports

_FEATURES = (
    "Aggregation",
    "DeltaSource",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "OnDemandFeatureView",
    "ParquetSource",
    "PushSource",
    "RequestSource",
    "SQLSource",
    "WindowedFeatureView",
)
_TRACKING = ("Run", "RunRecord", "RunStatus", "TrackingClient", "active_run", "start_run")

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "__version__": "kiln._version",
            "batch_predict": "kiln.serving.batch",
            "deployments": "kiln.serving.deployments",
            "experiments": "kiln.tracking.experiments",
            "flow": "kiln.flows",
            "flows": "kiln.flows",
            "step": "kiln.flows",
            "training": "kiln.training",
            "tune": "kiln.tuning",
            "tuning": "kiln.tuning",
            "validation": "kiln.validation",
            "lineage": "kiln.tracking.lineage",
            "models": "kiln.registry.models",
            "monitoring": "kiln.monitoring",
            "runs": "kiln.tracking.runs",
            **dict.fromkeys(_FEATURES, "kiln.features"),
            **dict.fromkeys(_TRACKING, "kiln.tracking"),
        },
    )

if TYPE_CHECKING:
    from kiln import flows, monitoring, training, tuning, validation
    from kiln.features import (
        Aggregation,
        DeltaSource,
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        OnDemandFeatureView,
        ParquetSource,
        PushSource,
        RequestSource,
        SQLSource,
        WindowedFeatureView,
    )
    from kiln.flows import flow, step
    from kiln.registry import models
    from kiln.serving import deployments
    from kiln.serving.batch import batch_predict
    from kiln.tracking import (
        Run,
        RunRecord,
        RunStatus,
        TrackingClient,
        active_run,
        experiments,
        lineage,
        runs,
        start_run,
    )
    from kiln.tuning import tune

    __version__: str

__all__ = [
    "Aggregation",
    "DeltaSource",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "OnDemandFeatureView",
    "ParquetSource",
    "PushSource",
    "RequestSource",
    "Run",
    "RunRecord",
    "RunStatus",
    "SQLSource",
    "Settings",
    "TrackingClient",
    "WindowedFeatureView",
    "__version__",
    "active_run",
    "batch_predict",
    "configure",
    "deployments",
    "errors",
    "experiments",
    "flow",
    "flows",
    "get_settings",
    "lineage",
    "models",
    "monitoring",
    "runs",
    "start_run",
    "step",
    "training",
    "tune",
    "tuning",
    "validation",
]
