"""Experiments: named groups of runs, created on first use by ``start_run``."""

from __future__ import annotations

import sqlalchemy as sa

from kiln.core import Conflict, from_millis
from kiln.tracking import _tables as t
from kiln.tracking import _validate as v
from kiln.tracking._queries import ensure_experiment, experiment_id
from kiln.tracking.client import TrackingClient, default_client
from kiln.tracking.records import ExperimentRecord

__all__ = ["create", "get", "list", "rename"]

_list = list


def _records(client: TrackingClient, name: str | None = None) -> _list[ExperimentRecord]:
    e = t.experiments.c
    counts = (
        sa.select(t.runs.c.experiment_id, sa.func.count().label("n"))
        .group_by(t.runs.c.experiment_id)
        .subquery()
    )
    query = (
        sa.select(e.id, e.name, e.created_at, sa.func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.experiment_id == e.id)
        .order_by(e.created_at, e.id)
    )
    if name is not None:
        query = query.where(e.name == name)
    with client.meta.read() as conn:
        rows = conn.execute(query).all()
    return [
        ExperimentRecord(id=r[0], name=r[1], created_at=from_millis(r[2]), run_count=int(r[3]))
        for r in rows
    ]


def list(*, client: TrackingClient | None = None) -> _list[ExperimentRecord]:
    """Every experiment, oldest first, with its number of runs."""
    return _records(client or default_client())


def get(name: str, *, client: TrackingClient | None = None) -> ExperimentRecord:
    client = client or default_client()
    with client.meta.read() as conn:
        experiment_id(conn, v.check_name("experiment", name))  # NotFound with close matches
    return _records(client, name)[0]


def create(name: str, *, client: TrackingClient | None = None) -> ExperimentRecord:
    """Create ``name`` if missing (idempotent) and return it."""
    client = client or default_client()
    v.check_name("experiment", name)
    with client.meta.write_cursor() as cursor:
        ensure_experiment(cursor, client.meta.dialect, name)
    return _records(client, name)[0]


def rename(old: str, new: str, *, client: TrackingClient | None = None) -> ExperimentRecord:
    """Rename an experiment; its runs follow. A taken name is a Conflict."""
    client = client or default_client()
    v.check_name("experiment", new)
    with client.meta.write() as conn:
        exp = experiment_id(conn, v.check_name("experiment", old))
        taken = conn.execute(
            sa.select(t.experiments.c.id).where(t.experiments.c.name == new)
        ).scalar()
        if taken is not None and taken != exp:
            raise Conflict(f"cannot rename experiment {old!r} to {new!r}: that name is taken")
        conn.execute(t.experiments.update().where(t.experiments.c.id == exp).values(name=new))
    return _records(client, new)[0]
