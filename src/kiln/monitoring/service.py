"""``kiln monitor serve``: monitors evaluated on their schedules, values as Prometheus metrics.

Each monitor is evaluated every ``every`` (its first evaluation at start); between
evaluations the pending actions are run each second, so a webhook retry does not wait for
the next evaluation. One monitor failing (its deployment deleted, a store unreachable)
is logged once per change of its error and counted, and the others go on. The latest
values of every monitor are exported at ``/metrics`` from the evaluations themselves,
so a scrape never recomputes anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kiln.core import KilnError
from kiln.features.definitions import parse_duration
from kiln.monitoring.alerts import Evaluation, evaluate
from kiln.monitoring.rules import Monitor
from kiln.tracking import TrackingClient, default_client

__all__ = ["MonitorService"]

log = logging.getLogger("kiln.monitoring")


@dataclass
class _State:
    monitor: Monitor
    every_s: float
    due: float  # monotonic time of the next evaluation
    last: Evaluation | None = None
    last_at: float | None = None  # wall time of the last evaluation
    seconds: float = 0.0  # how long it took
    ok: int = 0
    errors: int = 0
    error: str | None = None


class MonitorService:
    """Evaluates ``monitors`` on their schedules and keeps their latest values."""

    def __init__(
        self,
        monitors: Sequence[Monitor],
        *,
        client: TrackingClient | None = None,
        on_evaluation: Callable[[Monitor, Evaluation | None, str | None], None] | None = None,
    ) -> None:
        now = time.monotonic()
        self._client = client
        self._states = [
            _State(m, parse_duration(m.every, owner="monitor", param="every").total_seconds(), now)
            for m in monitors
        ]
        self._on_evaluation = on_evaluation
        self._lock = threading.Lock()

    @property
    def client(self) -> TrackingClient:
        return self._client or default_client()

    def tick(self) -> list[Evaluation]:
        """Evaluate the monitors that are due, then run pending actions."""
        from kiln.monitoring._actions import run_pending

        done = []
        for state in self._states:
            if time.monotonic() < state.due:
                continue
            state.due = time.monotonic() + state.every_s
            evaluation = self._evaluate(state)
            if evaluation is not None:
                done.append(evaluation)
        try:
            run_pending(client=self.client)
        except KilnError as exc:
            log.error("monitor: pending actions not run: %s", exc)
        return done

    def _evaluate(self, state: _State) -> Evaluation | None:
        name = state.monitor.deployment
        started = time.monotonic()
        try:
            evaluation = evaluate(state.monitor, run_actions=False, client=self.client)
        except (KilnError, OSError) as exc:
            message = " ".join(str(exc).split())
            with self._lock:
                state.errors += 1
                changed = message != state.error
                state.error = message
            if changed:
                log.error("monitor %s: evaluation failed: %s", name, message)
            if self._on_evaluation is not None:
                self._on_evaluation(state.monitor, None, message)
            return None
        with self._lock:
            if state.error is not None:
                log.info("monitor %s: evaluating again", name)
            state.error = None
            state.ok += 1
            state.last = evaluation
            state.last_at = time.time()
            state.seconds = time.monotonic() - started
        if self._on_evaluation is not None:
            self._on_evaluation(state.monitor, evaluation, None)
        return evaluation

    def run(self, stop: threading.Event) -> None:
        """Tick every second until ``stop`` is set."""
        while not stop.is_set():
            self.tick()
            stop.wait(1.0)

    def collect(self) -> Iterator[Any]:
        """The Prometheus metric families of the latest evaluations."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        values = GaugeMetricFamily(
            "kiln_monitor_value",
            "The latest value a monitor measured (drift statistics, missing and skew "
            "rates, live quality)",
            labels=["deployment", "metric", "version", "arm", "feature"],
        )
        breached = GaugeMetricFamily(
            "kiln_monitor_rule_breached",
            "1 when the rule's latest observation breached its bound",
            labels=["deployment", "rule", "version", "arm", "feature"],
        )
        firing = GaugeMetricFamily(
            "kiln_monitor_alerts_firing", "Alert events firing", labels=["deployment", "rule"]
        )
        evaluations = CounterMetricFamily(
            "kiln_monitor_evaluations",
            "Evaluations by outcome",
            labels=["deployment", "outcome"],
        )
        last = GaugeMetricFamily(
            "kiln_monitor_last_evaluation_timestamp_seconds",
            "When the latest successful evaluation ended (Unix time)",
            labels=["deployment"],
        )
        took = GaugeMetricFamily(
            "kiln_monitor_evaluation_seconds",
            "How long the latest successful evaluation took",
            labels=["deployment"],
        )
        with self._lock:
            states = [(s, s.last, s.last_at, s.seconds, s.ok, s.errors) for s in self._states]
        for state, evaluation, at, seconds, ok, errors in states:
            name = state.monitor.deployment
            evaluations.add_metric([name, "ok"], ok)
            evaluations.add_metric([name, "error"], errors)
            if evaluation is None or at is None:
                continue
            last.add_metric([name], at)
            took.add_metric([name], seconds)
            seen: set[tuple[str, ...]] = set()
            for o in evaluation.observations:
                labels = [name, o.metric, _text(o.version), o.arm or "", o.feature or ""]
                if tuple(labels) not in seen and o.value is not None:
                    seen.add(tuple(labels))
                    values.add_metric(labels, o.value)
                breached.add_metric(
                    [name, o.rule, _text(o.version), o.arm or "", o.feature or ""],
                    1.0 if o.breached else 0.0,
                )
            counts: dict[str, int] = {}
            for event in evaluation.firing:
                counts[event.rule] = counts.get(event.rule, 0) + 1
            for rule in state.monitor.rules:
                assert rule.name is not None
                firing.add_metric([name, rule.name], counts.get(rule.name, 0))
        yield from (values, breached, firing, evaluations, last, took)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
