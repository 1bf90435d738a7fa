"""``kiln.errors``: the exception hierarchy (defined in :mod:`kiln.core.errors`)."""

from kiln.core.errors import (
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidInput,
    KilnError,
    KilnWarning,
    MissingDependency,
    NotFound,
    StoreUnavailable,
)

__all__ = [
    "ConfigError",
    "Conflict",
    "IntegrityError",
    "InvalidInput",
    "KilnError",
    "KilnWarning",
    "MissingDependency",
    "NotFound",
    "StoreUnavailable",
]
