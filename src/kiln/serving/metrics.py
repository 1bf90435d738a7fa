"""Prometheus metrics of the serving process, rendered for ``GET /metrics``.

:class:`ServingMetrics` owns its metrics (never prometheus_client's global default
registry) and exposes typed methods the server calls on its hot path. Every series is
labelled by ``deployment`` and ``version`` (the model version; ``""`` where none applies):

========================================  =========  ==========================================
metric                                    type       labels / meaning
========================================  =========  ==========================================
``kiln_serving_requests_total``           counter    deployment, version, arm, outcome
``kiln_serving_errors_total``             counter    deployment, version, kind
``kiln_serving_request_duration_seconds`` histogram  deployment, version, arm; 0.5 ms to 5 s
``kiln_serving_batch_size``               histogram  deployment, version; rows per predict
``kiln_serving_queue_depth``              gauge      deployment, version; requests waiting
``kiln_serving_breaker_state``            gauge      deployment, version; 0 closed, 1 half-open,
                                                     2 open
``kiln_serving_fallbacks_total``          counter    deployment, version; answers by a fallback
``kiln_serving_deployment_ready``         gauge      deployment; 1 serving, 0 not servable now
``kiln_serving_shadow_requests_total``    counter    deployment, version, outcome
``kiln_serving_shadow_duration_seconds``  histogram  deployment, version
``kiln_serving_prediction_log_rows_total`` counter   deployment; rows handed to the log
``kiln_serving_prediction_log_backlog``   gauge      rows buffered, not yet written
========================================  =========  ==========================================

``outcome`` is one of :data:`OUTCOMES`; an ``error`` or ``timeout`` outcome also counts in
``errors_total`` under that kind (:meth:`ServingMetrics.observe_error` counts failures that
are not a request's outcome, such as a failure a fallback answered for). A request refused
as the client's mistake (a 4xx) is ``invalid``, with empty ``version`` and ``arm``: it is
never a failure, in these metrics as for circuit breakers and guards.

Several worker processes (``kiln serve --workers N``): give every worker the same
``multiproc_dir`` (an empty directory made by the parent before the workers start, see
:func:`prepare_multiproc_dir`). prometheus_client's multiprocess mode is process-wide: it
is chosen by the ``PROMETHEUS_MULTIPROC_DIR`` environment variable, read when
``prometheus_client.values`` is imported and again whenever a series is created.
:class:`ServingMetrics` sets the variable and, when prometheus_client was imported before
(as it is by this module), switches the process to memory-mapped values, so it must be
made before any other prometheus_client metric in the worker. Each worker writes its own
files; :meth:`ServingMetrics.render` in any worker merges every file in the directory, so
one scrape shows the whole server. Gauges aggregate across live workers: queue depth and
log backlog with ``livesum`` (all waiting requests / rows), breaker state with ``livemax``
(the worst state any worker sees). When a worker dies the parent calls
:func:`mark_process_dead` so its gauges stop counting; its counters and histograms stay,
so totals never go backwards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client import multiprocess as _multiprocess

from kiln.core import ConfigError, InvalidInput

__all__ = [
    "BREAKER_STATES",
    "LATENCY_BUCKETS",
    "OUTCOMES",
    "ServingMetrics",
    "mark_process_dead",
    "observe_many",
    "prepare_multiproc_dir",
]

_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client leaves these untyped; their signatures, as used here:
_multiprocess_value: Callable[[], type[Any]] = values.MultiProcessValue
_multiprocess_collector: Callable[..., object] = _multiprocess.MultiProcessCollector
_mark_process_dead: Callable[[int, str], None] = _multiprocess.mark_process_dead

OUTCOMES: Final = ("ok", "fallback", "invalid", "overloaded", "timeout", "error")
"""Request outcomes: answered; answered by a fallback; refused as bad input (4xx);
refused while overloaded (503); the model timed out; the model failed."""
Outcome = Literal["ok", "fallback", "invalid", "overloaded", "timeout", "error"]
_ERROR_OUTCOMES: Final = frozenset({"timeout", "error"})

BREAKER_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
BreakerState = Literal["closed", "half_open", "open"]

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every ``v`` in ``values``, bucketed by numpy at once.

    A histogram stores one count per bucket (the bucket a value first fits, cumulated
    only when rendered) and the sum; observing many values moves each bucket once by
    how many of them it holds. prometheus_client has no public call for it, so this
    reaches its per-bucket values, as ``observe`` itself does; a test checks that both
    give the same exposition.
    """
    if not len(values):
        return
    bounds: list[float] = histogram._upper_bounds
    buckets: list[Any] = histogram._buckets
    histogram._sum.inc(float(values.sum()))
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts).tolist():
        buckets[i].inc(int(counts[i]))


