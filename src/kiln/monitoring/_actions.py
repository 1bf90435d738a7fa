"""Running what alert events do: log, webhook, rollback, retrain.

Actions are rows written with their event (:mod:`kiln.monitoring.alerts`). Running one
first claims it with a compare-and-set (``pending`` and due, or ``running`` with a claim
older than :data:`STALE_MS`, the mark of a runner that died), so two monitors never run
the same action at once. A failed webhook is retried with exponential backoff: a retry
due within :data:`WAIT_S` seconds is waited for in this call (a short outage of the
receiver costs no evaluation), a later one is left pending for the next call, which is
how ``kiln monitor serve`` delivers it and how ``kiln monitor run`` (cron) does on its
next run. The receiver gets the event id in an ``Idempotency-Key`` header: a delivery it
acknowledged is never sent again by Kiln, and one whose answer was lost can be told
apart from a new alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from kiln.core import Conflict, InvalidInput, KilnError, NotFound, now_millis
from kiln.monitoring._tables import alert_actions, alert_events
from kiln.tracking import TrackingClient, default_client

__all__ = ["STALE_MS", "WAIT_S", "run_pending"]

STALE_MS = 300_000  # a claim this old belongs to a runner that died
WAIT_S = 10.0  # a retry due sooner than this is waited for in the same call
ACTOR = "kiln monitor"
log = logging.getLogger("kiln.monitoring")


class _Retry(Exception):
    """A failure worth trying again (the receiver is down, the store is busy)."""


def run_pending(*, deployment: str | None = None, client: TrackingClient | None = None) -> int:
    """Run every due pending action (of one deployment's events); returns how many ended
    (done or given up). Retries due within :data:`WAIT_S` are waited for."""
    client = client or default_client()
    ended = 0
    deadline = time.monotonic() + WAIT_S
    while True:
        now = now_millis()
        rows = _due(client, deployment, now)
        if not rows:
            wait = _next_retry(client, deployment, now)
            if wait is None or time.monotonic() + wait > deadline:
                return ended
            time.sleep(max(wait, 0.01))
            continue
        for row in rows:
            if _claim(client, row, now):
                ended += _run(client, row)


def _due(client: TrackingClient, deployment: str | None, now: int) -> list[Any]:
    query = (
        sa.select(alert_actions, alert_events)
        .join(alert_events, alert_events.c.id == alert_actions.c.event_id)
        .where(
            sa.or_(
                sa.and_(alert_actions.c.state == "pending", alert_actions.c.next_at <= now),
                sa.and_(
                    alert_actions.c.state == "running",
                    alert_actions.c.claimed_at < now - STALE_MS,
                ),
            )
        )
        .order_by(alert_actions.c.event_id, alert_actions.c.position)
    )
    if deployment is not None:
        query = query.where(alert_events.c.deployment == deployment)
    with client.meta.read() as conn:
        return list(conn.execute(query).all())


def _next_retry(client: TrackingClient, deployment: str | None, now: int) -> float | None:
    query = (
        sa.select(sa.func.min(alert_actions.c.next_at))
        .join(alert_events, alert_events.c.id == alert_actions.c.event_id)
        .where(alert_actions.c.state == "pending")
    )
    if deployment is not None:
        query = query.where(alert_events.c.deployment == deployment)
    with client.meta.read() as conn:
        first = conn.execute(query).scalar()
    return None if first is None else (first - now) / 1000


def _claim(client: TrackingClient, row: Any, now: int) -> bool:
    with client.meta.write() as conn:
        taken = conn.execute(
            sa.update(alert_actions)
            .where(
                alert_actions.c.event_id == row.event_id,
                alert_actions.c.position == row.position,
                alert_actions.c.state == row.state,
                alert_actions.c.attempts == row.attempts,
            )
            .values(state="running", claimed_at=now, updated_at=now)
        ).rowcount
    return taken == 1


def _run(client: TrackingClient, row: Any) -> int:
    spec = orjson.loads(row.spec)
    attempts = row.attempts + 1
    try:
        result = _RUNNERS[row.kind](spec, row, client)
        state, next_at = "done", 0
    except _Retry as exc:
        result = {"error": str(exc)}
        limit = int(spec.get("attempts", 1))
        if attempts >= limit:
            state, next_at = "failed", 0
            log.error("alert %s: %s gave up after %d attempts: %s", row.event_id, row.kind,
                      attempts, exc)  # fmt: skip
        else:
            delay = min(spec.get("backoff_s", 1.0) * 2 ** (attempts - 1),
                        spec.get("max_backoff_s", 300.0))  # fmt: skip
            state, next_at = "pending", now_millis() + int(delay * 1000)
    except Exception as exc:  # a final failure: wrong settings, a refused payload
        result = {"error": f"{type(exc).__name__}: {exc}"}
        state, next_at = "failed", 0
        log.error("alert %s: %s failed: %s", row.event_id, row.kind, result["error"])
    with client.meta.write() as conn:
        conn.execute(
            sa.update(alert_actions)
            .where(
                alert_actions.c.event_id == row.event_id,
                alert_actions.c.position == row.position,
            )
            .values(
                state=state,
                attempts=attempts,
                next_at=next_at,
                claimed_at=None,
                result=orjson.dumps(result).decode(),
                updated_at=now_millis(),
            )
        )
    return 1 if state in ("done", "failed") else 0


def _payload(row: Any) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "deployment": row.deployment,
        "rule": row.rule,
        "subject": row.subject,
        "metric": row.metric,
        "feature": row.feature,
        "version": row.version,
        "arm": row.arm,
        "severity": row.severity,
        "status": row.status,
        "value": row.value,
        "threshold": row.threshold,
        "message": row.message,
        "started_at": row.started_at,
    }


def _log(spec: Mapping[str, Any], row: Any, client: TrackingClient) -> dict[str, Any]:
    log.warning("ALERT [%s] %s: %s", row.severity, row.deployment, row.message)
    return {"logged": True}


def _webhook(spec: Mapping[str, Any], row: Any, client: TrackingClient) -> dict[str, Any]:
    import httpx

    try:
        response = httpx.post(
            spec["url"],
            content=orjson.dumps(_payload(row)),
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": f"{row.event_id}-{row.position}",
                "User-Agent": "kiln-monitor",
            },
            timeout=spec.get("timeout_s", 5.0),
        )
    except httpx.HTTPError as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    if 200 <= response.status_code < 300:
        return {"status": response.status_code}
    text = response.text[:200]
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise _Retry(f"HTTP {response.status_code}: {text}")
    raise InvalidInput(f"the receiver refused the alert: HTTP {response.status_code}: {text}")


def _rollback(spec: Mapping[str, Any], row: Any, client: TrackingClient) -> dict[str, Any]:
    from kiln.serving import rollouts

    target = spec["deployment"]
    try:
        done = rollouts.rollback(
            target,
            reason=f"alert {row.event_id}: {row.message}",
            detail={"alert": row.event_id, "rule": row.rule, "value": row.value},
            actor=ACTOR,
            client=client,
        )
    except Conflict as exc:  # it serves its champion alone already
        return {"deployment": target, "skipped": str(exc)}
    except NotFound:
        raise
    except KilnError as exc:
        raise _Retry(str(exc)) from None
    return {"deployment": target, "revision": None if done is None else done.revision}


def _retrain(spec: Mapping[str, Any], row: Any, client: TrackingClient) -> dict[str, Any]:
    from kiln.core import get_settings
    from kiln.flows import start_flow

    logfile = get_settings().home / "monitor" / f"{row.deployment}-retrain.log"
    started = start_flow(
        spec["flow"],
        spec.get("params") or {},
        executor=spec.get("executor", "processes"),
        workdir=spec.get("workdir"),
        log=logfile,
        client=client,
    )
    return {"flow": spec["flow"], "pid": started.pid, "log": str(started.log)}


_RUNNERS: dict[str, Any] = {
    "log": _log,
    "webhook": _webhook,
    "rollback": _rollback,
    "retrain": _retrain,
}
