"""Traffic splitting: proportions, stickiness, determinism across processes, labels."""

from __future__ import annotations

import random

import pytest

from kiln.core import InvalidInput
from kiln.serving.specs import Traffic
from kiln.serving.traffic import arm_label, choose_arm, key_point, mirrors, request_key

KEYS = [f"user-{i}" for i in range(20_000)]


def canary(percent: float) -> Traffic:
    return Traffic(policy="canary", challenger="fraud/2", percent=percent, sticky_key="user")


def share(traffic: Traffic, keys: list[str | None], salt: str = "") -> float:
    rng = random.Random(7)
    hits = sum(choose_arm(traffic, k, rng.random(), salt=salt) == "challenger" for k in keys)
    return hits / len(keys)


@pytest.mark.parametrize("percent", [1.0, 10.0, 50.0])
def test_a_canary_sends_its_percent_of_keyed_and_unkeyed_requests(percent: float) -> None:
    assert share(canary(percent), list(KEYS)) == pytest.approx(percent / 100, abs=0.015)
    unkeyed: list[str | None] = [None] * 20_000
    assert share(canary(percent), unkeyed) == pytest.approx(percent / 100, abs=0.015)


def test_an_ab_split_gives_arm_b_its_share_by_key_hash() -> None:
    ab = Traffic(policy="ab", challenger="fraud/2", percent=30, sticky_key="user")
    assert share(ab, list(KEYS)) == pytest.approx(0.30, abs=0.015)


def test_the_same_key_always_lands_on_the_same_arm() -> None:
    traffic = canary(10)
    first = [choose_arm(traffic, k, 0.0) for k in KEYS[:2000]]
    again = [choose_arm(traffic, k, 0.999) for k in KEYS[:2000]]  # rng is ignored with a key
    assert first == again


def test_growing_the_canary_keeps_users_already_on_the_challenger() -> None:
    at10 = {k for k in KEYS[:5000] if choose_arm(canary(10), k, 0.5) == "challenger"}
    at25 = {k for k in KEYS[:5000] if choose_arm(canary(25), k, 0.5) == "challenger"}
    assert at10 < at25


def test_key_points_are_uniform_and_pinned() -> None:
    points = [key_point(k) for k in KEYS]
    assert all(0.0 <= p < 100.0 for p in points)
    deciles = [sum(d * 10 <= p < (d + 1) * 10 for p in points) for d in range(10)]
    assert all(abs(n - 2000) < 200 for n in deciles)
    # pinned: the same in every process and release (no PYTHONHASHSEED dependence)
    assert key_point("user-1") == 60.41924073669338
    assert key_point("user-1", "fraud-api") == 3.6082949308939773
    assert key_point("") == 89.31675160897387


def test_a_salt_makes_splits_of_different_deployments_independent() -> None:
    a = {k for k in KEYS[:5000] if choose_arm(canary(50), k, 0.5, salt="fraud-api") == "challenger"}
    b = {k for k in KEYS[:5000] if choose_arm(canary(50), k, 0.5, salt="churn-api") == "challenger"}
    assert len(a & b) / 5000 == pytest.approx(0.25, abs=0.03)


def test_zero_and_full_percent_are_exact() -> None:
    assert all(choose_arm(canary(0), k, 0.0) == "champion" for k in KEYS[:1000])
    assert all(choose_arm(canary(100), k, 0.999) == "challenger" for k in KEYS[:1000])
    assert choose_arm(canary(0), None, 0.0) == "champion"
    assert choose_arm(canary(100), None, 0.999999) == "challenger"


def test_single_shadow_and_blue_green_policies() -> None:
    shadow = Traffic(policy="shadow", challenger="fraud/2", percent=100)
    assert choose_arm(Traffic(), "u", 0.0) == "champion"
    assert choose_arm(shadow, "u", 0.0) == "champion"
    assert mirrors(shadow)
    assert not mirrors(canary(10)) and not mirrors(Traffic())
    green = Traffic(policy="blue_green", challenger="fraud/2", percent=100)
    blue = Traffic(policy="blue_green", challenger="fraud/2", percent=0)
    assert all(choose_arm(green, k, 0.5) == "challenger" for k in KEYS[:100])
    assert choose_arm(green, None, 0.0) == "challenger"
    assert choose_arm(blue, None, 0.0) == "champion"


def test_arm_labels_follow_the_policy() -> None:
    labels = {
        "canary": canary(10),
        "ab": Traffic(policy="ab", challenger="fraud/2", percent=50, sticky_key="user"),
        "shadow": Traffic(policy="shadow", challenger="fraud/2"),
        "blue_green": Traffic(policy="blue_green", challenger="fraud/2", percent=100),
        "single": Traffic(),
    }
    got = {
        name: (arm_label(t, "champion"), arm_label(t, "challenger")) for name, t in labels.items()
    }
    assert got == {
        "canary": ("champion", "canary"),
        "ab": ("A", "B"),
        "shadow": ("primary", "shadow"),
        "blue_green": ("blue", "green"),
        "single": ("champion", "challenger"),
    }
    with pytest.raises(InvalidInput, match="unknown arm 'champ'; known: champion, challenger"):
        arm_label(Traffic(), "champ")  # type: ignore[arg-type]


def test_request_key_reads_the_sticky_field_as_text() -> None:
    traffic = canary(10)
    assert request_key(traffic, {"user": 42}) == "42"
    assert request_key(traffic, {"user": 42.0}) == request_key(traffic, {"user": "42"}) == "42"
    assert request_key(traffic, {"user": 4.5}) == "4.5"
    assert request_key(traffic, {"user": True}) == "true"
    assert request_key(traffic, {"other": 1}) is None
    assert request_key(traffic, {"user": None}) is None
    assert request_key(Traffic(), {"user": 1}) is None


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan")])
def test_a_random_value_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(InvalidInput, match=r"'rng_value' must be a number in \[0, 1\)"):
        choose_arm(canary(10), None, bad)
