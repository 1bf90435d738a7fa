"""Circuit breaker transitions on a fake clock."""

from __future__ import annotations

import threading

import pytest

from kiln.core import InvalidInput
from kiln.serving.breaker import STATE_CODES, CircuitBreaker
from kiln.serving.specs import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**spec: float) -> tuple[CircuitBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    cb = CircuitBreaker(Breaker(**spec), clock=clock)  # type: ignore[arg-type]
    changes: list[tuple[str, str]] = []
    cb.on_change(lambda old, new: changes.append((old, new)))
    return cb, clock, changes


def test_a_new_breaker_is_closed_and_allows_calls() -> None:
    cb, _, changes = breaker()
    assert cb.state == "closed" and cb.code == 0
    assert cb.allow()
    assert cb.retry_after_s == 0.0
    assert changes == []


def test_it_opens_after_consecutive_failures_and_a_success_resets_the_count() -> None:
    cb, _, changes = breaker(consecutive_failures=3, min_calls=100)
    for _ in range(2):
        cb.record_failure()
    cb.record_success()
    for _ in range(2):
        cb.record_failure()
    assert cb.state == "closed"
    cb.record_failure()
    assert cb.state == "open" and cb.code == STATE_CODES["open"] == 1
    assert not cb.allow()
    assert changes == [("closed", "open")]


def test_it_opens_on_the_failure_rate_over_min_calls_in_the_window() -> None:
    cb, clock, _ = breaker(consecutive_failures=100, failure_rate=0.5, min_calls=10, window_s=10)
    for _ in range(4):  # 4 of 9: under min_calls anyway
        cb.record_failure()
        cb.record_success()
    cb.record_success()
    assert cb.state == "closed"
    cb.record_failure()  # 5 failures of 10 calls = 0.5
    assert cb.state == "open"

    cb, clock, _ = breaker(consecutive_failures=100, failure_rate=0.5, min_calls=10, window_s=10)
    for _ in range(5):
        cb.record_failure()
        cb.record_success()
        clock.now += 1.0
    clock.now += 10.0  # those calls left the window
    for _ in range(3):
        cb.record_success()
    cb.record_failure()
    assert cb.state == "closed"  # 1 failure of 4 calls in the window


def test_a_low_failure_rate_keeps_it_closed() -> None:
    cb, clock, _ = breaker(consecutive_failures=100, failure_rate=0.5, min_calls=10)
    for _ in range(100):
        cb.record_success()
        cb.record_success()
        cb.record_failure()
        clock.now += 0.01
    assert cb.state == "closed"


def test_after_open_s_it_goes_half_open_and_a_probe_success_closes_it() -> None:
    cb, clock, changes = breaker(consecutive_failures=1, open_s=5)
    cb.record_failure()
    clock.now += 4.0
    assert cb.retry_after_s == pytest.approx(1.0)
    assert not cb.allow()
    clock.now += 1.0
    assert cb.state == "half_open" and cb.code == 2
    assert cb.allow()  # the probe
    assert not cb.allow()  # only one probe at a time
    cb.record_success()
    assert cb.state == "closed"
    assert cb.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_probe_failure_reopens_it_for_another_open_s() -> None:
    cb, clock, changes = breaker(consecutive_failures=1, open_s=5)
    cb.record_failure()
    clock.now += 5.0
    assert cb.allow()
    cb.record_failure()
    assert cb.state == "open"
    clock.now += 4.9
    assert not cb.allow()
    clock.now += 0.1
    assert cb.allow()
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
    ]


def test_several_probes_must_all_succeed_to_close() -> None:
    cb, clock, _ = breaker(consecutive_failures=1, open_s=1, half_open_probes=3)
    cb.record_failure()
    clock.now += 1.0
    assert [cb.allow() for _ in range(4)] == [True, True, True, False]
    cb.record_success()
    cb.record_success()
    assert cb.state == "half_open"
    assert not cb.allow()  # two passed, one still out: no fourth probe
    cb.record_success()
    assert cb.state == "closed"


def test_a_probe_never_reported_is_presumed_lost_after_open_s() -> None:
    cb, clock, _ = breaker(consecutive_failures=1, open_s=2)
    cb.record_failure()
    clock.now += 2.0
    assert cb.allow()
    clock.now += 1.0
    assert not cb.allow()
    clock.now += 1.0
    assert cb.allow()


def test_outcomes_reported_while_open_change_nothing() -> None:
    cb, clock, changes = breaker(consecutive_failures=1, open_s=5)
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    assert cb.state == "open"
    clock.now += 5.0
    assert cb.state == "half_open"
    assert changes == [("closed", "open"), ("open", "half_open")]


def test_closing_forgets_old_failures() -> None:
    cb, clock, _ = breaker(consecutive_failures=3, min_calls=100, open_s=1)
    for _ in range(3):
        cb.record_failure()
    clock.now += 1.0
    assert cb.allow()
    cb.record_success()
    cb.record_failure()
    cb.record_failure()
    assert cb.state == "closed"


def test_a_failing_callback_is_logged_and_the_breaker_still_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cb = CircuitBreaker(Breaker(consecutive_failures=1))

    def broken(old: str, new: str) -> None:
        raise RuntimeError("metrics are down")

    cb.on_change(broken)
    cb.record_failure()
    assert cb.state == "open"
    assert "on_change callback" in caplog.text


def test_the_spec_must_be_a_breaker() -> None:
    with pytest.raises(InvalidInput, match="'spec' parameter of CircuitBreaker must be a Breaker"):
        CircuitBreaker({"open_s": 1})  # type: ignore[arg-type]


def test_concurrent_callers_from_threads_keep_the_counts_consistent() -> None:
    cb = CircuitBreaker(Breaker(consecutive_failures=10**9, min_calls=10**9))
    threads = [
        threading.Thread(target=lambda: [cb.record_success() for _ in range(2000)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cb._calls == 8000  # the window's counts lost no update
    assert cb.state == "closed"


def test_successes_reported_together_count_as_many_reported_one_by_one() -> None:
    """A batch reports its requests' successes in one call; the window sees each one."""
    one = breaker(consecutive_failures=100, failure_rate=0.5, min_calls=10)[0]
    many = breaker(consecutive_failures=100, failure_rate=0.5, min_calls=10)[0]
    for _ in range(5):
        one.record_success()
    many.record_success(5)
    for cb in (one, many):
        for _ in range(4):
            cb.record_failure()
        assert cb.state == "closed"  # 4 failures of 9 calls
        cb.record_failure()
        assert cb.state == "open"  # 5 of 10: the batch's five calls counted

    cb, clock, changes = breaker(consecutive_failures=1, open_s=1, half_open_probes=3)
    cb.record_failure()
    clock.now += 1.0
    assert [cb.allow() for _ in range(3)] == [True, True, True]
    cb.record_success(3)  # the three probes answered in one batch
    assert cb.state == "closed"
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
