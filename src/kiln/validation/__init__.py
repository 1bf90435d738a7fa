"""Layer 2: data validation, as TFDV does it without a pipeline engine.

``profile`` describes a dataset column by column (one DuckDB pass; stored
content-addressed; mergeable), ``infer_schema`` turns a profile into an editable schema,
``validate`` lists how new data departs from it, and ``gate`` stops on an error. The layer
reads DataFrames, Arrow tables and Parquet or Delta paths; the feature store, flows and
the registry above it call these to gate what they build.
"""

from kiln.validation._source import read_table
from kiln.validation.profiles import (
    QUANTILES,
    ColumnProfile,
    Histogram,
    Profile,
    load_profile,
    profile,
)
from kiln.validation.schemas import (
    Anomaly,
    ColumnSchema,
    Schema,
    ValidationFailed,
    ValidationReport,
    gate,
    infer_schema,
    load_schema,
    validate,
)

__all__ = [
    "QUANTILES",
    "Anomaly",
    "ColumnProfile",
    "ColumnSchema",
    "Histogram",
    "Profile",
    "Schema",
    "ValidationFailed",
    "ValidationReport",
    "gate",
    "infer_schema",
    "load_profile",
    "load_schema",
    "profile",
    "read_table",
    "validate",
]
