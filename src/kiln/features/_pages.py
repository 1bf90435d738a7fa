"""Ordinary memory pages for the retrieval's numpy passes.

numpy advises the kernel to back every array of 4 MiB or more with transparent huge
pages. Where the kernel's THP ``defrag`` policy is ``madvise`` (the default of most
distributions), a page fault in such an array may compact memory synchronously before
it returns. Right after DuckDB has been through a few hundred megabytes, as it has when
a retrieval's numpy passes run, those faults stalled: the first training set built after
new files landed spent 150 ms instead of 100 ms finding superseded rows and 83 ms
instead of 34 ms putting the result in spine order (1M-row spine). Those passes touch
each array once or twice, so huge pages buy them nothing.

``ordinary_pages`` turns the advice off while such passes run and restores it when the
last one in the process ends. The switch is numpy's and process-wide: arrays other
threads allocate meanwhile get ordinary pages too, which changes their speed, never
their contents. Without the switch (another numpy) it does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["ordinary_pages"]


def _switch() -> Callable[[bool], bool] | None:
    for module in ("_core", "core"):
        found = getattr(getattr(np, module, None), "multiarray", None)
        setter = getattr(found, "_set_madvise_hugepage", None)
        if callable(setter):
            return setter  # type: ignore[no-any-return]
    return None


_set = _switch()
_lock = threading.Lock()
_inside = 0
_before = False


@contextmanager
def ordinary_pages() -> Iterator[None]:
    """Within the block, numpy does not ask for huge pages."""
    global _inside, _before
    if _set is None:
        yield
        return
    with _lock:
        if _inside == 0:
            _before = _set(False)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                _set(_before)
