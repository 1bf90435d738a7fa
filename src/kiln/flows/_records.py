"""Flow runs, their tasks and the step cache in the metadata store.

Every change is one short write transaction, and a task's output is stored (blob first)
before the row that says it finished: a crash between the two leaves a blob nobody names,
never a finished task without its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from kiln.core import InvalidInput, NotFound, now_millis
from kiln.flows._tables import flow_cache, flow_runs, flow_tasks
from kiln.flows._values import ValueRef
from kiln.flows.records import FlowRunRecord, TaskRecord
from kiln.tracking import TrackingClient, default_client

__all__ = [
    "cached",
    "cancel_requested",
    "create_run",
    "finish_task",
    "forget_cached",
    "get_run",
    "list_runs",
    "note_actor",
    "request_cancel",
    "set_run_status",
    "start_task",
    "tasks",
    "upsert_task",
]


def create_run(
    client: TrackingClient,
    run_id: str,
    *,
    flow: str,
    target: str,
    params: dict[str, Any],
    executor: str,
) -> None:
    now = now_millis()
    with client.meta.write() as conn:
        conn.execute(
            sa.insert(flow_runs).values(
                id=run_id,
                flow=flow,
                target=target,
                params=orjson.dumps(params, default=str).decode(),
                status="running",
                executor=executor,
                created_at=now,
                updated_at=now,
                cancel_requested=False,
                error=None,
            )
        )


def set_run_status(
    client: TrackingClient,
    run_id: str,
    status: str,
    *,
    error: str | None = None,
    executor: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": now_millis(), "error": error}
    if status == "running":
        values["cancel_requested"] = False
    if executor is not None:
        values["executor"] = executor
    with client.meta.write() as conn:
        conn.execute(sa.update(flow_runs).where(flow_runs.c.id == run_id).values(**values))


def _run_record(row: Any) -> FlowRunRecord:
    return FlowRunRecord(
        id=row.id,
        flow=row.flow,
        target=row.target,
        params=orjson.loads(row.params),
        status=row.status,
        executor=row.executor,
        created_at=row.created_at,
        updated_at=row.updated_at,
        cancel_requested=bool(row.cancel_requested),
        error=row.error,
        schedule=row.schedule,
    )


def get_run(run_id: str, *, client: TrackingClient | None = None) -> FlowRunRecord:
    """The flow run ``run_id``; NotFound names the most recent runs when it is unknown."""
    client = client or default_client()
    with client.meta.read() as conn:
        row = conn.execute(sa.select(flow_runs).where(flow_runs.c.id == run_id)).first()
        if row is None:
            recent = conn.execute(
                sa.select(flow_runs.c.id).order_by(flow_runs.c.created_at.desc()).limit(5)
            ).all()
    if row is None:
        known = ", ".join(r.id for r in recent) or "none yet"
        raise NotFound(f"no flow run {run_id!r}; most recent: {known}")
    return _run_record(row)


def list_runs(
    flow: str | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    client: TrackingClient | None = None,
) -> list[FlowRunRecord]:
    """Flow runs, newest first (of one flow when ``flow`` is given); ``offset`` skips the
    newest ones, for pages."""
    for name, value, least in (("limit", limit, 1), ("offset", offset, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidInput(f"list_runs: {name} must be an integer >= {least}; got {value!r}")
    client = client or default_client()
    query = (
        sa.select(flow_runs)
        .order_by(flow_runs.c.created_at.desc(), flow_runs.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if flow is not None:
        query = query.where(flow_runs.c.flow == flow)
    with client.meta.read() as conn:
        return [_run_record(r) for r in conn.execute(query).all()]


def request_cancel(
    run_id: str,
    *,
    actor: str | None = None,
    reason: str | None = None,
    client: TrackingClient | None = None,
) -> FlowRunRecord:
    """Ask the process running ``run_id`` to stop it (it checks about twice a second).

    ``actor`` (and ``reason``) are recorded on the run's tracked run as the tag
    ``kiln.flow.cancel_requested_by``, so its page says who asked. A run that is not
    running is returned unchanged.
    """
    client = client or default_client()
    record = get_run(run_id, client=client)
    if record.status != "running":
        return record
    with client.meta.write() as conn:
        conn.execute(
            sa.update(flow_runs)
            .where(flow_runs.c.id == run_id)
            .values(cancel_requested=True, updated_at=now_millis())
        )
    if actor is not None:
        note_actor(client, run_id, "kiln.flow.cancel_requested_by", actor, reason)
    return get_run(run_id, client=client)


def note_actor(
    client: TrackingClient, run_id: str, tag: str, actor: str, reason: str | None
) -> None:
    """Who acted on a flow run, when and why, as a tag of its tracked run."""
    from kiln.tracking.runs import set_tags

    stamp = datetime.fromtimestamp(now_millis() / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    set_tags(
        run_id, {tag: f"{actor} at {stamp}" + (f": {reason}" if reason else "")}, client=client
    )


def cancel_requested(client: TrackingClient, run_id: str) -> bool:
    with client.meta.read() as conn:
        value = conn.execute(
            sa.select(flow_runs.c.cancel_requested).where(flow_runs.c.id == run_id)
        ).scalar()
    return bool(value)


# -- tasks ------------------------------------------------------------------------------------


def _task_record(row: Any) -> TaskRecord:
    return TaskRecord(
        run_id=row.run_id,
        task=row.task,
        step=row.step,
        status=row.status,
        attempts=row.attempts,
        cache_key=row.cache_key,
        output=ValueRef.from_json(row.output) if row.output else None,
        child_run_id=row.child_run_id,
        started_at=row.started_at,
        ended_at=row.ended_at,
        history=tuple(orjson.loads(row.history)),
    )


def tasks(run_id: str, *, client: TrackingClient | None = None) -> list[TaskRecord]:
    """The tasks of a flow run in the order they were first started."""
    client = client or default_client()
    with client.meta.read() as conn:
        rows = conn.execute(
            sa.select(flow_tasks)
            .where(flow_tasks.c.run_id == run_id)
            .order_by(flow_tasks.c.started_at, flow_tasks.c.task)
        ).all()
    return [_task_record(r) for r in rows]


def _write_task(
    conn: Any, run_id: str, task: str, step: str, values: dict[str, Any], now: int
) -> None:
    """Change the task's row, or create it (a task's first record may be its end)."""
    changed = conn.execute(
        sa.update(flow_tasks)
        .where(flow_tasks.c.run_id == run_id, flow_tasks.c.task == task)
        .values(**values)
    ).rowcount
    if not changed:
        row = {"status": "pending", "attempts": 0, "history": "[]", "started_at": now, **values}
        conn.execute(sa.insert(flow_tasks).values(run_id=run_id, task=task, step=step, **row))


def upsert_task(client: TrackingClient, run_id: str, task: str, step: str, **values: Any) -> None:
    """Create the task's row or change it (status, attempts, history...)."""
    if "history" in values:
        values["history"] = orjson.dumps(values["history"]).decode()
    with client.meta.write() as conn:
        _write_task(conn, run_id, task, step, values, now_millis())


