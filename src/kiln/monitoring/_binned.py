"""A numeric reference known only by its profile: a histogram, never the rows again.

Within each histogram bin the reference's values are taken as spread evenly, so its CDF is
piecewise linear through the bins' cumulative shares. Against that CDF the current
sample's statistics are computed exactly: PSI over the histogram's bins (outer bins
open-ended), the Wasserstein distance as the area between the two CDFs (integrated
segment by segment, each linear in the reference and constant in the current sample),
and the KS statistic as the largest gap (at the current sample's steps and the bin
edges). The approximation is the even spread within a bin: finer bins
(``profile(data, bins=100)``) bring the figures closer to those on the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Binned", "ks", "psi", "psi_of", "wasserstein"]

_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Binned:
    edges: np.ndarray  # increasing, len(counts) + 1
    counts: np.ndarray
    std: float
    present: int  # values the profile counted (its histogram holds the finite ones)

    @property
    def size(self) -> int:
        return self.present

    def cdf(self, x: np.ndarray) -> np.ndarray:
        shares = np.concatenate([[0.0], np.cumsum(self.counts)]) / max(self.counts.sum(), 1)
        values: np.ndarray = np.interp(x, self.edges, shares, left=0.0, right=1.0)
        return values


def psi(ref: Binned, cur: np.ndarray) -> tuple[float, float | None]:
    index = np.searchsorted(ref.edges, cur, side="right") - 1
    np.clip(index, 0, len(ref.counts) - 1, out=index)
    c = np.bincount(index, minlength=len(ref.counts)) / cur.size
    return psi_of(ref.counts / ref.counts.sum(), c), None


def psi_of(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    """The index over shares of the same bins, each floored at 1e-4 before the log."""
    rs = np.maximum(ref_shares, _PSI_FLOOR)
    cs = np.maximum(cur_shares, _PSI_FLOOR)
    return float(np.sum((cs - rs) * np.log(cs / rs)))


def _gaps(ref: Binned, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points where either CDF bends or steps, and the gap F_ref - F_cur just after
    each point (F_cur held until the next) and just before the next."""
    grid = np.concatenate([ref.edges, cur])
    grid.sort(kind="stable")
    held = np.searchsorted(cur, grid[:-1], side="right") / cur.size
    return grid, ref.cdf(grid[:-1]) - held, ref.cdf(grid[1:]) - held


def wasserstein(ref: Binned, cur: np.ndarray) -> tuple[float, float | None]:
    grid, start, end = _gaps(ref, cur)
    width = np.diff(grid)
    same = np.sign(start) * np.sign(end) >= 0
    span = np.abs(start - end)
    crossing = np.divide(
        start**2 + end**2, 2 * span, out=np.zeros_like(span), where=span > 0
    )  # |linear| integrated over a segment where it changes sign
    area = np.where(same, (np.abs(start) + np.abs(end)) / 2, crossing) * width
    distance = float(area.sum())
    if ref.std > 0:
        return distance / ref.std, None
    return (0.0 if distance == 0 else math.inf), None


def ks(ref: Binned, cur: np.ndarray) -> tuple[float, float | None]:
    from scipy.stats import kstwo

    _, start, end = _gaps(ref, cur)
    statistic = float(max(np.abs(start).max(initial=0.0), np.abs(end).max(initial=0.0)))
    n = round(ref.size * cur.size / (ref.size + cur.size))
    return statistic, float(kstwo.sf(statistic, max(n, 1)))
