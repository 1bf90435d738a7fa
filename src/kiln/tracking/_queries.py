"""Reads shared by the public functions: experiments by name, records in bulk, reaping."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.core import NotFound, close_matches, from_millis, new_id, now_millis
from kiln.tracking import _tables as t
from kiln.tracking._params import decode
from kiln.tracking._statements import sql
from kiln.tracking.client import TrackingClient
from kiln.tracking.records import RunRecord, RunStatus, frozen_mapping

_CHUNK = 500


def experiment_id(conn: Connection, name: str) -> str:
    found = conn.execute(sa.select(t.experiments.c.id).where(t.experiments.c.name == name)).scalar()
    if found is None:
        names = conn.execute(sa.select(t.experiments.c.name)).scalars()
        raise NotFound(f"no experiment named {name!r}{close_matches(name, names)}")
    return str(found)


def ensure_experiment(cursor: Any, dialect: str, name: str) -> str:
    """The experiment's id inside the caller's write transaction, creating it if needed.

    ``ON CONFLICT DO NOTHING`` makes concurrent creators agree on one row on both dialects.
    """
    cursor.execute(sql("experiment_id", dialect), (name,))
    found = cursor.fetchone()
    if found is None:
        cursor.execute(sql("experiment_insert", dialect), (new_id(), name, now_millis()))
        cursor.execute(sql("experiment_id", dialect), (name,))
        found = cursor.fetchone()
    return str(found[0])


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


_RUN_COLUMNS = (
    "r.id, r.experiment_id, e.name, r.name, r.status, r.start_time, r.end_time, "
    "r.parent_id, r.environment_id, r.error"
)


def load_runs(conn: Connection, run_ids: Sequence[str]) -> list[RunRecord]:
    """Records for ``run_ids`` in that order, with four queries per chunk of ids.

    Bulk reads go straight to the DB-API cursor inside the caller's transaction: building
    a record costs a few microseconds, which SQLAlchemy's per-row machinery would triple.
    The SQL text holds only placeholders; ids are bound parameters.
    """
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    cursor = conn.connection.cursor()
    rows: dict[str, tuple[Any, ...]] = {}
    params: dict[str, dict[str, Any]] = defaultdict(dict)
    metrics: dict[str, dict[str, float]] = defaultdict(dict)
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    try:
        for chunk in _chunks(run_ids):
            ids = f"({', '.join([mark] * len(chunk))})"
            cursor.execute(
                f"SELECT {_RUN_COLUMNS} FROM kiln_runs r JOIN kiln_experiments e "
                f"ON e.id = r.experiment_id WHERE r.id IN {ids}",
                tuple(chunk),
            )
            for row in cursor.fetchall():
                rows[row[0]] = row
            cursor.execute(
                f"SELECT run_id, key, value, value_type FROM kiln_params WHERE run_id IN {ids}",
                tuple(chunk),
            )
            for run_id, key, value, kind in cursor.fetchall():
                params[run_id][key] = decode(value, kind)
            cursor.execute(
                f"SELECT run_id, key, value, is_nan FROM kiln_latest_metrics WHERE run_id IN {ids}",
                tuple(chunk),
            )
            for run_id, key, value, nan in cursor.fetchall():
                metrics[run_id][key] = _NAN if nan else value
            cursor.execute(
                f"SELECT run_id, key, value FROM kiln_tags WHERE run_id IN {ids}", tuple(chunk)
            )
            for run_id, key, value in cursor.fetchall():
                tags[run_id][key] = value
        envs: dict[str, Any] = {}
        env_ids = sorted({row[8] for row in rows.values() if row[8]})
        if env_ids:
            cursor.execute(
                f"SELECT id, data FROM kiln_environments WHERE id IN "
                f"({', '.join([mark] * len(env_ids))})",
                tuple(env_ids),
            )
            envs = {env_id: frozen_mapping(json.loads(data)) for env_id, data in cursor.fetchall()}
    finally:
        cursor.close()
    out = []
    for run_id in run_ids:
        row = rows.get(run_id)
        if row is None:
            continue
        out.append(
            RunRecord(
                id=row[0],
                experiment_id=row[1],
                experiment=row[2],
                name=row[3],
                status=row[4],
                start_time=from_millis(row[5]),
                end_time=from_millis(row[6]),
                parent_id=row[7],
                error=row[9],
                params=MappingProxyType(params.pop(run_id, {})),
                metrics=MappingProxyType(metrics.pop(run_id, {})),
                tags=MappingProxyType(tags.pop(run_id, {})),
                environment=envs.get(row[8]) or _EMPTY,
            )
        )
    return out


_NAN = float("nan")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def get_run(client: TrackingClient, run_id: str) -> RunRecord:
    if not isinstance(run_id, str) or not run_id:
        raise NotFound(f"run id must be a non-empty string, got {run_id!r}")
    with client.meta.read() as conn:
        found = load_runs(conn, [run_id])
    if not found:
        raise NotFound(f"no run with id {run_id!r}")
    return found[0]
