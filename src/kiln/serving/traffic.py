"""Which version answers a request under a deployment's :class:`~kiln.serving.specs.Traffic`.

Requests that carry the policy's ``sticky_key`` field are placed by a stable hash of its
value (BLAKE2b, the same in every process and every run, unlike Python's ``hash``), so a
user stays on one arm while the split holds; when the share grows, the users already on
the challenger stay there. Requests without a key are placed by a uniform random number
the caller draws.

========== =========================================== ======================
policy     who answers                                 arm labels
========== =========================================== ======================
single     the champion                                champion
canary     the challenger for ``percent`` % of traffic champion / canary
ab         arm B (challenger) for ``percent`` %        A / B
shadow     the champion; the challenger gets a mirror  primary / shadow
blue_green the challenger ("green") at 100 %, else blue blue / green
========== =========================================== ======================
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

from kiln.core import InvalidInput
from kiln.serving.specs import Traffic

__all__ = [
    "CHALLENGER_LABELS",
    "Arm",
    "arm_label",
    "arm_of_label",
    "choose_arm",
    "key_point",
    "mirrors",
    "request_key",
]

Arm: TypeAlias = Literal["champion", "challenger"]

_LABELS: dict[str, tuple[str, str]] = {
    "single": ("champion", "challenger"),
    "canary": ("champion", "canary"),
    "ab": ("A", "B"),
    "shadow": ("primary", "shadow"),
    "blue_green": ("blue", "green"),
}
_SCALE = 100.0 / 2.0**64
CHALLENGER_LABELS = frozenset(challenger for _, challenger in _LABELS.values())


def key_point(key: str, salt: str = "") -> float:
    """A uniform point in [0, 100) for ``key``, stable across processes and releases."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, salt=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") * _SCALE


def choose_arm(traffic: Traffic, key: str | None, rng_value: float, *, salt: str = "") -> Arm:
    """The arm that answers a request.

    ``key`` is the request's sticky-key value (see :func:`request_key`), or ``None``;
    ``rng_value`` is a uniform random number in [0, 1), used when there is no key.
    ``salt`` (up to 16 bytes, for example the deployment name) makes splits of different
    deployments independent of each other.
    """
    policy = traffic.policy
    if policy in ("single", "shadow"):
        return "champion"
    if policy == "blue_green":
        return "challenger" if traffic.percent >= 100.0 else "champion"
    if key is not None:
        point = key_point(key, salt)
    elif 0.0 <= rng_value < 1.0:
        point = rng_value * 100.0
    else:
        raise InvalidInput(f"'rng_value' must be a number in [0, 1). Got {rng_value!r}.")
    return "challenger" if point < traffic.percent else "champion"


def arm_of_label(label: str) -> Arm:
    """Which side a logged arm label is on, whatever the policy that logged it."""
    return "challenger" if label in CHALLENGER_LABELS else "champion"


def arm_label(traffic: Traffic, arm: Arm) -> str:
    """The name an arm goes by under the policy ("A"/"B", "blue"/"green", ...)."""
    champion, challenger = _LABELS[traffic.policy]
    if arm == "champion":
        return champion
    if arm == "challenger":
        return challenger
    raise InvalidInput(f"unknown arm {arm!r}; known: champion, challenger")


def mirrors(traffic: Traffic) -> bool:
    """Whether every request is also sent to the challenger off the response path."""
    return traffic.policy == "shadow" and traffic.challenger is not None


def request_key(traffic: Traffic, fields: Mapping[str, Any]) -> str | None:
    """The sticky-key value of a request's fields as text, or ``None`` when the policy
    has no sticky key or the request does not carry it.

    Integer-valued numbers read the same as their text (``42``, ``42.0`` and ``"42"``
    are one user).
    """
    name = traffic.sticky_key
    if name is None:
        return None
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
