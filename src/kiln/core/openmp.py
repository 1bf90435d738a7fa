"""OpenMP's wait policy, set before any library that uses OpenMP is loaded."""

from __future__ import annotations

import os

__all__ = ["one_openmp_thread", "prefer_passive_openmp"]


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


def one_openmp_thread() -> None:
    """One OpenMP thread per process, unless the user chose otherwise.

    A model server already runs requests in parallel (batches, workers); a library that
    also forks a thread team per small batch pays for waking it more than it gains: a
    100-row LightGBM prediction took 2.4 ms with two threads and 0.74 ms with one on a
    2-core machine. Scale a server out with ``--workers`` instead.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
