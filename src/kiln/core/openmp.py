"""OpenMP's wait policy, set before any library that uses OpenMP is loaded."""

from __future__ import annotations

import os

__all__ = ["prefer_passive_openmp"]


def prefer_passive_openmp() -> None:
    """Ask OpenMP to sleep, not spin, while idle, unless the user chose otherwise.

    scikit-learn wheels bundle their own OpenMP runtime and LightGBM uses the system one.
    With the default (active) wait policy each runtime's idle threads keep spinning on
    the cores the other needs, and on a server they spin on the cores the event loop
    needs; on a busy 2-core machine that made the demo 4-8x slower. The runtime reads the
    variable when it is loaded, so this must run before the first import of either
    library; later it changes nothing.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
