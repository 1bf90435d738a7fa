"""Evaluating a monitor's rules, and the alert events they open and resolve.

:func:`evaluate` measures one window, then in one write transaction counts each
condition's breaches in a row (a condition is a rule applied to one feature, version and
arm), opens an event for each that has breached for its rule's ``for_windows``, and
resolves the open events whose condition cleared or is no longer served. An event is
opened once: while it fires, later evaluations only update it (``last_seen_at``, the
latest value), and the table's unique ``open_key`` refuses a second open event for the
same condition even when two monitors evaluate at once. The event's actions are written
in the same transaction as pending rows, then run (:mod:`kiln.monitoring._actions`), so
an acknowledged alert never loses its actions to a crash: whoever evaluates next runs
what is still pending.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from kiln.core import InvalidInput, NotFound, new_id, now_millis
from kiln.features.definitions import parse_duration
from kiln.monitoring._measure import Measurement, Measurements, measure
from kiln.monitoring._tables import alert_actions, alert_events, monitor_conditions, monitor_values
from kiln.monitoring.rules import ARM_SIDES, Monitor, Rule
from kiln.tracking import TrackingClient, default_client

__all__ = [
    "ActionState",
    "AlertEvent",
    "Evaluation",
    "Observation",
    "evaluate",
    "events",
    "get_event",
]

log = logging.getLogger("kiln.monitoring")


@dataclass(frozen=True)
class Observation:
    """A rule applied to one measured value in this evaluation."""

    rule: str
    metric: str
    feature: str | None
    version: int | None
    arm: str | None
    value: float | None
    threshold: float | None
    breached: bool
    breaches: int  # evaluations in a row that breached, this one included

    @property
    def subject(self) -> str:
        return _subject(self.version, self.arm, self.feature)


@dataclass(frozen=True)
class ActionState:
    """One action of an event: ``pending`` (to run or retry), ``running``, ``done`` or
    ``failed`` (given up), with what it did or its last error in ``result``."""

    position: int
    kind: str
    state: str
    attempts: int
    result: dict[str, Any] | None


@dataclass(frozen=True)
class AlertEvent:
    """A firing (or resolved) alert."""

    id: str
    deployment: str
    rule: str
    subject: str
    metric: str
    feature: str | None
    version: int | None
    arm: str | None
    severity: str
    status: str  # firing, resolved
    value: float | None
    threshold: float | None
    message: str
    started_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    actions: tuple[ActionState, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "deployment": self.deployment,
            "rule": self.rule,
            "subject": self.subject,
            "metric": self.metric,
            "feature": self.feature,
            "version": self.version,
            "arm": self.arm,
            "severity": self.severity,
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
            "started_at": self.started_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "actions": [
                {"kind": a.kind, "state": a.state, "attempts": a.attempts, "result": a.result}
                for a in self.actions
            ],
        }


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: every observation, the events it opened and resolved, the events
    firing after it, and the rules it could not judge (and why)."""

    deployment: str
    since: datetime
    until: datetime
    observations: tuple[Observation, ...]
    opened: tuple[AlertEvent, ...]
    resolved: tuple[AlertEvent, ...]
    firing: tuple[AlertEvent, ...]
    problems: dict[str, list[str]] = field(default_factory=dict)  # rule -> reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "observations": [{**o.__dict__, "subject": o.subject} for o in self.observations],
            "opened": [e.to_dict() for e in self.opened],
            "resolved": [e.to_dict() for e in self.resolved],
            "firing": [e.to_dict() for e in self.firing],
            "problems": self.problems,
        }


