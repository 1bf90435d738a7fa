"""Flows the dashboard tests run; importable by the process a resume starts (it imports
this module by name from tests/ui).

``pipeline`` fans out over ``n`` items and fails its last step while ``<work>/fail``
exists; ``slow`` takes ``steps`` steps of ``seconds`` each, a run to cancel midway.
"""

from __future__ import annotations

import time
from pathlib import Path

import kiln


@kiln.step
def prepare(work: str, n: int) -> list[int]:
    print("<script>alert('log')</script> preparing", n)
    return list(range(n))


@kiln.step
def square(x: int) -> int:
    return x * x


@kiln.step
def combine(work: str, squares: list[int]) -> int:
    if (Path(work) / "fail").exists():
        raise RuntimeError("combine failed on purpose")
    return sum(squares)


@kiln.flow
def pipeline(work: str, n: int = 3, note: str = "") -> int:
    items = prepare(work, n)
    return combine(work, square.map(x=items.each()))


@kiln.step
def tick(previous: int, seconds: float) -> int:
    time.sleep(seconds)
    return previous + 1


@kiln.flow
def slow(steps: int = 30, seconds: float = 0.2) -> int:
    value = tick(0, seconds)
    for _ in range(1, steps):
        value = tick(value, seconds)
    return value
