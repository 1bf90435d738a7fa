"""Kiln: one ML platform — data, training and deployment on one lineage graph.

The public verbs live here; each capability package keeps its own public API in its
``__init__``.
"""

from importlib.metadata import PackageNotFoundError, version

from kiln import errors
from kiln.core import Settings, configure, get_settings
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
from kiln.registry import models
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

try:
    __version__ = version("kiln")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

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
    "configure",
    "errors",
    "experiments",
    "get_settings",
    "lineage",
    "models",
    "runs",
    "start_run",
]
