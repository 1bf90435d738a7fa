"""Layer 3: the feature store.

A feature is defined once (:mod:`kiln.features.definitions`) and the same definition
produces point-in-time-correct training data offline and the values served online.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports
from kiln.features.definitions import (
    AGGREGATIONS,
    DTYPES,
    Aggregation,
    DeltaSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    ParquetSource,
    PushSource,
    RequestSource,
    SQLSource,
    WindowedFeatureView,
    parse_duration,
)

# Definitions are plain data; the engines behind them (DuckDB, pandas, pyarrow,
# SQLAlchemy) load when a store, job or catalog record is first asked for.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "Change": "kiln.features.catalog",
            "DefinitionRecord": "kiln.features.catalog",
            "Plan": "kiln.features.catalog",
            "DatasetSnapshot": "kiln.features.datasets",
            "TrainingSet": "kiln.features.datasets",
            "RetrievalJob": "kiln.features.offline",
            "OnlineStore": "kiln.features.online",
            "FeatureRequirements": "kiln.features.store",
            "FeatureStore": "kiln.features.store",
            "MaterializationRecord": "kiln.features.store",
            "MaterializeFailure": "kiln.features.store",
            "MaterializeReport": "kiln.features.store",
            "MaterializeResult": "kiln.features.store",
            "OnDemandJob": "kiln.features.store",
            "OnlineResponse": "kiln.features.store",
        },
    )

if TYPE_CHECKING:
    from kiln.features.catalog import Change, DefinitionRecord, Plan
    from kiln.features.datasets import DatasetSnapshot, TrainingSet
    from kiln.features.offline import RetrievalJob
    from kiln.features.online import OnlineStore
    from kiln.features.store import (
        FeatureRequirements,
        FeatureStore,
        MaterializationRecord,
        MaterializeFailure,
        MaterializeReport,
        MaterializeResult,
        OnDemandJob,
        OnlineResponse,
    )

__all__ = [
    "AGGREGATIONS",
    "DTYPES",
    "Aggregation",
    "Change",
    "DatasetSnapshot",
    "DefinitionRecord",
    "DeltaSource",
    "Entity",
    "FeatureRequirements",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "MaterializationRecord",
    "MaterializeFailure",
    "MaterializeReport",
    "MaterializeResult",
    "OnDemandFeatureView",
    "OnDemandJob",
    "OnlineResponse",
    "OnlineStore",
    "ParquetSource",
    "Plan",
    "PushSource",
    "RequestSource",
    "RetrievalJob",
    "SQLSource",
    "TrainingSet",
    "WindowedFeatureView",
    "parse_duration",
]
