"""Reading runs back: get, search, compare, metric history, artifacts; and labelling one.

Every function returns frozen records; a record never changes under later writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kiln.core import InvalidInput, NotFound, close_matches, from_millis
from kiln.tracking import _tables as t
from kiln.tracking._queries import experiment_id, get_run, load_runs, reap_dead_runs
from kiln.tracking.artifacts import download_artifacts, list_artifacts, read_artifact
from kiln.tracking.client import TrackingClient, default_client
from kiln.tracking.records import MetricPoint, RunRecord
from kiln.tracking.search import compile_clause, compile_order, parse_filter, parse_order

__all__ = [
    "MetricSeries",
    "RunComparison",
    "children",
    "compare",
    "count",
    "download_artifacts",
    "get",
    "list_artifacts",
    "metric_history",
    "metric_series",
    "read_artifact",
    "search",
    "set_tags",
]

DEFAULT_LIMIT = 1000


def get(run_id: str, *, client: TrackingClient | None = None) -> RunRecord:
    """The run as stored now; ``NotFound`` for an unknown id."""
    client = client or default_client()
    reap_dead_runs(client)
    return get_run(client, run_id)


def set_tags(run_id: str, tags: Mapping[str, Any], *, client: TrackingClient | None = None) -> None:
    """Set tags on a run by id, live or ended: tags are labels (a verdict reached after
    the run, by whoever reached it), not part of what the run recorded."""
    from kiln.tracking.run import write_tags

    client = client or default_client()
    get_run(client, run_id)  # NotFound for an unknown id, rather than a foreign-key error
    write_tags(client, run_id, tags)


def search(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,
    order_by: Sequence[str] | str | None = None,
    limit: int | None = DEFAULT_LIMIT,
    *,
    offset: int = 0,
    top_level: bool = False,
    client: TrackingClient | None = None,
) -> list[RunRecord]:
    """Runs of ``experiment`` (a name, names, or all) matching ``filter``, in ``order_by``.

    ``filter`` example: ``"metrics.val_auc > 0.9 and params.num_leaves = 31"``;
    ``order_by`` example: ``["-metrics.val_auc", "attributes.start_time"]``. Without an
    order, newest runs come first. ``limit=None`` returns every match; ``offset`` skips
    that many first (a page); ``top_level=True`` keeps runs without a parent in the
    experiments searched (nested runs are then read with :func:`children`).
    """
    client = client or default_client()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInput(f"limit must be a positive integer or None; got {limit!r}")
    _check_offset(offset)
    clauses = parse_filter(filter)
    keys = parse_order(order_by)
    query, joined = compile_order(
        sa.select(t.runs.c.id), keys, {c.name for c in clauses if c.kind == "metrics"}
    )
    conditions = [compile_clause(c, joined) for c in clauses]
    reap_dead_runs(client)
    with client.meta.read() as conn:
        conditions += _scope(conn, experiment, top_level)
        query = query.where(*conditions)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        run_ids = list(conn.execute(query).scalars())
        return load_runs(conn, run_ids)


def count(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,
    *,
    top_level: bool = False,
    client: TrackingClient | None = None,
) -> int:
    """How many runs :func:`search` would find with the same arguments and no limit."""
    client = client or default_client()
    clauses = parse_filter(filter)
    _, joined = compile_order(
        sa.select(t.runs.c.id), [], {c.name for c in clauses if c.kind == "metrics"}
    )
    with client.meta.read() as conn:
        conditions = [compile_clause(c, joined) for c in clauses]
        conditions += _scope(conn, experiment, top_level)
        query = sa.select(sa.func.count()).select_from(t.runs).where(*conditions)
        return int(conn.execute(query).scalar() or 0)


def children(
    parent_ids: Sequence[str], *, client: TrackingClient | None = None
) -> dict[str, list[RunRecord]]:
    """The nested runs of each run in ``parent_ids``, oldest first (a parent without any
    is left out)."""
    client = client or default_client()
    if isinstance(parent_ids, str):
        raise InvalidInput("children takes a list of run ids")
    if not parent_ids:
        return {}
    with client.meta.read() as conn:
        rows = conn.execute(
            sa.select(t.runs.c.id, t.runs.c.parent_id)
            .where(t.runs.c.parent_id.in_(list(parent_ids)))
            .order_by(t.runs.c.start_time, t.runs.c.id)
        ).all()
        records = {r.id: r for r in load_runs(conn, [row.id for row in rows])}
    out: dict[str, list[RunRecord]] = {}
    for row in rows:
        out.setdefault(row.parent_id, []).append(records[row.id])
    return out


def _scope(conn: Any, experiment: str | Sequence[str] | None, top_level: bool) -> list[Any]:
    conditions: list[Any] = []
    if not isinstance(top_level, bool):
        raise InvalidInput(f"top_level must be True or False; got {top_level!r}")
    if experiment is None:
        if top_level:
            conditions.append(t.runs.c.parent_id.is_(None))
        return conditions
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    ids = [experiment_id(conn, name) for name in names]
    conditions.append(t.runs.c.experiment_id.in_(ids))
    if top_level:
        # Top-level within these experiments: no parent, or a parent elsewhere (a flow's
        # task run, say, that nests a training run of another experiment).
        parents = sa.select(t.runs.c.id).where(t.runs.c.experiment_id.in_(ids))
        conditions.append(sa.or_(t.runs.c.parent_id.is_(None), t.runs.c.parent_id.not_in(parents)))
    return conditions


def _check_offset(offset: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset must be an integer >= 0; got {offset!r}")


def metric_history(
    run_id: str, key: str, *, client: TrackingClient | None = None
) -> list[MetricPoint]:
    """Every value logged for ``key``, by step then time."""
    client = client or default_client()
    client.flush()
    get_run(client, run_id)
    m = t.metrics.c
    with client.meta.read() as conn:
        rows = conn.execute(
            sa.select(m.step, m.value, m.is_nan, m.timestamp)
            .where(m.run_id == run_id, m.key == key)
            .order_by(m.step, m.timestamp, m.id)
        ).all()
        if not rows:
            known = conn.execute(
                sa.select(t.latest_metrics.c.key).where(t.latest_metrics.c.run_id == run_id)
            ).scalars()
            raise NotFound(f"run {run_id} has no metric {key!r}{close_matches(key, known)}")
    return [
        MetricPoint(
            key=key,
            step=r.step,
            value=float("nan") if r.is_nan else r.value,
            timestamp=from_millis(r.timestamp),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class MetricSeries:
    """A metric's values by step as two numpy arrays (step order; NaN where NaN was
    logged): what a chart or an analysis reads, without a Python object per point."""

    key: str
    steps: Any  # np.ndarray of int64
    values: Any  # np.ndarray of float64


def metric_series(
    run_id: str,
    key: str,
    *,
    min_step: int | float | None = None,
    max_step: int | float | None = None,
    client: TrackingClient | None = None,
) -> MetricSeries:
    """Every value logged for ``key`` with its step, between ``min_step`` and
    ``max_step`` (inclusive) when given: one indexed query straight into numpy."""
    import numpy as np

    client = client or default_client()
    client.flush()
    for name, bound in (("min_step", min_step), ("max_step", max_step)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
            raise InvalidInput(f"{name} must be a number; got {bound!r}")
    m = t.metrics.c
    query = sa.select(m.step, m.value, m.is_nan).where(m.run_id == run_id, m.key == key)
    if min_step is not None:
        query = query.where(m.step >= min_step)
    if max_step is not None:
        query = query.where(m.step <= max_step)
    with client.meta.read() as conn:
        rows = conn.execute(query.order_by(m.step, m.timestamp, m.id)).all()
        if not rows:
            get_run(client, run_id)  # NotFound for an unknown run
            known = list(
                conn.execute(
                    sa.select(t.latest_metrics.c.key).where(t.latest_metrics.c.run_id == run_id)
                ).scalars()
            )
            if key not in known:
                raise NotFound(f"run {run_id} has no metric {key!r}{close_matches(key, known)}")
    if not rows:
        return MetricSeries(key, np.empty(0, np.int64), np.empty(0, np.float64))
    steps, numbers, nans = zip(*rows, strict=True)  # columns of plain tuples, not Row objects
    values = np.array(numbers, dtype=np.float64)
    values[np.array(nans, dtype=bool)] = np.nan
    return MetricSeries(key=key, steps=np.array(steps, dtype=np.int64), values=values)


@dataclass(frozen=True)
class RunComparison:
    """Runs side by side: every param and metric key any of them has."""

    runs: tuple[RunRecord, ...]
    param_keys: tuple[str, ...]
    metric_keys: tuple[str, ...]

    @property
    def differing_params(self) -> tuple[str, ...]:
        return tuple(
            k for k in self.param_keys if len({repr(r.params.get(k)) for r in self.runs}) > 1
        )

    def rows(self) -> list[tuple[str, list[Any]]]:
        """(field, one value per run) rows: attributes, then params, then metrics."""
        out: list[tuple[str, list[Any]]] = [
            ("name", [r.name for r in self.runs]),
            ("experiment", [r.experiment for r in self.runs]),
            ("status", [r.status for r in self.runs]),
            ("duration_s", [r.duration_s for r in self.runs]),
        ]
        out += [(f"params.{k}", [r.params.get(k) for r in self.runs]) for k in self.param_keys]
        out += [(f"metrics.{k}", [r.metrics.get(k) for r in self.runs]) for k in self.metric_keys]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [r.to_dict() for r in self.runs],
            "param_keys": list(self.param_keys),
            "metric_keys": list(self.metric_keys),
            "differing_params": list(self.differing_params),
        }


def compare(run_ids: Sequence[str], *, client: TrackingClient | None = None) -> RunComparison:
    client = client or default_client()
    if isinstance(run_ids, str) or len(run_ids) < 1:
        raise InvalidInput("compare needs a list of one or more run ids")
    reap_dead_runs(client)
    with client.meta.read() as conn:
        records = load_runs(conn, list(run_ids))
    found = {r.id for r in records}
    missing = [r for r in run_ids if r not in found]
    if missing:
        raise NotFound(f"no run with id {missing[0]!r}")
    params = sorted({k for r in records for k in r.params})
    metrics = sorted({k for r in records for k in r.metrics})
    return RunComparison(tuple(records), tuple(params), tuple(metrics))
