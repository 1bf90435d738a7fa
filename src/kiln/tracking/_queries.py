"""Reads shared by the public functions: experiments by name, records in bulk, reaping."""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.core import NotFound, from_millis, new_id, now_millis
from kiln.tracking import _tables as t
from kiln.tracking._params import decode
from kiln.tracking.client import TrackingClient
from kiln.tracking.records import RunRecord, RunStatus, frozen_mapping

_CHUNK = 500


def close_matches(word: str, choices: Iterable[str]) -> str:
    options = sorted(set(choices))
    near = difflib.get_close_matches(word, options, n=3, cutoff=0.5)
    if near:
        return f"; did you mean {', '.join(near)}?"
    if options:
        shown = ", ".join(options[:10]) + (", ..." if len(options) > 10 else "")
        return f"; known: {shown}"
    return ""


def experiment_id(conn: Connection, name: str) -> str:
    found = conn.execute(sa.select(t.experiments.c.id).where(t.experiments.c.name == name)).scalar()
    if found is None:
        names = conn.execute(sa.select(t.experiments.c.name)).scalars()
        raise NotFound(f"no experiment named {name!r}{close_matches(name, names)}")
    return str(found)


def get_or_create_experiment(client: TrackingClient, name: str) -> str:
    with client.meta.read() as conn:
        found = conn.execute(
            sa.select(t.experiments.c.id).where(t.experiments.c.name == name)
        ).scalar()
    if found is not None:
        return str(found)
    with client.meta.write() as conn:
        found = conn.execute(
            sa.select(t.experiments.c.id).where(t.experiments.c.name == name)
        ).scalar()
        if found is not None:  # created meanwhile by another process
            return str(found)
        new = new_id()
        conn.execute(t.experiments.insert().values(id=new, name=name, created_at=now_millis()))
        return new


def reap_dead_runs(client: TrackingClient) -> None:
    """Mark RUNNING runs whose heartbeat is older than the timeout as KILLED."""
    deadline = now_millis() - int(client.heartbeat_timeout_s * 1000)
    stale = sa.and_(t.runs.c.status == RunStatus.RUNNING, t.runs.c.heartbeat_at < deadline)
    with client.meta.read() as conn:
        if conn.execute(sa.select(t.runs.c.id).where(stale).limit(1)).first() is None:
            return
    with client.meta.write() as conn:
        conn.execute(
            t.runs.update()
            .where(stale)
            .values(
                status=RunStatus.KILLED,
                end_time=t.runs.c.heartbeat_at,
                error="heartbeat lost: the process ended without ending the run",
            )
        )


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def load_runs(conn: Connection, run_ids: Sequence[str]) -> list[RunRecord]:
    """Records for ``run_ids`` in that order, with a fixed number of queries per chunk."""
    rows: dict[str, Any] = {}
    params: dict[str, dict[str, Any]] = defaultdict(dict)
    metrics: dict[str, dict[str, float]] = defaultdict(dict)
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    for chunk in _chunks(run_ids):
        query = (
            sa.select(t.runs, t.experiments.c.name.label("experiment_name"))
            .join(t.experiments, t.experiments.c.id == t.runs.c.experiment_id)
            .where(t.runs.c.id.in_(chunk))
        )
        for row in conn.execute(query):
            rows[row.id] = row
        for r in conn.execute(
            sa.select(
                t.params.c.run_id, t.params.c.key, t.params.c.value, t.params.c.value_type
            ).where(t.params.c.run_id.in_(chunk))
        ):
            params[r[0]][r[1]] = decode(r[2], r[3])
        for r in conn.execute(
            sa.select(
                t.latest_metrics.c.run_id,
                t.latest_metrics.c.key,
                t.latest_metrics.c.value,
                t.latest_metrics.c.is_nan,
            ).where(t.latest_metrics.c.run_id.in_(chunk))
        ):
            metrics[r[0]][r[1]] = float("nan") if r[3] else r[2]
        for r in conn.execute(
            sa.select(t.tags.c.run_id, t.tags.c.key, t.tags.c.value).where(
                t.tags.c.run_id.in_(chunk)
            )
        ):
            tags[r[0]][r[1]] = r[2]
    env_ids = {row.environment_id for row in rows.values() if row.environment_id}
    envs: dict[str, Any] = {}
    if env_ids:
        for env_id, data in conn.execute(
            sa.select(t.environments.c.id, t.environments.c.data).where(
                t.environments.c.id.in_(sorted(env_ids))
            )
        ):
            envs[env_id] = json.loads(data)
    out = []
    for run_id in run_ids:
        row = rows.get(run_id)
        if row is None:
            continue
        start = from_millis(row.start_time)
        assert start is not None
        out.append(
            RunRecord(
                id=row.id,
                experiment=row.experiment_name,
                experiment_id=row.experiment_id,
                name=row.name,
                status=row.status,
                start_time=start,
                end_time=from_millis(row.end_time),
                parent_id=row.parent_id,
                error=row.error,
                params=frozen_mapping(params.get(run_id)),
                metrics=frozen_mapping(metrics.get(run_id)),
                tags=frozen_mapping(tags.get(run_id)),
                environment=frozen_mapping(envs.get(row.environment_id)),
            )
        )
    return out


def get_run(client: TrackingClient, run_id: str) -> RunRecord:
    if not isinstance(run_id, str) or not run_id:
        raise NotFound(f"run id must be a non-empty string, got {run_id!r}")
    with client.meta.read() as conn:
        found = load_runs(conn, [run_id])
    if not found:
        raise NotFound(f"no run with id {run_id!r}")
    return found[0]