def evaluate(
    monitor: Monitor,
    *,
    now: datetime | None = None,
    run_actions: bool = True,
    client: TrackingClient | None = None,
) -> Evaluation:
    """Judge ``monitor``'s rules on the window ending ``now`` (default: the clock), record
    what changed, and run the actions of the events opened (and any still pending)."""
    from kiln.serving import deployments

    if not isinstance(monitor, Monitor):
        raise InvalidInput(f"evaluate takes a Monitor; got {monitor!r}")
    client = client or default_client()
    deployments.get(monitor.deployment, client=client)  # NotFound names it
    end = _aware(now) if now is not None else datetime.now(UTC)
    start = end - parse_duration(monitor.window, owner="monitor", param="window")
    measured = measure(monitor, start, end)
    at = int(end.timestamp() * 1000)
    observations, problems, judged = _observe(monitor, measured)
    for attempt in (1, 2):
        try:
            opened, resolved, seen = _record(monitor, observations, judged, at, client)
            break
        except sa.exc.IntegrityError:
            # Another evaluator opened one of these events first: its row is there now.
            if attempt == 2:
                raise
    counted = tuple(
        o if (o.rule, o.subject) not in seen else _with_breaches(o, seen[(o.rule, o.subject)])
        for o in observations
    )
    for event in opened:
        log.info("alert %s: %s", event.id, event.message)
    for event in resolved:
        log.info("alert %s resolved: %s", event.id, event.message)
    if run_actions:
        from kiln.monitoring._actions import run_pending

        run_pending(deployment=monitor.deployment, client=client)
    ids = [e.id for e in opened]
    opened_now = tuple(get_event(i, client=client) for i in ids)
    firing = tuple(events(monitor.deployment, status="firing", client=client))
    return Evaluation(
        deployment=monitor.deployment,
        since=start,
        until=end,
        observations=counted,
        opened=opened_now,
        resolved=tuple(resolved),
        firing=firing,
        problems=problems,
    )


def events(
    deployment: str | None = None,
    *,
    status: str | None = None,
    limit: int = 100,
    client: TrackingClient | None = None,
) -> list[AlertEvent]:
    """Alert events, newest first: of one deployment, and ``firing`` or ``resolved`` ones."""
    if status is not None and status not in ("firing", "resolved"):
        raise InvalidInput(f"status must be 'firing' or 'resolved'; got {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be an integer >= 1; got {limit!r}")
    client = client or default_client()
    query = sa.select(alert_events)
    if deployment is not None:
        query = query.where(alert_events.c.deployment == deployment)
    if status is not None:
        query = query.where(alert_events.c.status == status)
    query = query.order_by(alert_events.c.started_at.desc(), alert_events.c.id.desc()).limit(limit)
    with client.meta.read() as conn:
        rows = conn.execute(query).all()
        actions = _actions_of(conn, [r.id for r in rows])
    return [_event(r, actions.get(r.id, ())) for r in rows]


def get_event(event_id: str, *, client: TrackingClient | None = None) -> AlertEvent:
    client = client or default_client()
    with client.meta.read() as conn:
        row = conn.execute(sa.select(alert_events).where(alert_events.c.id == event_id)).first()
        if row is None:
            raise NotFound(f"no alert event {event_id!r}")
        actions = _actions_of(conn, [event_id])
    return _event(row, actions.get(event_id, ()))


# -- judging ---------------------------------------------------------------------------------


def _observe(
    monitor: Monitor, measured: Measurements
) -> tuple[list[Observation], dict[str, list[str]], set[str]]:
    """Each rule against the values it matches; the rules that could be judged."""
    observations = []
    problems: dict[str, list[str]] = {}
    judged: set[str] = set()
    for rule in monitor.rules:
        assert rule.name is not None
        reasons = measured.problems.get(rule.metric)
        matched = [m for m in measured.values if _matches(rule, m)]
        if reasons:
            problems[rule.name] = list(reasons)
        else:
            judged.add(rule.name)
        if rule.feature not in (None, "*") and not matched and not reasons:
            problems[rule.name] = [f"no feature {rule.feature!r} among the served inputs"]
        for m in matched:
            observations.append(
                Observation(
                    rule=rule.name,
                    metric=rule.metric,
                    feature=m.feature,
                    version=m.version,
                    arm=m.arm,
                    value=m.value,
                    threshold=rule.threshold,
                    breached=rule.breached(m.value, m.drifted),
                    breaches=0,
                )
            )
    return observations, problems, judged