def _enable_multiprocess(path: Path) -> None:
    """Switch this process to prometheus_client's multiprocess mode writing under ``path``."""
    current = os.environ.get(_ENV)
    if current and Path(current).resolve() != path.resolve():
        raise ConfigError(
            f"{_ENV} is {current!r} but ServingMetrics was given multiproc_dir={str(path)!r}; "
            "one process can write metrics to one directory only"
        )
    os.environ[_ENV] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client picked per-process values at import, before the variable was
        # set; what it would have picked had the variable been set then:
        values.ValueClass = _multiprocess_value()


def prepare_multiproc_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` an empty directory for a fresh server's metric files.

    Call it in the parent before starting workers: files left by an earlier server would
    otherwise be summed into this one's counters.
    """
    directory = Path(path)
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def mark_process_dead(pid: int, multiproc_dir: str | os.PathLike[str]) -> None:
    """Forget a dead worker's live gauges (queue depth, breaker state, log backlog)."""
    _mark_process_dead(pid, str(multiproc_dir))


class ServingMetrics:
    """The metrics of one server: a private registry, or one directory shared by workers."""

    def __init__(self, *, multiproc_dir: str | os.PathLike[str] | None = None) -> None:
        self.multiproc_dir = Path(multiproc_dir) if multiproc_dir is not None else None
        if self.multiproc_dir is not None:
            if not self.multiproc_dir.is_dir():
                raise ConfigError(
                    f"multiproc_dir {str(self.multiproc_dir)!r} is not a directory; make it "
                    "with prepare_multiproc_dir() before starting the workers"
                )
            _enable_multiprocess(self.multiproc_dir)
            # Series live in memory-mapped files; the exposition registry reads them all.
            own: CollectorRegistry | None = None
            self.registry = CollectorRegistry()
            _multiprocess_collector(self.registry, path=str(self.multiproc_dir))
        else:
            if getattr(values.ValueClass, "_multiprocess", False):
                raise ConfigError(
                    f"this process is in prometheus_client multiprocess mode ({_ENV}="
                    f"{os.environ.get(_ENV)!r}); pass multiproc_dir to ServingMetrics"
                )
            own = self.registry = CollectorRegistry()
        # Label lookups of the hot-path series, remembered (prometheus_client's take a lock).
        self._request_series: dict[
            tuple[str, int | str, str, str], tuple[Counter, Histogram, Counter | None]
        ] = {}
        self._batch_series: dict[tuple[str, int | str], Histogram] = {}
        self._queue_series: dict[tuple[str, int | str], Gauge] = {}
        self._invalid_series: dict[str, Counter] = {}
        self._logged_series: dict[str, Counter] = {}

        dv = ("deployment", "version")
        self._requests = Counter(
            "kiln_serving_requests",
            "Requests answered or refused, by outcome.",
            [*dv, "arm", "outcome"],
            registry=own,
        )
        self._errors = Counter(
            "kiln_serving_errors",
            "Model failures and timeouts.",
            [*dv, "kind"],
            registry=own,
        )
        self._latency = Histogram(
            "kiln_serving_request_duration_seconds",
            "Time a request spent with its model: batch queue, predict and any fallback.",
            [*dv, "arm"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._batch = Histogram(
            "kiln_serving_batch_size",
            "Rows per vectorized predict call.",
            dv,
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self._queue = Gauge(
            "kiln_serving_queue_depth",
            "Requests waiting for a batch.",
            dv,
            multiprocess_mode="livesum",
            registry=own,
        )
        self._breaker = Gauge(
            "kiln_serving_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            dv,
            multiprocess_mode="livemax",
            registry=own,
        )
        self._ready = Gauge(
            "kiln_serving_deployment_ready",
            "1 while the deployment has a model loaded and answers, 0 while it cannot be served.",
            ["deployment"],
            multiprocess_mode="livemin",
            registry=own,
        )
        self._fallbacks = Counter(
            "kiln_serving_fallbacks",
            "Answers given by a fallback instead of the model version.",
            dv,
            registry=own,
        )
        self._shadow = Counter(
            "kiln_serving_shadow_requests",
            "Requests mirrored to a shadow challenger, by outcome.",
            [*dv, "outcome"],
            registry=own,
        )
        self._shadow_latency = Histogram(
            "kiln_serving_shadow_duration_seconds",
            "Shadow challenger predict time.",
            dv,
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._logged = Counter(
            "kiln_serving_prediction_log_rows",
            "Prediction rows handed to the prediction log.",
            ["deployment"],
            registry=own,
        )
        self._backlog = Gauge(
            "kiln_serving_prediction_log_backlog",
            "Prediction rows buffered and not yet written.",
            multiprocess_mode="livesum",
            registry=own,
        )

    # -- requests --------------------------------------------------------------------------

    def observe_request(
        self, deployment: str, version: int | str, arm: str, outcome: Outcome, seconds: float
    ) -> None:
        """Count one request and its latency; ``error``/``timeout`` also count as errors."""
        key = (deployment, version, arm, outcome)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = self._new_request_series(*key)
        count, latency, errors = series
        count.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def observe_answered(
        self, deployment: str, version: int | str, arm: str, seconds: np.ndarray
    ) -> None:
        """Count requests answered ``ok`` together (one batch), with their latencies.

        What :meth:`observe_request` does once per request, done once per batch: the
        counter moves by the batch's size and each histogram bucket by how many of its
        latencies fall in it, so a batch of 64 costs a handful of increments, not 128.
        """
        key = (deployment, version, arm, "ok")
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = self._new_request_series(*key)
        count, latency, _ = series
        count.inc(len(seconds))
        observe_many(latency, seconds)

    def _new_request_series(
        self, deployment: str, version: int | str, arm: str, outcome: str
    ) -> tuple[Counter, Histogram, Counter | None]:
        if outcome not in OUTCOMES:
            raise InvalidInput(f"unknown outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
        v = str(version)
        return (
            self._requests.labels(deployment, v, arm, outcome),
            self._latency.labels(deployment, v, arm),
            self._errors.labels(deployment, v, outcome) if outcome in _ERROR_OUTCOMES else None,
        )

    def count_invalid(self, deployment: str) -> None:
        """Count a request refused as the client's mistake (a 4xx): never a failure.

        It has no version or arm (it was refused before one was chosen) and no latency.
        """
        series = self._invalid_series.get(deployment)
        if series is None:
            series = self._invalid_series[deployment] = self._requests.labels(
                deployment, "", "", "invalid"
            )
        series.inc()

    def observe_error(self, deployment: str, version: int | str, kind: str) -> None:
        """Count a failure that is not a request's outcome (say, one a fallback answered)."""
        self._errors.labels(deployment, str(version), kind).inc()

    def observe_batch(self, deployment: str, version: int | str, size: int) -> None:
        """Record the rows of one vectorized predict call."""
        key = (deployment, version)
        series = self._batch_series.get(key)
        if series is None:
            series = self._batch_series[key] = self._batch.labels(deployment, str(version))
        series.observe(size)

    def count_fallback(self, deployment: str, version: int | str, n: int = 1) -> None:
        """Count answers a fallback gave for ``version``."""
        self._fallbacks.labels(deployment, str(version)).inc(n)

    def observe_shadow(
        self, deployment: str, version: int | str, outcome: Outcome, seconds: float
    ) -> None:
        """Count one mirrored request to a shadow challenger and its predict time."""
        if outcome not in OUTCOMES:
            raise InvalidInput(f"unknown outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
        v = str(version)
        self._shadow.labels(deployment, v, outcome).inc()
        self._shadow_latency.labels(deployment, v).observe(seconds)

    # -- state -----------------------------------------------------------------------------

    def set_queue_depth(self, deployment: str, version: int | str, depth: int) -> None:
        """Requests waiting in ``version``'s batching queue in this process."""
        key = (deployment, version)
        series = self._queue_series.get(key)
        if series is None:
            series = self._queue_series[key] = self._queue.labels(deployment, str(version))
        series.set(depth)

    def set_breaker(self, deployment: str, version: int | str, state: BreakerState) -> None:
        """The circuit breaker state of ``version`` in this process."""
        code = BREAKER_STATES.get(state)
        if code is None:
            raise InvalidInput(
                f"unknown breaker state {state!r}; known: {', '.join(BREAKER_STATES)}"
            )
        self._breaker.labels(deployment, str(version)).set(code)

    def set_ready(self, deployment: str, ready: bool | None) -> None:
        """Whether ``deployment`` is served in this process; None drops its series (it is
        no longer meant to be served)."""
        if ready is None:
            with suppress(KeyError):
                self._ready.remove(deployment)
            return
        self._ready.labels(deployment).set(1 if ready else 0)

    # -- prediction log --------------------------------------------------------------------

    def count_logged(self, deployment: str, rows: int = 1) -> None:
        """Count prediction rows handed to the prediction log."""
        series = self._logged_series.get(deployment)
        if series is None:
            series = self._logged_series[deployment] = self._logged.labels(deployment)
        series.inc(rows)

    def set_log_backlog(self, rows: int) -> None:
        """Rows the prediction log holds in memory, not yet written."""
        self._backlog.set(rows)

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
