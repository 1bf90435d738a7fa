"""Kiln: one ML platform — data, training and deployment on one lineage graph.

The public verbs live here; each capability package keeps its own public API in its
``__init__``.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from kiln import errors
from kiln.core import Settings, configure, get_settings
from kiln.registry import models
from kiln.serving import deployments
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

# The feature store pulls in DuckDB and pandas (most of a second); commands that never
# touch features should not pay for that, so its names load on first use.
_FEATURE_NAMES = frozenset(
    {
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
    }
)


def __getattr__(name: str) -> Any:
    if name in _FEATURE_NAMES:
        import kiln.features

        return getattr(kiln.features, name)
    raise AttributeError(f"module 'kiln' has no attribute {name!r}")


if TYPE_CHECKING:
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
    "deployments",
    "errors",
    "experiments",
    "get_settings",
    "lineage",
    "models",
    "runs",
    "start_run",
]