def _matches(rule: Rule, m: Measurement) -> bool:
    if m.metric != rule.metric:
        return False
    if rule.arm is not None and m.arm not in ARM_SIDES[rule.arm]:
        return False
    if rule.feature == "*":
        return m.feature is not None
    return m.feature == rule.feature


def _subject(version: int | None, arm: str | None, feature: str | None) -> str:
    parts = []
    if version is not None:
        parts.append(f"version {version}")
    if arm is not None:
        parts.append(arm)
    if feature is not None:
        parts.append(f"feature {feature}")
    return ", ".join(parts) or "deployment"


def _key(deployment: str, rule: str, subject: str) -> str:
    return hashlib.sha256(f"{deployment}\x1f{rule}\x1f{subject}".encode()).hexdigest()


def _with_breaches(o: Observation, breaches: int) -> Observation:
    return Observation(**{**o.__dict__, "breaches": breaches})


def _message(rule: Rule, o: Observation, breaches: int) -> str:
    value = "n/a" if o.value is None else f"{o.value:.4g}"
    if rule.metric == "drift":
        test = f"drifted (statistic {value})"
    elif rule.above is not None:
        test = f"{value} > {rule.above:g}"
    else:
        test = f"{value} < {rule.below:g}"
    what = rule.metric + (f" of {o.feature}" if o.feature is not None else "")
    where = _subject(o.version, o.arm, None)
    windows = f" for {breaches} evaluations" if breaches > 1 else ""
    return f"{rule.name}: {what} {test} ({where}){windows}"


# -- recording -------------------------------------------------------------------------------


def _record(
    monitor: Monitor,
    observations: Sequence[Observation],
    judged: set[str],
    at: int,
    client: TrackingClient,
) -> tuple[list[AlertEvent], list[AlertEvent], dict[tuple[str, str], int]]:
    """One transaction: values, condition counts, events opened, updated and resolved."""
    deployment = monitor.deployment
    rules = {r.name: r for r in monitor.rules}
    opened: list[AlertEvent] = []
    resolved: list[AlertEvent] = []
    seen: dict[tuple[str, str], int] = {}
    with client.meta.write() as conn:
        if observations:
            conn.execute(
                sa.insert(monitor_values),
                [
                    {
                        "deployment": deployment,
                        "evaluated_at": at,
                        "metric": o.metric,
                        "version": o.version,
                        "arm": o.arm,
                        "feature": o.feature,
                        "value": o.value,
                    }
                    for o in observations
                ],
            )
        known = {
            r.key: r
            for r in conn.execute(
                sa.select(monitor_conditions).where(monitor_conditions.c.deployment == deployment)
            )
        }
        open_events = {
            r.open_key: r
            for r in conn.execute(
                sa.select(alert_events).where(
                    alert_events.c.deployment == deployment, alert_events.c.status == "firing"
                )
            )
        }
        observed: set[str] = set()
        for o in observations:
            rule = rules[o.rule]
            key = _key(deployment, o.rule, o.subject)
            observed.add(key)
            before = known.get(key)
            breaches = (before.breaches if before is not None else 0) + 1 if o.breached else 0
            seen[(o.rule, o.subject)] = breaches
            values = {"breaches": breaches, "value": o.value, "evaluated_at": at}
            if before is None:
                conn.execute(
                    sa.insert(monitor_conditions).values(
                        key=key, deployment=deployment, rule=o.rule, subject=o.subject, **values
                    )
                )
            else:
                conn.execute(
                    sa.update(monitor_conditions)
                    .where(monitor_conditions.c.key == key)
                    .values(**values)
                )
            event = open_events.get(key)
            message = _message(rule, o, breaches)
            if event is not None and o.breached:
                conn.execute(
                    sa.update(alert_events)
                    .where(alert_events.c.id == event.id)
                    .values(last_seen_at=at, value=o.value)
                )
            elif event is not None:
                resolved.append(_resolve(conn, event, at, f"{o.rule}: cleared ({o.subject})"))
            elif o.breached and breaches >= rule.for_windows:
                opened.append(_open(conn, monitor, rule, o, key, message, at))
        # An open event whose condition this evaluation judged but no longer saw (the
        # version or arm serves nothing now) has cleared too.
        for key, event in open_events.items():
            if key not in observed and event.rule in judged and event.rule in rules:
                resolved.append(
                    _resolve(conn, event, at, f"{event.rule}: no longer served ({event.subject})")
                )
    return opened, resolved, seen


