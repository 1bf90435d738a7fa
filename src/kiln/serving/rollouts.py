"""Rollouts: how traffic moves between a deployment's champion and a challenger.

- :func:`canary`: a percent of requests to the challenger (sticky per request key), judged
  by a :class:`~kiln.serving.specs.Guard`;
- :func:`ab`: a sticky split by key hash, the arm recorded with each prediction;
- :func:`shadow`: requests mirrored to the challenger, whose answers are only logged;
- :func:`blue_green` / :func:`switch_back`: all traffic to the challenger, and back;
- :func:`promote`: the challenger becomes the champion (moving the alias the deployment
  follows, when there is one);
- :func:`rollback`: the champion alone again; a guard's breach is recorded as such.

A challenger is checked against the deployment's features and request schema before it
takes traffic, and a ``sticky_key`` must name a field its requests carry (a request field
or an entity key): a key no request has would silently make the split random. Each verb
is one compare-and-set write (see :mod:`kiln.serving.deployments`);
with ``expected_revision`` a verb does nothing and returns None (``promote``,
``rollback``, ``switch_back``) or raises Conflict (the others) when the deployment has
moved on, so two server workers judging one guard act once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

from kiln.core import Conflict, InvalidInput, NotFound
from kiln.registry import models
from kiln.serving._writes import (
    Change,
    apply_change,
    apply_strict,
    client_of,
    detail_of,
    resolve_ref,
    served_edge,
    spec_value,
)
from kiln.serving.compatibility import InputPlan, check_compatible, input_plan
from kiln.serving.specs import Deployment, Guard, Policy, Traffic
from kiln.tracking import TrackingClient

__all__ = [
    "ab",
    "blue_green",
    "canary",
    "promote",
    "rollback",
    "shadow",
    "switch_back",
]


@dataclass(frozen=True)
class _Rollout:
    """What differs between the verbs that start a rollout."""

    policy: Policy
    kind: str  # the history event
    words: str  # how a message names it
    percent: str | None  # the allowed range, "(0, 100]" or "(0, 100)"; None: always 100


_ROLLOUTS = {
    r.policy: r
    for r in (
        _Rollout("canary", "canary_started", "a canary", "(0, 100]"),
        _Rollout("ab", "ab_started", "an A/B split", "(0, 100)"),
        _Rollout("shadow", "shadow_started", "a shadow", None),
        _Rollout("blue_green", "switched", "a blue-green switch", None),
    )
}


@dataclass(frozen=True)
class _Write:
    """Who writes, why and against which revision: what every verb hands to the store."""

    reason: str | None
    actor: str | None
    expected_revision: int | None
    client: TrackingClient | None

    def apply(self, name: str, plan: Callable[[Deployment], Change]) -> Deployment | None:
        """One compare-and-set write; None if ``expected_revision`` no longer matches."""
        return apply_change(name, plan, **vars(self))

    def apply_strict(self, name: str, plan: Callable[[Deployment], Change]) -> Deployment:
        """:meth:`apply` where a lost race is a Conflict."""
        return apply_strict(name, plan, **vars(self))


def _percent(rollout: _Rollout, value: Any) -> float:
    if rollout.percent is None:
        return 100.0
    inclusive = rollout.percent.endswith("]")
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if ok and (0 < value < 100 or (inclusive and value == 100)):
        return float(value)
    raise InvalidInput(
        f"The 'percent' parameter of {rollout.policy} must be a number in {rollout.percent}. "
        f"Got {value!r}."
    )


def _request_fields(current: Deployment, plans: Iterable[InputPlan]) -> set[str]:
    """Every field a request to ``current`` carries: its request schema and entity keys."""
    fields = set(current.request or ())
    for plan in plans:
        fields.update(plan.entity_keys)
        fields.update(c.name for c in plan.request if c.name is not None)
    return fields


def _check_sticky_key(current: Deployment, sticky_key: str, plans: list[InputPlan]) -> None:
    fields = _request_fields(current, plans)
    if sticky_key not in fields:
        carried = ", ".join(sorted(fields)) or "no named fields"
        raise InvalidInput(
            f"sticky_key {sticky_key!r} is not a field the requests of deployment "
            f"{current.name!r} carry (its request fields and entity keys: {carried}); "
            "name one of them"
        )


def _start(
    name: str,
    policy: Policy,
    *,
    model: str,
    percent: Any,
    sticky_key: str | None,
    guard: Guard | Mapping[str, Any] | None,
    write: _Write,
) -> Deployment:
    rollout = _ROLLOUTS[policy]
    cl = client_of(write.client)
    guard_value = spec_value(Guard, "guard", guard)
    traffic = Traffic(
        policy=policy,
        challenger=model,
        percent=_percent(rollout, percent),
        sticky_key=sticky_key,
        guard=guard_value,
    )

    def plan(current: Deployment) -> Change:
        now = current.traffic
        if now.policy not in ("single", policy):
            raise Conflict(
                f"deployment {name!r} is running {_ROLLOUTS[now.policy].words} of "
                f"{now.challenger!r}; promote it or roll it back first"
            )
        mv = resolve_ref(model, "challenger", cl)
        champion = None
        with suppress(NotFound):  # an unresolvable champion does not stop the challenger
            champion = models.resolve(current.model, client=cl)
        if champion is not None and champion.id == mv.id:
            raise InvalidInput(
                f"challenger {model!r} resolves to {mv.ref}, which is already the champion "
                f"of deployment {name!r} ({current.model!r})"
            )
        plans = [check_compatible(current, mv, client=cl)]
        if sticky_key is not None:
            if champion is not None:
                with suppress(InvalidInput, NotFound):
                    plans.append(input_plan(current, champion, client=cl))
            _check_sticky_key(current, sticky_key, plans)
        detail = {
            "challenger": model,
            "challenger_version": mv.ref,
            "champion": current.model,
            "champion_version": champion.ref if champion is not None else None,
            "percent": traffic.percent,
            "sticky_key": sticky_key,
            "guard": asdict(traffic.guard) if traffic.guard is not None else None,
            "previous": asdict(now),
        }
        edge = served_edge(mv, name, "challenger", current.revision + 1)
        return Change(current.evolve(traffic=traffic), rollout.kind, detail, (edge,))

    return write.apply_strict(name, plan)


def _in_rollout(current: Deployment, conflict: str) -> tuple[Traffic, str]:
    """The rollout ``current`` runs and its challenger; Conflict (``conflict`` says what
    cannot be done) when it serves its champion alone."""
    now = current.traffic
    if now.policy == "single" or now.challenger is None:
        raise Conflict(
            f"deployment {current.name!r} serves only its champion {current.model!r}; {conflict}"
        )
    return now, now.challenger


def canary(
    name: str,
    *,
    model: str,
    percent: float,
    sticky_key: str | None = None,
    guard: Guard | Mapping[str, Any] | None = None,
    reason: str | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
) -> Deployment:
    """Send ``percent`` of traffic (0 < percent <= 100) to challenger ``model``.

    Sticky per value of the request field ``sticky_key`` when given (a field the
    deployment's requests carry: its request schema or an entity key). ``guard`` judges
    the challenger and rolls back (or with ``auto_promote``, promotes) automatically.
    Calling it again during a canary changes the percent, challenger or guard.
    """
    write = _Write(reason, actor, expected_revision, client)
    return _start(
        name,
        "canary",
        model=model,
        percent=percent,
        sticky_key=sticky_key,
        guard=guard,
        write=write,
    )


def ab(
    name: str,
    *,
    model: str,
    sticky_key: str,
    percent: float = 50.0,
    reason: str | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
) -> Deployment:
    """Split traffic by hash of the request field ``sticky_key``: ``percent`` to ``model``."""
    if not isinstance(sticky_key, str) or not sticky_key:
        raise InvalidInput(
            f"An A/B split needs 'sticky_key', the request field whose hash picks the arm; "
            f"got {sticky_key!r}"
        )
    write = _Write(reason, actor, expected_revision, client)
    return _start(
        name, "ab", model=model, percent=percent, sticky_key=sticky_key, guard=None, write=write
    )


def shadow(
    name: str,
    *,
    model: str,
    reason: str | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
) -> Deployment:
    """Mirror every request to ``model`` off the response path; its answers are only logged."""
    write = _Write(reason, actor, expected_revision, client)
    return _start(
        name, "shadow", model=model, percent=100, sticky_key=None, guard=None, write=write
    )


def blue_green(
    name: str,
    *,
    model: str,
    guard: Guard | Mapping[str, Any] | None = None,
    reason: str | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
) -> Deployment:
    """Switch all traffic to ``model`` ("green"); :func:`switch_back` returns to "blue"."""
    write = _Write(reason, actor, expected_revision, client)
    return _start(
        name, "blue_green", model=model, percent=100, sticky_key=None, guard=guard, write=write
    )


def switch_back(
    name: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
) -> Deployment | None:
    """All traffic back on the champion ("blue") after :func:`blue_green`.

    The green version stays named, so ``blue_green`` can switch again. None if
    ``expected_revision`` no longer matches.
    """

    def plan(current: Deployment) -> Change:
        now = current.traffic
        if now.policy != "blue_green":
            raise Conflict(
                f"deployment {name!r} has no blue-green switch to switch back "
                f"(its traffic policy is {now.policy!r})"
            )
        if now.percent == 0:
            raise Conflict(f"deployment {name!r} is already switched back to {current.model!r}")
        traffic = Traffic(
            policy="blue_green", challenger=now.challenger, percent=0.0, guard=now.guard
        )
        detail = {"champion": current.model, "challenger": now.challenger}
        return Change(current.evolve(traffic=traffic), "switched_back", detail)

    return _Write(reason, actor, expected_revision, client).apply(name, plan)


def _alias_of(ref: str) -> tuple[str, str] | None:
    """``(model, alias)`` of a reference like ``fraud@champion``; None for versions, latest."""
    model, at, alias = ref.partition("@")
    if not at or alias == "latest":
        return None
    return model, alias


def promote(
    name: str,
    *,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
) -> Deployment | None:
    """The challenger becomes the champion; traffic goes back to one version.

    When the deployment follows an alias (``fraud@champion``) and the challenger is a
    version of the same model, the alias moves in the registry (one source of truth,
    in the same transaction); otherwise the deployment is pinned to the challenger's
    version (``fraud/3``). None if ``expected_revision`` no longer matches (another
    worker acted first).
    """
    extra = detail_of(detail)
    cl = client_of(client)

    def plan(current: Deployment) -> Change:
        now, challenger = _in_rollout(current, "there is no challenger to promote")
        mv = resolve_ref(challenger, "challenger", cl)
        previous = None
        with suppress(NotFound):
            previous = models.resolve(current.model, client=cl).ref
        target = _alias_of(current.model)
        alias = None
        model = current.model
        if target is not None and target[0] == mv.name:
            alias = (target[0], target[1], mv.version)
        else:
            model = mv.ref
        new = current.evolve(model=model, traffic=Traffic())
        check_compatible(new, mv, client=cl)
        info = {
            **extra,
            "challenger": now.challenger,
            "version": mv.ref,
            "policy": now.policy,
            "previous_champion": current.model,
            "previous_version": previous,
            "alias": f"{alias[0]}@{alias[1]}" if alias else None,
        }
        edge = served_edge(mv, name, "champion", current.revision + 1)
        return Change(new, "promoted", info, (edge,), alias)

    return _Write(reason, actor, expected_revision, cl).apply(name, plan)


def rollback(
    name: str,
    *,
    reason: str | None = None,
    breach: bool = False,
    detail: Mapping[str, Any] | None = None,
    actor: str | None = None,
    expected_revision: int | None = None,
    client: TrackingClient | None = None,
) -> Deployment | None:
    """Traffic back on the champion alone, recorded as ``rolled_back``.

    A guard passes ``breach=True`` (recorded as ``guard_breach``), the figures it judged
    in ``detail``, and the revision it judged as ``expected_revision``: if another worker
    acted first, nothing happens and None is returned.
    """
    if not isinstance(breach, bool):
        raise InvalidInput(f"breach must be True or False; got {breach!r}")
    extra = detail_of(detail)

    def plan(current: Deployment) -> Change:
        now, _ = _in_rollout(current, "there is no rollout to roll back")
        info = {
            **extra,
            "challenger": now.challenger,
            "policy": now.policy,
            "percent": now.percent,
            "champion": current.model,
        }
        kind = "guard_breach" if breach else "rolled_back"
        return Change(current.evolve(traffic=Traffic()), kind, info)

    return _Write(reason, actor, expected_revision, client).apply(name, plan)