def start_task(
    client: TrackingClient, run_id: str, task: str, step: str, attempts: int, history: Sequence[Any]
) -> None:
    upsert_task(
        client,
        run_id,
        task,
        step,
        status="running",
        attempts=attempts,
        started_at=now_millis(),
        ended_at=None,
        history=list(history),
    )


def finish_task(
    client: TrackingClient,
    run_id: str,
    task: str,
    step: str,
    *,
    status: str,
    history: Sequence[Any],
    output: ValueRef | None = None,
    cache_key: str | None = None,
    child_run_id: str | None = None,
    cache: bool = False,
) -> None:
    """Record a task's end; a finished output also enters the step cache, atomically."""
    now = now_millis()
    values: dict[str, Any] = {
        "status": status,
        "ended_at": now,
        "history": orjson.dumps(list(history)).decode(),
        "cache_key": cache_key,
    }
    if output is not None:
        values["output"] = output.to_json()
    if child_run_id is not None:
        values["child_run_id"] = child_run_id
    with client.meta.write() as conn:
        _write_task(conn, run_id, task, step, values, now)
        if cache and output is not None and cache_key is not None:
            exists = conn.execute(
                sa.select(flow_cache.c.key).where(flow_cache.c.key == cache_key)
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(flow_cache).values(
                        key=cache_key, step=step, output=output.to_json(), created_at=now
                    )
                )


# -- the step cache ---------------------------------------------------------------------------


def cached(client: TrackingClient, key: str) -> ValueRef | None:
    with client.meta.read() as conn:
        text = conn.execute(sa.select(flow_cache.c.output).where(flow_cache.c.key == key)).scalar()
    return ValueRef.from_json(text) if text else None


def forget_cached(step: str, *, client: TrackingClient | None = None) -> int:
    """Drop the cached outputs of ``step``; how many there were."""
    client = client or default_client()
    with client.meta.write() as conn:
        return int(conn.execute(sa.delete(flow_cache).where(flow_cache.c.step == step)).rowcount)
