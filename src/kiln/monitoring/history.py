"""The values monitors measured, read back: drift, missing and skew rates and live quality
over time.

Every :func:`kiln.monitoring.evaluate` stores each value its rules judged, stamped with
the end of the window it judged (``kiln_monitor_values``). :func:`history` reads them
back, oldest first, for one deployment, narrowed by time, metric, feature, version and
arm: the series the dashboard draws and the numbers a notebook plots. A value two rules
judged in one evaluation (``psi`` above 0.2 and above 0.3) was measured once and comes
back once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from kiln.core import InvalidInput, from_millis, to_millis
from kiln.monitoring._tables import monitor_values
from kiln.monitoring.rules import METRICS
from kiln.tracking import TrackingClient, default_client

__all__ = ["MonitorValue", "history"]


@dataclass(frozen=True)
class MonitorValue:
    """One value one evaluation measured: ``metric`` of ``feature`` (None for a value of
    the model) for model ``version`` and traffic ``arm`` (both None for a deployment-wide
    value, such as the largest feature's ``skew_rate``), over the window ending at
    ``evaluated_at``. ``value`` is None where it could not be computed (an AUC with one
    class among the labels)."""

    deployment: str
    evaluated_at: datetime
    metric: str
    value: float | None
    version: int | None = None
    arm: str | None = None
    feature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "evaluated_at": self.evaluated_at.isoformat(),
            "metric": self.metric,
            "value": self.value,
            "version": self.version,
            "arm": self.arm,
            "feature": self.feature,
        }


def history(
    deployment: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    metric: str | Sequence[str] | None = None,
    feature: str | None = None,
    version: int | None = None,
    arm: str | None = None,
    limit: int | None = None,
    client: TrackingClient | None = None,
) -> list[MonitorValue]:
    """The values evaluations of ``deployment`` measured, oldest first.

    ``since`` (inclusive) and ``until`` (exclusive) bound the evaluation times (naive
    datetimes are UTC); ``metric`` keeps one metric or several (``"psi"``,
    ``["auc", "accuracy"]``; see :data:`kiln.monitoring.rules.METRICS`), ``feature``,
    ``version`` and ``arm`` one of each. ``limit`` keeps the newest ``limit`` values.
    A deployment that was never evaluated has no history (an empty list); a name that is
    neither evaluated nor deployed is NotFound, naming the close matches.
    """
    from kiln.serving import deployments
    from kiln.serving.specs import check_name

    check_name(deployment)
    metrics = _metrics(metric)
    start = _time(since, "since")
    end = _time(until, "until")
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"since must not be after until; got since={since!r}, until={until!r}")
    if feature is not None and not isinstance(feature, str):
        raise InvalidInput(f"feature must be a feature name; got {feature!r}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise InvalidInput(f"version must be an integer; got {version!r}")
    if arm is not None and not isinstance(arm, str):
        raise InvalidInput(f"arm must be an arm label such as 'champion'; got {arm!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInput(f"limit must be an integer >= 1; got {limit!r}")
    client = client or default_client()
    v = monitor_values.c
    columns = (v.evaluated_at, v.metric, v.version, v.arm, v.feature, v.value)
    query = sa.select(*columns).distinct().where(v.deployment == deployment)
    if start is not None:
        query = query.where(v.evaluated_at >= start)
    if end is not None:
        query = query.where(v.evaluated_at < end)
    if metrics is not None:
        query = query.where(v.metric.in_(metrics))
    for column, wanted in ((v.feature, feature), (v.version, version), (v.arm, arm)):
        if wanted is not None:
            query = query.where(column == wanted)
    if limit is not None:
        query = query.order_by(v.evaluated_at.desc()).limit(limit)
    with client.meta.read() as conn:
        rows = conn.execute(query).all()
        evaluated = bool(rows) or (
            conn.execute(sa.select(v.id).where(v.deployment == deployment).limit(1)).first()
            is not None
        )
    if not evaluated:
        deployments.get(deployment, client=client)  # NotFound unless it is deployed
    ordered = sorted(
        rows, key=lambda r: (r.evaluated_at, r.metric, r.version or 0, r.arm or "", r.feature or "")
    )
    return [
        MonitorValue(
            deployment=deployment,
            evaluated_at=from_millis(r.evaluated_at),
            metric=r.metric,
            value=r.value,
            version=r.version,
            arm=r.arm,
            feature=r.feature,
        )
        for r in ordered
    ]


def _metrics(metric: str | Sequence[str] | None) -> list[str] | None:
    if metric is None:
        return None
    names = [metric] if isinstance(metric, str) else metric
    if not isinstance(names, Sequence) or not names:
        raise InvalidInput(f"metric must be a metric name or a list of them; got {metric!r}")
    for name in names:
        if name not in METRICS:
            raise InvalidInput(f"metric: unknown {name!r}; known: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def _time(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime; got {value!r}")
    return to_millis(value)
