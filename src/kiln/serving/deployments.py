"""``kiln.deployments``: stored deployments and their rollouts, one verb per change.

::

    kiln.deployments.create("fraud-api", model="fraud@champion", features=["user_stats:f0"])
    kiln.deployments.canary("fraud-api", model="fraud@challenger", percent=10,
                            guard=kiln.deployments.Guard(max_p95_ms=20, auto_promote=True))
    kiln.deployments.promote("fraud-api", reason="canary passed")   # moves fraud@champion
    kiln.deployments.history("fraud-api")
    kiln.deployments.activity("fraud-api", window="1h")  # what it served, per arm

Every change is one write transaction: the new spec, its revision (one more than
before) and an event in the deployment's history, plus the alias move of a promotion
and the lineage edge from the model version that takes traffic. Changes are
compare-and-set on the revision, so two server workers judging the same guard cannot
both act: ``rollback(..., expected_revision=r)`` returns ``None`` when someone else
changed the deployment first. Serving workers poll :func:`revisions` (one small SELECT)
to notice changes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

from kiln.core import Conflict, InvalidInput, NotFound, from_millis, now_millis
from kiln.registry import ModelVersion
from kiln.registry.usage import release_in
from kiln.serving import _tables as t
from kiln.serving._writes import (
    Change,
    actor_of,
    apply_strict,
    client_of,
    from_row,
    hold_models,
    holder,
    locked_revision,
    not_found,
    read,
    record_event,
    resolve_ref,
    served_edge,
    spec_json,
    spec_value,
    text_of,
)
from kiln.serving.activity import Activity, ArmActivity, activity
from kiln.serving.compatibility import InputPlan, check_compatible, input_plan, request_fields
from kiln.serving.rollouts import ab, blue_green, canary, promote, rollback, shadow, switch_back
from kiln.serving.servers import ServerCounts, ServerInfo, server_counts, servers
from kiln.serving.specs import Batching, Breaker, Deployment, Fallback, Guard, Traffic, check_name
from kiln.tracking import TrackingClient
from kiln.tracking.lineage import Edge, record_edges

__all__ = [
    "EVENT_KINDS",
    "Activity",
    "ArmActivity",
    "Batching",
    "Breaker",
    "Deployment",
    "DeploymentEvent",
    "Fallback",
    "Guard",
    "InputPlan",
    "ServerCounts",
    "ServerInfo",
    "Traffic",
    "ab",
    "activity",
    "blue_green",
    "canary",
    "check_compatible",
    "create",
    "delete",
    "get",
    "history",
    "input_plan",
    "list",
    "promote",
    "request_fields",
    "revisions",
    "rollback",
    "server_counts",
    "servers",
    "shadow",
    "switch_back",
    "update",
    "watch",
]

_list = list

EVENT_KINDS = (
    "created",
    "updated",
    "canary_started",
    "ab_started",
    "shadow_started",
    "switched",
    "switched_back",
    "promoted",
    "rolled_back",
    "guard_breach",
    "deleted",
)
_UPDATABLE = (
    "model",
    "features",
    "service",
    "batching",
    "timeout_ms",
    "fallback",
    "breaker",
    "max_body_bytes",
    "tags",
    "request",
)


@dataclass(frozen=True, kw_only=True)
class DeploymentEvent:
    """One change in a deployment's history: what (``kind``), to which revision, and why."""

    id: int
    name: str
    revision: int
    kind: str
    detail: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    reason: str
    actor: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "revision": self.revision,
            "kind": self.kind,
            "detail": _thaw(self.detail),
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at.isoformat(),
        }


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | _list):
        return [_thaw(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, _list):
        return tuple(_freeze(v) for v in value)
    return value


# -- reads --------------------------------------------------------------------------------


def get(name: str, *, client: TrackingClient | None = None) -> Deployment:
    """The stored deployment ``name`` (NotFound naming the close matches)."""
    check_name(name)
    with client_of(client).meta.read() as conn:
        return read(conn, name)


def list(*, client: TrackingClient | None = None) -> _list[Deployment]:
    """Every stored deployment, by name."""
    d = t.deployments.c
    with client_of(client).meta.read() as conn:
        rows = conn.execute(sa.select(d.name, d.spec, d.revision).order_by(d.name)).all()
    return [from_row(r.name, r.spec, r.revision) for r in rows]


def revisions(
    names: Iterable[str] | None = None, *, client: TrackingClient | None = None
) -> dict[str, int]:
    """``{name: revision}`` of every deployment (or of ``names``; deleted ones are absent).

    One small SELECT on a raw cursor: what a serving worker polls (every half second) to
    notice a change, before reading the deployments whose revision moved with :func:`get`.
    """
    meta = client_of(client).meta
    with meta.read_cursor() as cursor:
        cursor.execute("SELECT name, revision FROM kiln_deployments")
        found = {str(n): int(r) for n, r in cursor.fetchall()}
    if names is None:
        return found
    return {n: found[n] for n in names if n in found}


def watch(
    names: Iterable[str] | None = None,
    *,
    interval_s: float = 0.5,
    stop: threading.Event | None = None,
    client: TrackingClient | None = None,
) -> Iterator[dict[str, Deployment | None]]:
    """Yield ``{name: deployment}`` now, then each time deployments change, until ``stop``.

    The first value holds every watched deployment; later values only those whose
    revision moved (``None`` for one deleted). Polls :func:`revisions` every ``interval_s``.
    """
    if isinstance(interval_s, bool) or not isinstance(interval_s, int | float) or interval_s <= 0:
        raise InvalidInput(f"interval_s must be a positive number of seconds; got {interval_s!r}")
    wanted = None if names is None else [check_name(n) for n in names]
    stop = stop or threading.Event()
    cl = client_of(client)
    seen: dict[str, int] = {}
    first = True
    while not stop.is_set():
        now = revisions(wanted, client=cl)
        changed: dict[str, Deployment | None] = {}
        for name in sorted(set(now) | set(seen) | set(wanted if first and wanted else ())):
            if name in now and seen.get(name) == now[name]:
                continue
            if name not in now and name in seen:
                changed[name] = None
                continue
            try:
                changed[name] = get(name, client=cl)
            except NotFound:
                changed[name] = None
        for name, deployment in changed.items():
            if deployment is None:
                seen.pop(name, None)
            else:
                seen[name] = deployment.revision
        if changed or first:
            yield changed
        first = False
        stop.wait(interval_s)


def history(name: str, *, client: TrackingClient | None = None) -> _list[DeploymentEvent]:
    """Every change of deployment ``name``, oldest first (kept after it is deleted)."""
    check_name(name)
    e = t.deployment_events.c
    with client_of(client).meta.read() as conn:
        rows = conn.execute(
            sa.select(t.deployment_events).where(e.name == name).order_by(e.id)
        ).all()
        if not rows:
            raise not_found(conn, name)
    return [
        DeploymentEvent(
            id=int(r.id),
            name=r.name,
            revision=int(r.revision),
            kind=r.kind,
            detail=_freeze(json.loads(r.detail)),
            reason=r.reason,
            actor=r.actor,
            at=from_millis(r.at),
        )
        for r in rows
    ]


# -- create and delete --------------------------------------------------------------------


def _champion_request(
    deployment: Deployment, mv: ModelVersion, client: TrackingClient
) -> Deployment:
    """``deployment`` checked against ``mv``, its request schema fixed if it had none."""
    plan = check_compatible(deployment, mv, client=client)
    if deployment.request is None and plan.input_kind == "columns":
        deployment = deployment.evolve(request={c.name: c.dtype for c in plan.request if c.name})
    return deployment


def _check_fallback(deployment: Deployment, client: TrackingClient) -> ModelVersion | None:
    if deployment.fallback is None or deployment.fallback.model is None:
        return None
    mv = resolve_ref(deployment.fallback.model, "fallback model", client)
    check_compatible(deployment, mv, client=client)
    return mv


def create(
    name: str,
    *,
    model: str,
    features: Sequence[str] | None = None,
    service: str | None = None,
    batching: Batching | Mapping[str, Any] | None = None,
    timeout_ms: float = 1000.0,
    fallback: Fallback | Mapping[str, Any] | None = None,
    breaker: Breaker | Mapping[str, Any] | None = None,
    max_body_bytes: int = 8 * 1024 * 1024,
    tags: Mapping[str, str] | None = None,
    request: Mapping[str, str] | None = None,
    reason: str | None = None,
    actor: str | None = None,
    client: TrackingClient | None = None,
) -> Deployment:
    """Store a new deployment of ``model`` (a reference such as ``fraud@champion``).

    The model must resolve and its signature must be served by ``features`` (or the
    feature ``service``) plus request fields; ``request`` (field -> dtype) fixes what
    clients send and defaults to what the model needs beyond the features. Conflict if
    a deployment of that name exists.
    """
    cl = client_of(client)
    deployment = Deployment(
        name=name,
        model=model,
        features=tuple(features) if features is not None else (),
        service=service,
        batching=spec_value(Batching, "batching", batching) or Batching(),
        timeout_ms=timeout_ms,
        fallback=spec_value(Fallback, "fallback", fallback),
        breaker=spec_value(Breaker, "breaker", breaker) or Breaker(),
        max_body_bytes=max_body_bytes,
        tags=dict(tags or {}),
        request=request,
    )
    why, who = text_of(reason, "reason"), actor_of(actor)
    mv = resolve_ref(deployment.model, "model", cl)
    deployment = _champion_request(deployment, mv, cl)
    _check_fallback(deployment, cl)
    e = t.deployment_events.c
    now = now_millis()
    try:
        with cl.meta.write() as conn:
            if locked_revision(conn, name) is not None:
                raise Conflict(
                    f"deployment {name!r} already exists; update it (kiln.deployments.update, "
                    "kiln deploy --update) or delete it first"
                )
            # Revisions keep counting across a delete and re-create, so a worker that saw
            # the old deployment notices the new one.
            last = conn.execute(sa.select(sa.func.max(e.revision)).where(e.name == name))
            revision = int(last.scalar() or 0) + 1
            deployment = deployment.evolve(revision=revision)
            hold_models(conn, deployment)
            conn.execute(
                t.deployments.insert().values(
                    name=name,
                    spec=spec_json(deployment),
                    revision=revision,
                    created_at=now,
                    updated_at=now,
                    created_by=who,
                )
            )
            record_event(
                conn,
                name=name,
                revision=revision,
                kind="created",
                detail={"model": deployment.model, "version": mv.ref},
                reason=why,
                actor=who,
                at=now,
            )
            record_edges(conn, [served_edge(mv, name, "champion", revision)])
    except sa.exc.IntegrityError:
        # Two creates raced on PostgreSQL; the other one won.
        raise Conflict(f"deployment {name!r} already exists") from None
    return deployment


def delete(
    name: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    client: TrackingClient | None = None,
) -> Deployment:
    """Remove deployment ``name`` (servers stop serving it); its history is kept."""
    check_name(name)
    why, who = text_of(reason, "reason"), actor_of(actor)
    with client_of(client).meta.write() as conn:
        revision = locked_revision(conn, name)
        if revision is None:
            raise not_found(conn, name)
        last = read(conn, name)
        conn.execute(t.deployments.delete().where(t.deployments.c.name == name))
        release_in(conn, holder(name))
        record_event(
            conn,
            name=name,
            revision=revision + 1,
            kind="deleted",
            detail={"model": last.model, "traffic": asdict(last.traffic)},
            reason=why,
            actor=who,
            at=now_millis(),
        )
    return last


def _differences(old: Deployment, new: Deployment) -> dict[str, Any]:
    a, b = old.to_dict(), new.to_dict()
    return {k: {"from": a[k], "to": b[k]} for k in a if k != "revision" and a[k] != b[k]}


def update(
    name: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
    **changes: Any,
) -> Deployment:
    """Change fields of a deployment: ``model``, ``features``, ``service``, ``batching``,
    ``timeout_ms``, ``fallback``, ``breaker``, ``max_body_bytes``, ``tags``, ``request``.

    Passing ``features`` clears ``service`` and the other way round. The champion (and
    any challenger and fallback model) is checked again when the model, features or
    request schema change. Traffic changes through the rollout verbs. With
    ``expected_revision`` the update is refused (Conflict) if the deployment moved on.
    """
    unknown = sorted(set(changes) - set(_UPDATABLE))
    if unknown:
        hint = (
            "; traffic changes through canary, ab, shadow, blue_green, promote and rollback"
            if "traffic" in unknown
            else ""
        )
        raise InvalidInput(
            f"update() cannot change {', '.join(repr(k) for k in unknown)}; it changes: "
            f"{', '.join(_UPDATABLE)}{hint}"
        )
    if not changes:
        raise InvalidInput(f"nothing to update; pass one of: {', '.join(_UPDATABLE)}")
    values = dict(changes)
    for key, kind in (("batching", Batching), ("breaker", Breaker)):
        if key in values:
            values[key] = spec_value(kind, key, values[key]) or kind()
    if "fallback" in values:
        values["fallback"] = spec_value(Fallback, "fallback", values["fallback"])
    if "features" in values:
        values["features"] = tuple(values["features"] or ())
        if values["features"] and "service" not in values:
            values["service"] = None
    if values.get("service") is not None and "features" not in values:
        values["features"] = ()
    if "tags" in values:
        values["tags"] = dict(values["tags"] or {})
    cl = client_of(client)

    def plan(current: Deployment) -> Change | None:
        new = current.evolve(**values)
        if new == current:
            return None
        edges: _list[Edge] = []
        checked = ("model", "features", "service", "request")
        if any(getattr(new, k) != getattr(current, k) for k in checked):
            mv = resolve_ref(new.model, "model", cl)
            check_compatible(new, mv, client=cl)
            if new.model != current.model:
                edges.append(served_edge(mv, name, "champion", current.revision + 1))
            if new.traffic.challenger is not None:
                challenger = resolve_ref(new.traffic.challenger, "challenger", cl)
                check_compatible(new, challenger, client=cl)
            _check_fallback(new, cl)
        elif new.fallback != current.fallback:
            _check_fallback(new, cl)
        return Change(new, "updated", {"changes": _differences(current, new)}, tuple(edges))

    return apply_strict(
        name, plan, reason=reason, actor=actor, expected_revision=expected_revision, client=cl
    )
