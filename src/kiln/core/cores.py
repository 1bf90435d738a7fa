"""How many cores this process may use, for sizing its own thread pools."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on: a container or ``taskset`` may allow fewer than
    the machine has, and a pool sized by the machine would then only contend."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return len(getaffinity(0)) if getaffinity is not None else os.cpu_count() or 1
