"""``kiln.errors``: the exception hierarchy (defined in :mod:`kiln.core.errors`)."""

from kiln.core.errors import (
    Conflict,
    ConfigError,
    IntegrityError,
    InvalidInput,
    KilnError,
    MissingDependency,
    NotFound,
    StoreUnavailable,
)

__all__ = [
    "Conflict",
    "ConfigError",
    "IntegrityError",
    "InvalidInput",
    "KilnError",
    "MissingDependency",
    "NotFound",
    "StoreUnavailable",
]
