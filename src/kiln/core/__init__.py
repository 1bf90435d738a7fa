"""Layer 0: settings, ids, clocks and errors. Knows no capability."""

from kiln.core import errors
from kiln.core.clock import from_millis, now_millis, to_millis
from kiln.core.cores import usable_cores
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
from kiln.core.ids import new_id
from kiln.core.lazy import lazy_exports
from kiln.core.net import free_local_port
from kiln.core.settings import (
    Settings,
    configure,
    get_settings,
    load_settings,
    mask_url,
    reset_settings,
)
from kiln.core.suggest import close_matches

__all__ = [
    "ConfigError",
    "Conflict",
    "IntegrityError",
    "InvalidInput",
    "KilnError",
    "KilnWarning",
    "MissingDependency",
    "NotFound",
    "Settings",
    "StoreUnavailable",
    "close_matches",
    "configure",
    "errors",
    "free_local_port",
    "from_millis",
    "get_settings",
    "lazy_exports",
    "load_settings",
    "mask_url",
    "new_id",
    "now_millis",
    "reset_settings",
    "to_millis",
    "usable_cores",
]
