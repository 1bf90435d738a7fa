"""Layer 3: the feature store.

A feature is defined once (:mod:`kiln.features.definitions`) and the same definition
produces point-in-time-correct training data offline and the values served online.
"""

from kiln.features.catalog import Change, DefinitionRecord, Plan
from kiln.features.datasets import DatasetSnapshot, TrainingSet
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
from kiln.features.offline import RetrievalJob
from kiln.features.online import OnlineStore
from kiln.features.store import (
    FeatureRequirements,
    FeatureStore,
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
