"""Wall-clock helpers. Kiln stores times as integer milliseconds since the Unix epoch (UTC)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import overload

__all__ = ["from_millis", "now_millis", "to_millis"]


def now_millis() -> int:
    return time.time_ns() // 1_000_000


@overload
def from_millis(ms: int) -> datetime: ...


@overload
def from_millis(ms: None) -> None: ...


def from_millis(ms: int | None) -> datetime | None:
    """Convert stored milliseconds to an aware UTC datetime (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def to_millis(value: datetime | int | float) -> int:
    """Accept an aware/naive datetime (naive means UTC) or epoch milliseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(value)
