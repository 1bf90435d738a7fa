"""Judging a challenger against the champion: error rate, p95 latency, prediction shift.

:class:`ArmStats` collects what one arm (champion or challenger) did: requests, errors,
latencies in a fixed log-spaced histogram (:data:`LATENCY_BINS` bins from
:data:`LATENCY_MIN_MS` growing by :data:`LATENCY_GROWTH`, so p95 is within about 2 % and
memory is fixed) and a uniform reservoir sample of its predictions. Stats from several
worker processes combine with :meth:`ArmStats.merge`, after travelling as
:meth:`ArmStats.to_dict` / :meth:`ArmStats.from_dict` (plain JSON values).

:func:`judge` turns a :class:`~kiln.serving.specs.Guard` and both arms' stats into a
:class:`Verdict`: ``wait`` (too few challenger requests yet), ``rollback`` (a limit is
breached; the reasons name each limit and the observed value), ``promote``
(``auto_promote`` and the guard passed for ``window_s``) or ``pass``.

The prediction shift is the population stability index of the challenger's predictions
against the champion's, over :data:`PSI_BINS` bins cut at the champion's quantiles:
``sum((a - e) * ln(a / e))`` over bins, with each share floored at :data:`PSI_EPSILON`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from kiln.core import InvalidInput
from kiln.serving.specs import Guard

__all__ = [
    "LATENCY_BINS",
    "LATENCY_GROWTH",
    "LATENCY_MIN_MS",
    "PSI_BINS",
    "PSI_EPSILON",
    "PSI_MIN_SAMPLE",
    "ArmStats",
    "Verdict",
    "judge",
    "psi",
]

LATENCY_MIN_MS: Final = 0.01
LATENCY_GROWTH: Final = 1.04
LATENCY_BINS: Final = 460  # up to 0.01 ms * 1.04**460, about 680 s
PSI_BINS: Final = 10
PSI_EPSILON: Final = 1e-4
PSI_MIN_SAMPLE: Final = 50
"""Fewer predictions than this on either arm and the shift is not judged."""
_LOG_GROWTH = math.log(LATENCY_GROWTH)
_FORMAT = 1

Action = Literal["wait", "pass", "rollback", "promote"]
FloatArray = npt.NDArray[np.float64]


class ArmStats:
    """What one arm did: counts, a latency histogram and a sample of predictions.

    Record from one thread (the event loop); merge copies from other processes with
    :meth:`merge`, which returns a new object.
    """

    def __init__(self, *, sample_size: int = 2048, seed: int | None = None) -> None:
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
            raise InvalidInput(
                "The 'sample_size' parameter of ArmStats must be an integer >= 1. "
                f"Got {sample_size!r}."
            )
        self.sample_size = sample_size
        self.requests = 0
        self.errors = 0
        self._latency = [0] * LATENCY_BINS
        self._sample: FloatArray = np.empty(sample_size, dtype=np.float64)
        self._filled = 0
        self._seen = 0  # predictions offered to the reservoir
        self._rng = random.Random(seed)

    # --------------------------------------------------------------- recording

    def record(
        self,
        latency_ms: float,
        *,
        error: bool = False,
        predictions: npt.ArrayLike | None = None,
    ) -> None:
        """Count one request, its latency, whether it failed and its predictions
        (one score per row; non-finite values are left out)."""
        self.requests += 1
        if error:
            self.errors += 1
        self._latency[_latency_bin(latency_ms)] += 1
        if predictions is not None:
            self._offer(np.asarray(predictions, dtype=np.float64).ravel())

    def _offer(self, values: FloatArray) -> None:
        values = values[np.isfinite(values)]
        k = self.sample_size
        free = k - self._filled
        if free > 0:
            head = values[:free]
            self._sample[self._filled : self._filled + len(head)] = head
            self._filled += len(head)
            self._seen += len(head)
            values = values[free:]
        rng = self._rng
        sample = self._sample
        for value in values.tolist():  # reservoir sampling (algorithm R)
            self._seen += 1
            j = rng.randrange(self._seen)
            if j < k:
                sample[j] = value

    # ----------------------------------------------------------------- reading

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def predictions_seen(self) -> int:
        return self._seen

    def predictions(self) -> FloatArray:
        """A copy of the uniform sample of predictions (at most ``sample_size``)."""
        return self._sample[: self._filled].copy()

    def latency_quantile_ms(self, q: float) -> float | None:
        """The ``q`` quantile of latency in ms (nearest rank, bin midpoint), or ``None``
        before any request."""
        if not 0.0 <= q <= 1.0:
            raise InvalidInput(f"a quantile must be in [0, 1]; got {q!r}")
        if not self.requests:
            return None
        rank = max(1, math.ceil(q * self.requests))
        seen = 0
        for index, count in enumerate(self._latency):
            seen += count
            if seen >= rank:
                return _bin_mid_ms(index)
        return _bin_mid_ms(LATENCY_BINS - 1)  # pragma: no cover - counts sum to requests

    @property
    def p95_ms(self) -> float | None:
        return self.latency_quantile_ms(0.95)

    # ---------------------------------------------------------------- combining

    def merge(self, other: ArmStats) -> ArmStats:
        """A new :class:`ArmStats` holding both; the prediction sample stays uniform
        over both arms' predictions (each side weighted by what it saw)."""
        if not isinstance(other, ArmStats):
            raise InvalidInput(f"ArmStats.merge takes an ArmStats; got {type(other).__name__}")
        out = ArmStats(sample_size=max(self.sample_size, other.sample_size))
        out.requests = self.requests + other.requests
        out.errors = self.errors + other.errors
        out._latency = [a + b for a, b in zip(self._latency, other._latency, strict=True)]
        mine, theirs = self.predictions(), other.predictions()
        k = out.sample_size
        if len(mine) + len(theirs) <= k:
            merged = np.concatenate([mine, theirs])
        else:
            total = self._seen + other._seen
            take = round(k * self._seen / total)
            take = min(len(mine), max(take, k - len(theirs)))
            rng = np.random.default_rng(out._rng.getrandbits(64))
            merged = np.concatenate(
                [
                    rng.choice(mine, size=take, replace=False),
                    rng.choice(theirs, size=k - take, replace=False),
                ]
            )
        out._sample[: len(merged)] = merged
        out._filled = len(merged)
        out._seen = self._seen + other._seen
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: counts, the non-empty latency bins and the sample."""
        return {
            "format": _FORMAT,
            "latency_bins": [LATENCY_MIN_MS, LATENCY_GROWTH, LATENCY_BINS],
            "requests": self.requests,
            "errors": self.errors,
            "latency": {str(i): c for i, c in enumerate(self._latency) if c},
            "sample_size": self.sample_size,
            "predictions_seen": self._seen,
            "predictions": self.predictions().tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmStats:
        try:
            if data["format"] != _FORMAT or list(data["latency_bins"]) != [
                LATENCY_MIN_MS,
                LATENCY_GROWTH,
                LATENCY_BINS,
            ]:
                raise InvalidInput(
                    f"ArmStats written with format {data['format']!r} and latency bins "
                    f"{data['latency_bins']!r} cannot be read by this version"
                )
            out = cls(sample_size=int(data["sample_size"]))
            out.requests = int(data["requests"])
            out.errors = int(data["errors"])
            for index, count in data["latency"].items():
                out._latency[int(index)] = int(count)
            values = np.asarray(data["predictions"], dtype=np.float64)[: out.sample_size]
            out._sample[: len(values)] = values
            out._filled = len(values)
            out._seen = max(int(data["predictions_seen"]), len(values))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"not a dict written by ArmStats.to_dict: {exc!r}") from exc
        return out

    def __repr__(self) -> str:
        return (
            f"ArmStats(requests={self.requests}, errors={self.errors}, "
            f"p95_ms={self.p95_ms}, predictions_seen={self._seen})"
        )


def _latency_bin(ms: float) -> int:
    if not ms > LATENCY_MIN_MS:  # also NaN
        return 0
    return min(LATENCY_BINS - 1, int(math.log(ms / LATENCY_MIN_MS) / _LOG_GROWTH))


def _bin_mid_ms(index: int) -> float:
    return float(LATENCY_MIN_MS * LATENCY_GROWTH ** (index + 0.5))


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, *, bins: int = PSI_BINS) -> float:
    """Population stability index of ``actual`` against ``expected``.

    Bins are cut at ``expected``'s quantiles (ties merged), each bin's share is floored
    at :data:`PSI_EPSILON`. 0 means the same distribution; above 0.25 is commonly read
    as a major shift.
    """
    e = np.asarray(expected, dtype=np.float64).ravel()
    a = np.asarray(actual, dtype=np.float64).ravel()
    if not len(e) or not len(a):
        raise InvalidInput("psi needs at least one value in each of 'expected' and 'actual'")
    cuts = np.unique(np.quantile(e, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    e_share = np.bincount(np.searchsorted(cuts, e, side="right"), minlength=len(cuts) + 1)
    a_share = np.bincount(np.searchsorted(cuts, a, side="right"), minlength=len(cuts) + 1)
    ep = np.maximum(e_share / len(e), PSI_EPSILON)
    ap = np.maximum(a_share / len(a), PSI_EPSILON)
    return float(np.sum((ap - ep) * np.log(ap / ep)))


@dataclass(frozen=True)
class Verdict:
    """What the guard says: ``action`` and why (limits breached or checked, with values)."""

    action: Action
    reasons: tuple[str, ...] = ()


def judge(
    guard: Guard, champion: ArmStats, challenger: ArmStats, started_at: float, now: float
) -> Verdict:
    """Judge the challenger that took traffic at ``started_at`` (seconds, same clock as
    ``now``) against the champion under ``guard``."""
    if not isinstance(guard, Guard):
        raise InvalidInput(f"The 'guard' parameter of judge must be a Guard. Got {guard!r}.")
    n = challenger.requests
    if n < guard.min_requests:
        return Verdict("wait", (f"challenger has {n} of {guard.min_requests} requests needed",))
    over = f"over {n} requests"
    breaches: list[str] = []
    checks: list[str] = []

    if guard.max_error_rate is not None:
        rate = challenger.error_rate
        limit = guard.max_error_rate
        if rate > limit:
            breaches.append(f"error rate {rate:.3g} > max {limit:g} {over}")
        else:
            checks.append(f"error rate {rate:.3g} <= max {limit:g}")

    if guard.max_p95_ms is not None:
        p95 = challenger.p95_ms or 0.0
        limit = guard.max_p95_ms
        if p95 > limit:
            breaches.append(f"p95 latency {p95:.4g} ms > max {limit:g} ms {over}")
        else:
            checks.append(f"p95 latency {p95:.4g} ms <= max {limit:g} ms")

    if guard.max_psi is not None:
        ref, got = champion.predictions(), challenger.predictions()
        limit = guard.max_psi
        if len(ref) < PSI_MIN_SAMPLE or len(got) < PSI_MIN_SAMPLE:
            checks.append(
                f"PSI not judged: {len(got)} challenger and {len(ref)} champion predictions "
                f"(needs {PSI_MIN_SAMPLE} each)"
            )
        else:
            shift = psi(ref, got)
            sizes = f"({len(got)} challenger vs {len(ref)} champion predictions)"
            if shift > limit:
                breaches.append(f"PSI {shift:.3g} > max {limit:g} {sizes}")
            else:
                checks.append(f"PSI {shift:.3g} <= max {limit:g}")

    if breaches:
        return Verdict("rollback", tuple(breaches))
    elapsed = now - started_at
    if guard.auto_promote and elapsed >= guard.window_s:
        reason = f"passed for {elapsed:.0f} s >= window {guard.window_s:g} s {over}"
        return Verdict("promote", (reason, *checks))
    return Verdict("pass", (*checks, f"{elapsed:.0f} s of window {guard.window_s:g} s {over}"))
