"""Experiments: named groups of runs, created on first use by ``start_run``."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kiln.core import Conflict, InvalidInput, from_millis
from kiln.tracking import _tables as t
from kiln.tracking import _validate as v
from kiln.tracking._queries import ensure_experiment, experiment_id
from kiln.tracking.client import TrackingClient, default_client
from kiln.tracking.records import ExperimentRecord

__all__ = ["ExperimentKeys", "create", "get", "keys", "list", "rename"]

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


@dataclass(frozen=True)
class ExperimentKeys:
    """The param, metric and tag keys an experiment's runs use, each sorted."""

    params: tuple[str, ...]
    metrics: tuple[str, ...]
    tags: tuple[str, ...]


def keys(name: str, *, recent: int = 1000, client: TrackingClient | None = None) -> ExperimentKeys:
    """The keys of the ``recent`` newest runs of experiment ``name``: what a runs table can
    show as columns, read from an index walk of those runs rather than every row."""
    client = client or default_client()
    if isinstance(recent, bool) or not isinstance(recent, int) or recent < 1:
        raise InvalidInput(f"recent must be an integer >= 1; got {recent!r}")
    with client.meta.read() as conn:
        exp = experiment_id(conn, v.check_name("experiment", name))
        newest = (
            sa.select(t.runs.c.id)
            .where(t.runs.c.experiment_id == exp)
            .order_by(t.runs.c.start_time.desc())
            .limit(recent)
            .subquery()
        )
        found = []
        for table in (t.params, t.latest_metrics, t.tags):
            query = (
                sa.select(table.c.key)
                .where(table.c.run_id.in_(sa.select(newest.c.id)))
                .distinct()
                .order_by(table.c.key)
            )
            found.append(tuple(conn.execute(query).scalars()))
    return ExperimentKeys(*found)


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
