"""The values a monitor's rules judge, measured over one window of a deployment's traffic.

Only what some rule needs is measured: the prediction log is read once for the window,
then per model version and arm the missing rates, drift against the reference (the
default verdicts and each method a rule names), live quality where labels have arrived,
and skew. A measurement that cannot be made (a version without a reference profile, no
labels yet) is reported as a problem for the rules that need it, and leaves the others
alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import KilnError
from kiln.features.definitions import parse_duration
from kiln.monitoring.drift import CATEGORICAL_METHODS, NUMERIC_METHODS, DriftResult, compare
from kiln.monitoring.rules import DRIFT_METRICS, QUALITY_METRICS, Monitor, Rule
from kiln.monitoring.served import (
    _between,
    _by_version_and_arm,
    _earlier_span,
    _reference_of,
    _served_columns,
)

__all__ = ["Measurement", "Measurements", "measure"]


@dataclass(frozen=True)
class Measurement:
    """One value: ``metric`` of ``feature`` (or of the model) for a version and arm."""

    metric: str
    value: float | None
    version: int | None = None
    arm: str | None = None
    feature: str | None = None
    drifted: bool | None = None  # drift's own verdict, for the drift metrics


@dataclass
class Measurements:
    """What one window gave: the values, and per metric why it could not be measured."""

    values: list[Measurement] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)  # metric -> reasons

    def problem(self, metrics: Iterable[str], reason: str) -> None:
        for metric in metrics:
            reasons = self.problems.setdefault(metric, [])
            if reason not in reasons:
                reasons.append(reason)


def measure(monitor: Monitor, start: datetime, end: datetime) -> Measurements:
    """Every value ``monitor``'s rules need over ``[start, end)``."""
    from kiln.serving.predlog import read_predictions

    metrics = {r.metric for r in monitor.rules}
    out = Measurements()
    drift_needed = metrics & {"drift", "share_drifted", *DRIFT_METRICS}
    if metrics & {"missing_rate", *drift_needed}:
        back = _earlier_span(monitor.reference)
        first = start - back if back is not None else start
        logged = read_predictions(deployment=monitor.deployment, since=first)
        logged = logged.filter(pc.invert(logged["shadow"]))
        window = _between(logged, start, end)
        if window.num_rows == 0:
            out.problem(metrics & {"missing_rate", *drift_needed}, "nothing served in the window")
        for (version, arm), current in _by_version_and_arm(window).items():
            if current.num_rows < monitor.min_rows:
                out.problem(
                    metrics & {"missing_rate", *drift_needed},
                    f"version {version} ({arm}) answered {current.num_rows} rows, fewer than "
                    f"min_rows={monitor.min_rows}: not judged",
                )
                continue
            columns = _served_columns(current, outputs=False)
            present = _missing_rates(columns, version, arm, out)
            if drift_needed:
                _drift(monitor, logged, current, columns, present, (version, arm), start, out)
    for rule_window, rules in _quality_windows(monitor).items():
        _quality(monitor, rules, end - rule_window, end, out)
    if "skew_rate" in metrics:
        _skew(monitor, start, end, out)
    return out


def _missing_rates(columns: pa.Table, version: int, arm: str, out: Measurements) -> list[str]:
    """Each input's share of null or NaN values; returns the inputs that have values."""
    present = []
    for name in columns.column_names:
        col = columns[name]
        missing = col.null_count
        if pa.types.is_floating(col.type):
            missing += int(pc.sum(pc.is_nan(col.drop_null())).as_py() or 0)
        rate = missing / len(col) if len(col) else 0.0
        out.values.append(Measurement("missing_rate", rate, version, arm, name))
        if rate < 1.0:
            present.append(name)
    return present


def _drift(
    monitor: Monitor,
    logged: pa.Table,
    current: pa.Table,
    columns: pa.Table,
    present: Sequence[str],
    key: tuple[int, str],
    start: datetime,
    out: Measurements,
) -> None:
    version, arm = key
    metrics = {r.metric for r in monitor.rules}
    wanted = metrics & {"drift", "share_drifted", *DRIFT_METRICS}
    model = str(current["model"][0].as_py())
    try:
        back = _earlier_span(monitor.reference)
        if back is not None:
            earlier = _between(logged, start - back, start)
            earlier = earlier.filter(
                pc.and_(pc.equal(earlier["version"], version), pc.equal(earlier["arm"], arm))
            )
            if earlier.num_rows == 0:
                out.problem(wanted, f"version {version} ({arm}) served nothing before the window")
                return
            reference: Any = _served_columns(earlier, outputs=False)
        else:
            reference = _reference_of(model, "training")
        names = list(present)
        results: dict[str | None, DriftResult] = {}
        if metrics & {"drift", "share_drifted"}:
            results[None] = compare(reference, columns, columns=names)
        numeric = [n for n in names if _is_number(columns[n].type)]
        for method in sorted(metrics & set(DRIFT_METRICS)):
            fits = [
                n
                for n in names
                if (method in NUMERIC_METHODS and n in numeric)
                or (method in CATEGORICAL_METHODS and n not in numeric)
            ]
            if fits:
                results[method] = compare(
                    reference, columns, columns=fits, method={n: method for n in fits}
                )
    except KilnError as exc:
        out.problem(wanted, f"version {version} ({arm}): {exc}")
        return
    for chosen, result in results.items():
        for c in result.columns:
            if not c.compared:  # every value missing on a side: nothing to judge it on
                side = "reference" if c.reference_count == 0 else "window"
                out.problem(
                    [chosen or "drift"],
                    f"version {version} ({arm}): {c.column} has no values in the {side}",
                )
                continue
            out.values.append(
                Measurement(chosen or "drift", c.statistic, version, arm, c.column, c.drifted)
            )
        if chosen is None:
            out.values.append(Measurement("share_drifted", result.share_drifted, version, arm))


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _quality_windows(monitor: Monitor) -> dict[timedelta, list[Rule]]:
    by_window: dict[timedelta, list[Rule]] = {}
    for rule in monitor.rules:
        if rule.metric in QUALITY_METRICS:
            span = parse_duration(rule.window or monitor.window, owner="rule", param="window")
            by_window.setdefault(span, []).append(rule)
    return by_window


def _quality(
    monitor: Monitor, rules: Sequence[Rule], since: datetime, until: datetime, out: Measurements
) -> None:
    from kiln.monitoring.quality import quality

    metrics = {r.metric for r in rules}
    try:
        report = quality(monitor.deployment, since=since, until=until)
    except KilnError as exc:
        out.problem(metrics, str(exc))
        return
    for row in report.rows:
        for metric in metrics:
            value = getattr(row, metric)
            out.values.append(
                Measurement(
                    metric,
                    None if value is None or not np.isfinite(value) else float(value),
                    row.version,
                    row.arm,
                )
            )


def _skew(monitor: Monitor, start: datetime, end: datetime, out: Measurements) -> None:
    from kiln.monitoring.skew import skew

    try:
        result = skew(monitor.deployment, since=start, until=end, sample=monitor.skew_sample)
    except KilnError as exc:
        out.problem(["skew_rate"], str(exc))
        return
    for row in result.features:
        out.values.append(Measurement("skew_rate", row.skew_rate, feature=row.feature))
    out.values.append(Measurement("skew_rate", result.skew_rate))
