"""Deployment definitions: frozen values, validated when built, stored as JSON.

A :class:`Deployment` says which model answers (``model``: a reference such as
``fraud@champion``, followed when the alias moves), which features the server looks up
for it, how requests are batched, how long a prediction may take, what answers while the
model's circuit breaker is open, and how traffic is split (:class:`Traffic`). Nothing here
does I/O; :mod:`kiln.serving.deployments` stores and changes deployments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from kiln.core import InvalidInput

__all__ = [
    "POLICIES",
    "Batching",
    "Breaker",
    "Deployment",
    "Fallback",
    "Guard",
    "Traffic",
]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
POLICIES = ("single", "canary", "ab", "shadow", "blue_green")
Policy = Literal["single", "canary", "ab", "shadow", "blue_green"]


def _bad(owner: str, param: str, rule: str, value: Any) -> InvalidInput:
    return InvalidInput(f"The {param!r} parameter of {owner} must be {rule}. Got {value!r}.")


def _number(owner: str, param: str, value: Any, *, lo: float, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        rule = f"a number in [{lo}, {hi}]" if hi != math.inf else f"a number >= {lo}"
        raise _bad(owner, param, rule, value)
    return float(value)


def _integer(owner: str, param: str, value: Any, *, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _bad(owner, param, f"an integer >= {lo}", value)
    return value


def _optional(owner: str, param: str, value: Any, *, lo: float, hi: float = math.inf) -> None:
    if value is not None:
        _number(owner, param, value, lo=lo, hi=hi)


def check_name(value: Any, what: str = "deployment name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidInput(
            f"{what} must be 1-128 letters, digits, '_', '-' or '.', starting with a letter "
            f"or digit; got {value!r}"
        )
    return value


def check_model_ref(owner: str, param: str, value: Any) -> str:
    """A model reference: ``name``, ``name/<version>`` or ``name@<alias>``."""
    if not isinstance(value, str) or not value:
        raise _bad(owner, param, "a model reference such as 'fraud@champion' or 'fraud/3'", value)
    name = re.split(r"[@/]", value, maxsplit=1)[0]
    check_name(name, f"the model name in {param!r} of {owner}")
    return value


@dataclass(frozen=True, kw_only=True)
class Batching:
    """Dynamic batching per model version.

    Concurrent requests are coalesced until ``max_batch_size`` rows are waiting or the
    oldest has waited ``max_wait_ms``, then run as one vectorized predict. Up to
    ``max_in_flight`` batches of one version run at once, so decoding the next requests
    overlaps predicting the current ones. At most ``max_queue`` requests wait per model
    version; beyond that the server answers 503 with Retry-After at once instead of
    letting latency grow without bound.
    """

    max_batch_size: int = 1024
    max_wait_ms: float = 2.0
    max_queue: int = 2048
    max_in_flight: int = 2

    def __post_init__(self) -> None:
        _integer("Batching", "max_batch_size", self.max_batch_size, lo=1)
        _integer("Batching", "max_in_flight", self.max_in_flight, lo=1)
        _number("Batching", "max_wait_ms", self.max_wait_ms, lo=0.0, hi=10_000.0)
        _integer("Batching", "max_queue", self.max_queue, lo=1)


@dataclass(frozen=True, kw_only=True)
class Breaker:
    """A circuit breaker per model version.

    It opens after ``consecutive_failures`` failures in a row, or when at least
    ``min_calls`` calls in the last ``window_s`` seconds failed at ``failure_rate`` or
    more; after ``open_s`` seconds it lets ``half_open_probes`` calls through and closes
    when they succeed (reopens when one fails). Timeouts count as failures.
    """

    consecutive_failures: int = 5
    failure_rate: float = 0.5
    min_calls: int = 20
    window_s: float = 10.0
    open_s: float = 5.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        _integer("Breaker", "consecutive_failures", self.consecutive_failures, lo=1)
        _number("Breaker", "failure_rate", self.failure_rate, lo=0.0, hi=1.0)
        _integer("Breaker", "min_calls", self.min_calls, lo=1)
        _number("Breaker", "window_s", self.window_s, lo=0.001)
        _number("Breaker", "open_s", self.open_s, lo=0.0)
        _integer("Breaker", "half_open_probes", self.half_open_probes, lo=1)


@dataclass(frozen=True, kw_only=True)
class Fallback:
    """What answers while a version's breaker is open (or it fails or times out).

    Either another ``model`` (a reference) or a constant ``value`` (a JSON number, string,
    boolean or list); the response carries ``"fallback": true`` either way.
    """

    model: str | None = None
    value: Any = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.value is None):
            raise InvalidInput(
                "Fallback takes exactly one of 'model' (a model reference) and 'value' (a "
                f"constant answer). Got model={self.model!r}, value={self.value!r}."
            )
        if self.model is not None:
            check_model_ref("Fallback", "model", self.model)
        elif not _is_json_value(self.value):
            raise _bad("Fallback", "value", "a JSON number, string, boolean or list", self.value)


def _is_json_value(value: Any) -> bool:
    if isinstance(value, bool | str | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_is_json_value(v) for v in value)
    return False


@dataclass(frozen=True, kw_only=True)
class Guard:
    """When a canary or blue-green challenger is judged, and what fails it.

    Nothing is judged before the challenger has answered ``min_requests`` requests. Then
    a breach of any limit set (error rate, p95 latency in ms, PSI of its predictions
    against the champion's) rolls traffic back to the champion and records why. With
    ``auto_promote`` a challenger that has passed for ``window_s`` seconds (and
    ``min_requests`` requests) is promoted.
    """

    max_error_rate: float | None = 0.05
    max_p95_ms: float | None = None
    max_psi: float | None = 0.25
    min_requests: int = 100
    window_s: float = 60.0
    auto_promote: bool = False

    def __post_init__(self) -> None:
        _optional("Guard", "max_error_rate", self.max_error_rate, lo=0.0, hi=1.0)
        _optional("Guard", "max_p95_ms", self.max_p95_ms, lo=0.0)
        _optional("Guard", "max_psi", self.max_psi, lo=0.0)
        _integer("Guard", "min_requests", self.min_requests, lo=1)
        _number("Guard", "window_s", self.window_s, lo=0.0)
        if not isinstance(self.auto_promote, bool):
            raise _bad("Guard", "auto_promote", "True or False", self.auto_promote)


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """How requests are split between the champion and a challenger.

    - ``single``: the champion answers everything.
    - ``canary``: ``percent`` of requests go to the challenger (sticky per ``sticky_key``
      value when the request carries that field), judged by ``guard``.
    - ``ab``: a sticky split by hash of ``sticky_key``; ``percent`` is arm B's share, and
      the arm is recorded with each prediction.
    - ``shadow``: the champion answers; every request is also sent to the challenger off
      the response path, whose answers and latencies are logged and never returned.
    - ``blue_green``: ``percent`` is 100 (all on the challenger, "green") or 0 (all back
      on "blue"); a switch is judged by ``guard`` like a canary.
    """

    policy: Policy = "single"
    challenger: str | None = None
    percent: float = 0.0
    sticky_key: str | None = None
    guard: Guard | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise _bad("Traffic", "policy", f"one of {', '.join(POLICIES)}", self.policy)
        _number("Traffic", "percent", self.percent, lo=0.0, hi=100.0)
        if self.policy == "single":
            if self.challenger is not None:
                raise InvalidInput("A 'single' traffic policy takes no challenger")
        else:
            check_model_ref("Traffic", "challenger", self.challenger)
        if self.policy == "blue_green" and self.percent not in (0.0, 100.0):
            raise _bad("Traffic", "percent", "0 or 100 for a blue-green switch", self.percent)
        if self.policy == "ab" and self.sticky_key is None:
            raise InvalidInput(
                "An A/B split needs 'sticky_key': the request field whose hash picks the arm"
            )
        if self.sticky_key is not None and not isinstance(self.sticky_key, str):
            raise _bad("Traffic", "sticky_key", "a request field name", self.sticky_key)
        if self.guard is not None and not isinstance(self.guard, Guard):
            raise _bad("Traffic", "guard", "a Guard", self.guard)


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """A named, stored description of how one model is served.

    ``features`` (``view:feature`` references) or ``service`` (a feature service name)
    are looked up online for the entity keys of each native request; together with the
    request fields they must supply every input of the model's signature, which is
    checked before a version takes traffic. ``request`` is the request schema clients
    send (field name -> dtype); ``None`` means "whatever the model needs beyond the
    features" (``kiln.deployments.create`` fixes it from the model's signature).
    ``revision`` counts stored changes.
    """

    name: str
    model: str
    features: tuple[str, ...] = ()
    service: str | None = None
    batching: Batching = field(default_factory=Batching)
    timeout_ms: float = 1000.0
    fallback: Fallback | None = None
    breaker: Breaker = field(default_factory=Breaker)
    traffic: Traffic = field(default_factory=Traffic)
    max_body_bytes: int = 8 * 1024 * 1024
    tags: Mapping[str, str] = field(default_factory=dict)
    request: Mapping[str, str] | None = None
    revision: int = 0

    def __post_init__(self) -> None:
        owner = f"Deployment {self.name!r}"
        check_name(self.name)
        check_model_ref(owner, "model", self.model)
        feats = self.features
        if isinstance(feats, str) or not isinstance(feats, Sequence):
            raise _bad(owner, "features", "a list of 'view:feature' references", feats)
        for ref in feats:
            if not isinstance(ref, str) or ref.count(":") != 1 or ref.startswith(":"):
                raise _bad(owner, "features", "a list of 'view:feature' references", ref)
        object.__setattr__(self, "features", tuple(feats))
        if self.service is not None:
            check_name(self.service, f"the 'service' of {owner}")
            if feats:
                raise InvalidInput(f"{owner}: pass 'features' or 'service', not both")
        for param, kind in (
            ("batching", Batching),
            ("breaker", Breaker),
            ("traffic", Traffic),
        ):
            if not isinstance(getattr(self, param), kind):
                raise _bad(owner, param, f"a {kind.__name__}", getattr(self, param))
        if self.fallback is not None and not isinstance(self.fallback, Fallback):
            raise _bad(owner, "fallback", "a Fallback", self.fallback)
        _number(owner, "timeout_ms", self.timeout_ms, lo=1.0, hi=600_000.0)
        _integer(owner, "max_body_bytes", self.max_body_bytes, lo=1024)
        if not isinstance(self.tags, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()
        ):
            raise _bad(owner, "tags", "a dict of strings", self.tags)
        object.__setattr__(self, "tags", dict(self.tags))
        if self.request is not None:
            if not isinstance(self.request, Mapping) or not all(
                isinstance(k, str) and k and isinstance(v, str) and v
                for k, v in self.request.items()
            ):
                raise _bad(owner, "request", "a dict of field name -> dtype", self.request)
            object.__setattr__(self, "request", dict(self.request))

    def evolve(self, **changes: Any) -> Deployment:
        """A copy with ``changes`` applied and validated again."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        traffic = dict(data.get("traffic") or {})
        if traffic.get("guard") is not None:
            traffic["guard"] = Guard(**traffic["guard"])
        fallback = data.get("fallback")
        return cls(
            name=data["name"],
            model=data["model"],
            features=tuple(data.get("features") or ()),
            service=data.get("service"),
            batching=Batching(**(data.get("batching") or {})),
            timeout_ms=data.get("timeout_ms", 1000.0),
            fallback=Fallback(**fallback) if fallback is not None else None,
            breaker=Breaker(**(data.get("breaker") or {})),
            traffic=Traffic(**traffic),
            max_body_bytes=data.get("max_body_bytes", 8 * 1024 * 1024),
            tags=dict(data.get("tags") or {}),
            request=dict(data["request"]) if data.get("request") is not None else None,
            revision=int(data.get("revision", 0)),
        )
