"""The one exception hierarchy every Kiln entry point raises for user-facing failures.

::

    KilnError
     ├── InvalidInput      bad argument, filter, URL or setting (HTTP 400, CLI exit 2)
     │    └── ConfigError  a setting (environment or kiln.toml) that cannot be used
     ├── NotFound          a named object does not exist (HTTP 404)
     ├── Conflict          the write contradicts what is stored (HTTP 409)
     ├── IntegrityError    stored bytes no longer match their recorded hash
     ├── MissingDependency an optional extra is needed (message carries the pip command)
     └── StoreUnavailable  a backing service cannot be reached

    KilnWarning (UserWarning)  something works but may not behave as it did

Messages say what is wrong, which field or value, and what was expected, so callers can
show them as one line without a traceback.
"""

from __future__ import annotations

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


class KilnError(Exception):
    """Root of every error Kiln raises on purpose."""


class InvalidInput(KilnError, ValueError):
    """An argument, filter expression or value does not meet the documented rules."""


class ConfigError(InvalidInput):
    """A setting cannot be used; the message names the setting and where it came from."""


class NotFound(KilnError, LookupError):
    """The named experiment, run, artifact or blob does not exist."""


class Conflict(KilnError):
    """The write contradicts stored state (for example, changing an immutable param)."""


class IntegrityError(KilnError):
    """Stored bytes do not match the hash recorded when they were written."""


class MissingDependency(KilnError, ImportError):
    """An optional extra is required for the requested backend."""


class StoreUnavailable(KilnError, ConnectionError):
    """A backing service (database, object store, key-value store) cannot be reached."""


class KilnWarning(UserWarning):
    """Works, but may not behave as expected (for example a model loaded under other versions)."""
