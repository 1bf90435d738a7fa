"""How deployments are stored and changed: one compare-and-set write per change.

Private to :mod:`kiln.serving`; the verbs in :mod:`kiln.serving.deployments` and
:mod:`kiln.serving.rollouts` are the public way in.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.core import Conflict, InvalidInput, NotFound, close_matches, now_millis
from kiln.registry import ModelVersion, models
from kiln.registry.aliases import set_alias_in
from kiln.registry.usage import use_in
from kiln.serving import _tables as t
from kiln.serving.specs import Deployment, check_name
from kiln.tracking import TrackingClient, default_client
from kiln.tracking.lineage import Edge, record_edges

_list = list
RETRIES = 8

# -- helpers ------------------------------------------------------------------------


def client_of(client: TrackingClient | None) -> TrackingClient:
    return client or default_client()


def actor_of(actor: str | None) -> str:
    if actor is not None:
        who = text_of(actor, "actor")
        if not who or len(who) > 256:
            raise InvalidInput(f"actor must be 1-256 characters; got {actor!r}")
        return who
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        return "unknown"


def text_of(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidInput(f"{what} must be a string without NUL characters; got {value!r}")
    return value


def detail_of(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(f"detail must be a dict with string keys; got {value!r}")
    return json.loads(json.dumps(dict(value), default=str))  # type: ignore[no-any-return]


def spec_value(kind: type[Any], param: str, value: Any) -> Any:
    """A spec value from an instance or a dict of its keyword arguments."""
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        try:
            return kind(**value)
        except TypeError as exc:
            raise InvalidInput(f"The {param!r} parameter: {exc}") from None
    raise InvalidInput(
        f"The {param!r} parameter must be a kiln.deployments.{kind.__name__} or a dict of its "
        f"fields. Got {value!r}."
    )


def spec_json(deployment: Deployment) -> str:
    data = deployment.to_dict()
    del data["name"], data["revision"]
    return json.dumps(data, sort_keys=True)


def from_row(name: str, spec: str, revision: int) -> Deployment:
    data = json.loads(spec)
    data["name"] = name
    data["revision"] = int(revision)
    return Deployment.from_dict(data)


def deployment_names(conn: Connection) -> _list[str]:
    d = t.deployments.c
    return _list(conn.execute(sa.select(d.name).order_by(d.name)).scalars())


def not_found(conn: Connection, name: str) -> NotFound:
    return NotFound(f"no deployment named {name!r}{close_matches(name, deployment_names(conn))}")


def read(conn: Connection, name: str) -> Deployment:
    d = t.deployments.c
    row = conn.execute(sa.select(d.spec, d.revision).where(d.name == name)).first()
    if row is None:
        raise not_found(conn, name)
    return from_row(name, row.spec, row.revision)


def locked_revision(conn: Connection, name: str) -> int | None:
    """The stored revision, with the row locked until commit on PostgreSQL."""
    d = t.deployments.c
    found = conn.execute(
        sa.select(d.revision).where(d.name == name).with_for_update()
    ).scalar_one_or_none()
    return int(found) if found is not None else None


def record_event(
    conn: Connection,
    *,
    name: str,
    revision: int,
    kind: str,
    detail: Mapping[str, Any],
    reason: str,
    actor: str,
    at: int,
) -> None:
    conn.execute(
        t.deployment_events.insert().values(
            name=name,
            revision=revision,
            kind=kind,
            detail=json.dumps(detail, sort_keys=True, default=str),
            reason=reason,
            actor=actor,
            at=at,
        )
    )


def served_edge(mv: ModelVersion, name: str, role: str, revision: int) -> Edge:
    """The lineage edge of a version taking traffic on a deployment."""
    props = {"role": role, "revision": revision, "ref": mv.ref}
    return ("model_version", mv.id, "deployed_to", "deployment", name, props)


def hold_models(conn: Connection, deployment: Deployment) -> None:
    """Record the models ``deployment`` uses (champion, challenger, fallback) in ``conn``.

    Called in every write of a deployment, before anything else in the transaction that
    touches the registry (the lock order a registry delete takes), so no model, version or
    alias it uses can be deleted while it does, and a concurrent delete that won makes
    this write fail with NotFound instead of leaving the deployment on nothing.
    """
    refs = [deployment.model]
    if deployment.traffic.challenger is not None:
        refs.append(deployment.traffic.challenger)
    if deployment.fallback is not None and deployment.fallback.model is not None:
        refs.append(deployment.fallback.model)
    use_in(conn, holder(deployment.name), refs)


def holder(name: str) -> str:
    """How deployment ``name`` is named among the users of a model."""
    return f"deployment:{name}"


def resolve_ref(ref: str, what: str, client: TrackingClient) -> ModelVersion:
    try:
        return models.resolve(ref, client=client)
    except NotFound as exc:
        raise NotFound(f"{what} {ref!r} does not resolve: {exc}") from None


# -- changes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    deployment: Deployment
    kind: str
    detail: Mapping[str, Any]
    edges: tuple[Edge, ...] = ()
    alias: tuple[str, str, int] | None = None  # (model, alias, version) to move


def apply_strict(
    name: str,
    plan: Callable[[Deployment], Change | None],
    *,
    reason: str | None,
    actor: str | None,
    expected_revision: int | None,
    client: TrackingClient | None,
) -> Deployment:
    """:func:`apply_change` for verbs where a lost race is an error, not "nothing done"."""
    done = apply_change(
        name, plan, reason=reason, actor=actor, expected_revision=expected_revision, client=client
    )
    if done is None:
        raise Conflict(
            f"deployment {name!r} is no longer at revision {expected_revision}; read it again"
        )
    return done


def apply_change(
    name: str,
    plan: Callable[[Deployment], Change | None],
    *,
    reason: str | None,
    actor: str | None,
    expected_revision: int | None,
    client: TrackingClient | None,
) -> Deployment | None:
    """Apply ``plan(current)`` as one compare-and-set write; None if ``expected_revision``
    no longer matches. ``plan`` returning None means "nothing to change"."""
    check_name(name)
    if expected_revision is not None and (
        isinstance(expected_revision, bool) or not isinstance(expected_revision, int)
    ):
        raise InvalidInput(f"expected_revision must be an integer; got {expected_revision!r}")
    why, who = text_of(reason, "reason"), actor_of(actor)
    cl = client_of(client)
    for _ in range(RETRIES):
        with cl.meta.read() as conn:
            current = read(conn, name)
        if expected_revision is not None and current.revision != expected_revision:
            return None
        change = plan(current)
        if change is None:
            return current
        with cl.meta.write() as conn:
            revision = locked_revision(conn, name)
            if revision is None:
                raise not_found(conn, name)
            if revision != current.revision:
                if expected_revision is not None:
                    return None
                continue  # changed since we read it: plan again on the newer spec
            new = change.deployment.evolve(revision=revision + 1)
            now = now_millis()
            hold_models(conn, new)
            if change.alias is not None:
                model, alias, version = change.alias
                set_alias_in(conn, model, alias, version, reason=why or None, actor=who)
            d = t.deployments.c
            done = conn.execute(
                t.deployments.update()
                .where(d.name == name, d.revision == revision)
                .values(spec=spec_json(new), revision=new.revision, updated_at=now)
            )
            if done.rowcount != 1:  # pragma: no cover - the row lock rules this out
                raise Conflict(f"deployment {name!r} changed during the update; try again")
            record_event(
                conn,
                name=name,
                revision=new.revision,
                kind=change.kind,
                detail=change.detail,
                reason=why,
                actor=who,
                at=now,
            )
            if change.edges:
                record_edges(conn, change.edges)
        return new
    raise Conflict(f"deployment {name!r} kept changing during this call; try again")
