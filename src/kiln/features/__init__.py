"""Layer 3: the feature store.

A feature is defined once (:mod:`kiln.features.definitions`) and the same definition
produces point-in-time-correct training data offline and the values served online.
"""

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

__all__ = [
    "AGGREGATIONS",
    "DTYPES",
    "Aggregation",
    "DeltaSource",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Field",
    "OnDemandFeatureView",
    "ParquetSource",
    "PushSource",
    "RequestSource",
    "SQLSource",
    "WindowedFeatureView",
    "parse_duration",
]