def _open(
    conn: Any, monitor: Monitor, rule: Rule, o: Observation, key: str, message: str, at: int
) -> AlertEvent:
    event_id = new_id()
    row = {
        "id": event_id,
        "open_key": key,
        "deployment": monitor.deployment,
        "rule": o.rule,
        "subject": o.subject,
        "metric": o.metric,
        "feature": o.feature,
        "version": o.version,
        "arm": o.arm,
        "severity": rule.severity,
        "status": "firing",
        "value": o.value,
        "threshold": o.threshold,
        "message": message,
        "started_at": at,
        "last_seen_at": at,
        "resolved_at": None,
    }
    conn.execute(sa.insert(alert_events).values(**row))
    actions = [
        {
            "event_id": event_id,
            "position": i,
            "kind": action.kind,  # type: ignore[union-attr]
            "spec": orjson.dumps(
                {**action.to_dict(), "deployment": _target(action, monitor)}  # type: ignore[union-attr]
            ).decode(),
            "state": "pending",
            "attempts": 0,
            "next_at": 0,
            "claimed_at": None,
            "result": None,
            "updated_at": now_millis(),
        }
        for i, action in enumerate(rule.actions)
    ]
    if actions:
        conn.execute(sa.insert(alert_actions), actions)
    return _event(_Plain(row), ())


def _target(action: Any, monitor: Monitor) -> str:
    own = getattr(action, "deployment", None)
    return str(own) if own else monitor.deployment


def _resolve(conn: Any, event: Any, at: int, message: str) -> AlertEvent:
    conn.execute(
        sa.update(alert_events)
        .where(alert_events.c.id == event.id, alert_events.c.status == "firing")
        .values(status="resolved", open_key=None, resolved_at=at)
    )
    row = {**event._asdict(), "status": "resolved", "open_key": None, "resolved_at": at}
    row["message"] = f"{event.message} / {message}"
    return _event(_Plain(row), ())


class _Plain:
    """A dict read as a row (attribute access), for events built from values in hand."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _actions_of(conn: Any, ids: Iterable[str]) -> dict[str, tuple[ActionState, ...]]:
    ids = list(ids)
    if not ids:
        return {}
    rows = conn.execute(
        sa.select(alert_actions)
        .where(alert_actions.c.event_id.in_(ids))
        .order_by(alert_actions.c.event_id, alert_actions.c.position)
    ).all()
    out: dict[str, list[ActionState]] = {}
    for r in rows:
        out.setdefault(r.event_id, []).append(
            ActionState(
                position=r.position,
                kind=r.kind,
                state=r.state,
                attempts=r.attempts,
                result=orjson.loads(r.result) if r.result else None,
            )
        )
    return {k: tuple(v) for k, v in out.items()}


def _event(row: Any, actions: tuple[ActionState, ...]) -> AlertEvent:
    return AlertEvent(
        id=row.id,
        deployment=row.deployment,
        rule=row.rule,
        subject=row.subject,
        metric=row.metric,
        feature=row.feature,
        version=row.version,
        arm=row.arm,
        severity=row.severity,
        status=row.status,
        value=row.value,
        threshold=row.threshold,
        message=row.message,
        started_at=_time(row.started_at),
        last_seen_at=_time(row.last_seen_at),
        resolved_at=_time(row.resolved_at) if row.resolved_at is not None else None,
        actions=actions,
    )


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _aware(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(f"now must be a datetime; got {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
