"""Time-sortable identifiers: ids sort by creation time, so indexes stay append-mostly."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_RAND_BITS = 80


def new_id() -> str:
    """Return a 32-character lowercase hex id: 48 bits of milliseconds, 80 random bits.

    Within one millisecond the random part is incremented, so ids made by one process are
    strictly increasing; across processes they are unique with overwhelming probability.
    """
    global _last_ms, _last_rand
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & ((1 << _RAND_BITS) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last_ms, _last_rand = ms, rand
    return f"{ms:012x}{rand:020x}"
