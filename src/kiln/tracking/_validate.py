"""Checks shared by every write: names of params, metrics, tags and artifact paths."""

from __future__ import annotations

import math
import numbers
import posixpath
import re
from typing import Any

from kiln.core import InvalidInput, to_millis

KEY_RE = re.compile(r"^[A-Za-z0-9_\-. /:]{1,250}$")


def check_key(kind: str, key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key) or key.strip() != key:
        raise InvalidInput(
            f"{kind} key must be 1-250 characters of letters, digits, '_', '-', '.', ' ', '/' "
            f"or ':' without surrounding spaces; got {key!r}"
        )
    return key


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 256 or "\x00" in name:
        raise InvalidInput(
            f"{kind} name must be a non-empty string of at most 256 characters; got {name!r}"
        )
    return name


def to_float(key: str, value: Any) -> float:
    if isinstance(value, str | bytes):
        raise InvalidInput(f"metric {key!r} must be a number, got the string {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"metric {key!r} must be a number, got {value!r}") from None


def check_step(key: str, step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidInput(f"step of metric {key!r} must be an integer, got {step!r}")
    if not -(1 << 63) <= int(step) < 1 << 63:
        raise InvalidInput(f"step of metric {key!r} must fit in 64 bits, got {step!r}")
    return int(step)


def check_text(kind: str, value: str) -> str:
    """Text stored in the metadata store cannot hold NUL (PostgreSQL refuses it)."""
    if "\x00" in value:
        raise InvalidInput(f"{kind} must not contain a NUL character; got {value!r}")
    return value


def artifact_path(path: Any) -> str:
    """Normalize a logical artifact path: relative, POSIX, no '..' segments."""
    if not isinstance(path, str):
        raise InvalidInput(f"artifact path must be a string, got {path!r}")
    cleaned = posixpath.normpath(path.replace("\\", "/")).lstrip("/") if path else ""
    if cleaned in (".", ""):
        return ""
    if cleaned.startswith("..") or "/../" in f"/{cleaned}/":
        raise InvalidInput(f"artifact path {path!r} escapes the run's artifact root")
    return cleaned


def is_nan(value: float) -> bool:
    return math.isnan(value)


def check_timestamp(key: str, timestamp: Any) -> int:
    try:
        ms = to_millis(timestamp)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(
            f"timestamp of metric {key!r} must be a datetime or epoch milliseconds, "
            f"got {timestamp!r}"
        ) from None
    if not -(1 << 63) <= ms < 1 << 63:
        raise InvalidInput(
            f"timestamp of metric {key!r} must fit in 64-bit epoch milliseconds, got {timestamp!r}"
        )
    return ms
