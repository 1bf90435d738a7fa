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
takes traffic. Each verb is one compare-and-set write (see :mod:`kiln.serving.deployments`);
with ``expected_revision`` a verb does nothing and returns None (``promote``,
``rollback``, ``switch_back``) or raises Conflict (the others) when the deployment has
moved on, so two server workers judging one guard act once.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import asdict
from typing import Any, cast

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
from kiln.serving.compatibility import check_compatible
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

_POLICY_WORDS = {
    "canary": "a canary",
    "ab": "an A/B split",
    "shadow": "a shadow",
    "blue_green": "a blue-green switch",
}


def _percent(verb: str, value: Any, *, upper_inclusive: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if ok and (0 < value < 100 or (upper_inclusive and value == 100)):
        return float(value)
    rule = "(0, 100]" if upper_inclusive else "(0, 100)"
    raise InvalidInput(
        f"The 'percent' parameter of {verb} must be a number in {rule}. Got {value!r}."
    )


def _start(
    name: str,
    *,
    policy: str,
    kind: str,
    model: str,
    percent: float,
    sticky_key: str | None,
    guard: Guard | Mapping[str, Any] | None,
    reason: str | None,
    actor: str | None,
    expected_revision: int | None,
    client: TrackingClient | None,
) -> Deployment:
    cl = client_of(client)
    guard_value = spec_value(Guard, "guard", guard)
    traffic = Traffic(
        policy=cast(Policy, policy),
        challenger=model,
        percent=percent,
        sticky_key=sticky_key,
        guard=guard_value,
    )

    def plan(current: Deployment) -> Change:
        now = current.traffic
        if now.policy not in ("single", policy):
            raise Conflict(
                f"deployment {name!r} is running {_POLICY_WORDS[now.policy]} of "
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
        check_compatible(current, mv, client=cl)
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
        return Change(current.evolve(traffic=traffic), kind, detail, (edge,))

    return apply_strict(
        name, plan, reason=reason, actor=actor, expected_revision=expected_revision, client=cl
    )


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

    Sticky per value of the request field ``sticky_key`` when given. ``guard`` judges the
    challenger and rolls back (or with ``auto_promote``, promotes) automatically.
    Calling it again during a canary changes the percent, challenger or guard.
    """
    return _start(
        name,
        policy="canary",
        kind="canary_started",
        model=model,
        percent=_percent("canary", percent, upper_inclusive=True),
        sticky_key=sticky_key,
        guard=guard,
        reason=reason,
        actor=actor,
        expected_revision=expected_revision,
        client=client,
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
    return _start(
        name,
        policy="ab",
        kind="ab_started",
        model=model,
        percent=_percent("ab", percent, upper_inclusive=False),
        sticky_key=sticky_key,
        guard=None,
        reason=reason,
        actor=actor,
        expected_revision=expected_revision,
        client=client,
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
    return _start(
        name,
        policy="shadow",
        kind="shadow_started",
        model=model,
        percent=100.0,
        sticky_key=None,
        guard=None,
        reason=reason,
        actor=actor,
        expected_revision=expected_revision,
        client=client,
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
    return _start(
        name,
        policy="blue_green",
        kind="switched",
        model=model,
        percent=100.0,
        sticky_key=None,
        guard=guard,
        reason=reason,
        actor=actor,
        expected_revision=expected_revision,
        client=client,
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

    return apply_change(
        name,
        plan,
        reason=reason,
        actor=actor,
        expected_revision=expected_revision,
        client=client,
    )


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
        now = current.traffic
        if now.policy == "single" or now.challenger is None:
            raise Conflict(
                f"deployment {name!r} has no challenger to promote (it serves only "
                f"{current.model!r})"
            )
        mv = resolve_ref(now.challenger, "challenger", cl)
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

    return apply_change(
        name,
        plan,
        reason=reason,
        actor=actor,
        expected_revision=expected_revision,
        client=cl,
    )


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
        now = current.traffic
        if now.policy == "single":
            raise Conflict(
                f"deployment {name!r} serves only its champion {current.model!r}; there is "
                "no rollout to roll back"
            )
        info = {
            **extra,
            "challenger": now.challenger,
            "policy": now.policy,
            "percent": now.percent,
            "champion": current.model,
        }
        kind = "guard_breach" if breach else "rolled_back"
        return Change(current.evolve(traffic=Traffic()), kind, info)

    return apply_change(
        name,
        plan,
        reason=reason,
        actor=actor,
        expected_revision=expected_revision,
        client=client,
    )
