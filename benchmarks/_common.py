"""What every benchmark shares: timing, statistics, verdicts and its docs section.

Each benchmark script imports this from its own directory (``python benchmarks/x.py``
puts ``benchmarks/`` on the path), so the figures in docs/benchmarks.md are computed and
written the same way everywhere. A script only prints unless given ``--write``: every
figure on that page is written by a run, never typed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DOCS", "Stats", "add_write_flag", "replace_section", "timed", "verdict"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Stats:
    """Median and tail of one measurement, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def pct(self, p: int) -> float:
        """Nearest-rank percentile: with few samples it is an observed value, not a guess."""
        ordered = sorted(self.samples)
        rank = max(1, -(-p * len(ordered) // 100))
        return ordered[rank - 1]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def verdict(value: float, limit: float) -> str:
    """Met or not, with the margin, so a borderline pass reads as one."""
    if value <= limit:
        return f"yes ({1 - value / limit:.0%} under)"
    return f"**no** ({value / limit:.2f}x the target)"


def add_write_flag(parser: argparse.ArgumentParser, section: str) -> None:
    """``--write`` (docs/benchmarks.md) or ``--write PATH``; without it the script only prints."""
    parser.add_argument(
        "--write",
        nargs="?",
        const=DOCS,
        type=Path,
        metavar="PATH",
        help=f"replace the {section} section of docs/benchmarks.md (or of PATH) with this run",
    )


def replace_section(path: Path, name: str, section: str) -> None:
    """Rewrite only this benchmark's section of the figures page, between its markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{section}{end}"
    if start in body and end in body:
        body = body[: body.index(start)] + block + body[body.index(end) + len(end) :]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    path.write_text(body)
