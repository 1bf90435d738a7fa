"""What a deployment served in a window, per model version and traffic arm, from its
prediction log.

The prediction log holds every answer with the version and arm that gave it, its
latency and whether a fallback gave it, so it is the record of a deployment's traffic
that outlives the servers and covers all of their workers: request rate, latency
percentiles and the share of answers a fallback gave, and the requests per arm over time
(the traffic split as it was, not as configured). Requests a server refused or failed
without an answer are not in the log; the servers' Prometheus metrics count those
(:func:`kiln.deployments.server_counts`).

Everything is computed with Arrow's grouped aggregations over one row per request, so a
window of millions of predictions costs one scan of its files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput
from kiln.features.definitions import parse_duration
from kiln.serving.specs import check_name
from kiln.serving.traffic import arm_of_label

__all__ = ["Activity", "ArmActivity", "activity"]

_QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True, kw_only=True)
class ArmActivity:
    """One model version on one arm: ``arm`` is the label the policy logged (``champion``,
    ``canary``, ``A``/``B``, ``primary``/``shadow``, ``blue``/``green``) and ``side`` which
    side of the rollout that is (``champion`` or ``challenger``); ``requests`` answered
    (``rows`` predicted), their rate over the window, latency percentiles in ms, the share
    a fallback answered, and whether the answers were a shadow's (logged, never
    returned)."""

    version: int
    arm: str
    side: str
    shadow: bool
    requests: int
    rows: int
    per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    fallback_rate: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, kw_only=True)
class Activity:
    """A deployment's traffic in ``[since, until)``: one :class:`ArmActivity` per version
    and arm, and ``timeline``: the start of each of ``len(times)`` equal buckets and, per
    arm label (shadow answers as ``shadow``), the requests in each."""

    deployment: str
    since: datetime
    until: datetime
    arms: tuple[ArmActivity, ...]
    times: tuple[datetime, ...]
    timeline: dict[str, list[int]]

    @property
    def requests(self) -> int:
        """Requests answered to clients (shadow answers are not counted twice)."""
        return sum(a.requests for a in self.arms if not a.shadow)

    def share(self, side: str) -> float:
        """The share of answered requests that the ``champion`` or ``challenger`` side
        answered, under whatever labels (0 when none were answered)."""
        total = self.requests
        mine = sum(a.requests for a in self.arms if a.side == side and not a.shadow)
        return mine / total if total else 0.0


def activity(
    deployment: str,
    *,
    window: str | timedelta | None = "1h",
    since: datetime | None = None,
    until: datetime | None = None,
    buckets: int = 60,
    root: str | None = None,
) -> Activity:
    """What ``deployment`` served from ``since`` (default: ``until`` minus ``window``) to
    ``until`` (default now), per version and arm, with the requests per arm in
    ``buckets`` equal time buckets. ``root`` is the prediction log's directory (default:
    the settings'). A deployment that served nothing in the window has no arms, not an
    error: a quiet deployment is a fact the dashboard shows."""
    check_name(deployment)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 1000:
        raise InvalidInput(f"activity: buckets must be an integer from 1 to 1000; got {buckets!r}")
    end = _aware(until, "until") or datetime.now(UTC)
    start = _aware(since, "since")
    if start is None:
        if window is None:
            raise InvalidInput("activity needs window= (e.g. '1h') or since=")
        start = end - parse_duration(window, owner="activity", param="window")
    if start >= end:
        raise InvalidInput(
            f"activity: since ({start.isoformat()}) must be before until ({end.isoformat()})"
        )
    from kiln.serving._predlog_read import read_predictions  # pyarrow.dataset: on first use

    table = read_predictions(root, deployment=deployment, since=start)
    at = table["at"]
    table = table.filter(
        pc.and_(pc.greater_equal(at, pa.scalar(start)), pc.less(at, pa.scalar(end)))
    )
    rows_of = _rows(table)
    requests = _one_row_per_request(table)
    seconds = (end - start).total_seconds()
    arms = _arms(requests, rows_of, seconds)
    times, timeline = _timeline(requests, start, end, buckets)
    return Activity(
        deployment=deployment,
        since=start,
        until=end,
        arms=arms,
        times=times,
        timeline=timeline,
    )


def _rows(table: pa.Table) -> dict[tuple[int, str, bool], int]:
    counted = table.group_by(["version", "arm", "shadow"]).aggregate([("row", "count")])
    return {
        (int(v), str(a), bool(s)): int(n)
        for v, a, s, n in zip(
            counted["version"].to_pylist(),
            counted["arm"].to_pylist(),
            counted["shadow"].to_pylist(),
            counted["row_count"].to_pylist(),
            strict=True,
        )
    }


def _one_row_per_request(table: pa.Table) -> pa.Table:
    """A request's rows share its id, latency and time: keep one per request (and per
    arm, since a shadow answers the same request id too)."""
    keys = ["request_id", "version", "arm", "shadow"]
    merged = (
        table.select([*keys, "latency_ms", "fallback", "at"])
        .group_by(keys, use_threads=False)
        .aggregate([("latency_ms", "max"), ("fallback", "max"), ("at", "min")])
    )
    return pa.table(
        {
            **{k: merged[k] for k in keys},
            "latency_ms": merged["latency_ms_max"],
            "fallback": merged["fallback_max"],
            "at": merged["at_min"],
        }
    )


def _arms(
    requests: pa.Table, rows_of: dict[tuple[int, str, bool], int], seconds: float
) -> tuple[ArmActivity, ...]:
    if requests.num_rows == 0:
        return ()
    options = pc.TDigestOptions(q=list(_QUANTILES))
    grouped = (
        requests.append_column("failed", pc.cast(requests["fallback"], pa.int64()))
        .group_by(["version", "arm", "shadow"])
        .aggregate(
            [
                ("request_id", "count"),
                ("failed", "sum"),
                ("latency_ms", "tdigest", options),
            ]
        )
    )
    out = []
    for row in grouped.to_pylist():
        count = int(row["request_id_count"])
        p50, p95, p99 = row["latency_ms_tdigest"] or [None, None, None]
        key = (int(row["version"]), str(row["arm"]), bool(row["shadow"]))
        out.append(
            ArmActivity(
                version=key[0],
                arm=key[1],
                side=arm_of_label(key[1]),
                shadow=key[2],
                requests=count,
                rows=rows_of.get(key, count),
                per_second=count / seconds,
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
                fallback_rate=int(row["failed_sum"] or 0) / count,
            )
        )
    return tuple(sorted(out, key=lambda a: (a.shadow, a.side != "champion", a.arm, a.version)))


def _timeline(
    requests: pa.Table, start: datetime, end: datetime, buckets: int
) -> tuple[tuple[datetime, ...], dict[str, list[int]]]:
    width_us = max(1, int((end - start) / timedelta(microseconds=1)) // buckets)
    start_us = int((start - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    times = tuple(start + timedelta(microseconds=width_us * i) for i in range(buckets))
    timeline: dict[str, list[int]] = {}
    if requests.num_rows == 0:
        return times, timeline
    at_us = pc.cast(pc.cast(requests["at"], pa.timestamp("us", tz="UTC")), pa.int64())
    index = pc.min_element_wise(
        pc.divide(pc.subtract(at_us, start_us), width_us), pa.scalar(buckets - 1, pa.int64())
    )
    lane = pc.if_else(requests["shadow"], pa.scalar("shadow"), requests["arm"])
    counted = (
        pa.table({"lane": lane, "bucket": index})
        .group_by(["lane", "bucket"])
        .aggregate([("bucket", "count")])
    )
    for name, bucket, count in zip(
        counted["lane"].to_pylist(),
        counted["bucket"].to_pylist(),
        counted["bucket_count"].to_pylist(),
        strict=True,
    ):
        timeline.setdefault(str(name), [0] * buckets)[int(bucket)] = int(count)
    return times, timeline


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"activity: {name} must be a datetime; got {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
