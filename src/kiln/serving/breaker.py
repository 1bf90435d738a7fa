"""A circuit breaker per model version.

::

    closed ──(consecutive failures, or failure rate over the window)──▶ open
    open ──(open_s passed)──▶ half_open
    half_open ──(half_open_probes successes)──▶ closed
    half_open ──(a failure)──▶ open

The caller asks :meth:`CircuitBreaker.allow` before each predict (``False``: answer with
the fallback, or 503 with Retry-After :attr:`CircuitBreaker.retry_after_s`) and reports
the outcome with :meth:`~CircuitBreaker.record_success` or
:meth:`~CircuitBreaker.record_failure` (timeouts are failures). Time comes from an
injectable monotonic ``clock``; a lock makes it safe to use from the event loop and
executor threads at once. Outcomes of calls that started before the breaker opened are
ignored while it is open. A half-open probe not reported within ``open_s`` (at least a
second) is presumed lost, and another probe may go.

The failure-rate window is kept as per-slice counts (``window_s`` split in
:data:`WINDOW_SLICES`), so memory stays bounded whatever the request rate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

from kiln.core import InvalidInput
from kiln.serving.specs import Breaker

__all__ = ["STATE_CODES", "WINDOW_SLICES", "CircuitBreaker", "State"]

State: TypeAlias = Literal["closed", "open", "half_open"]
STATE_CODES: Final[dict[str, int]] = {"closed": 0, "open": 1, "half_open": 2}
"""The number a metrics gauge shows for each state."""
WINDOW_SLICES: Final = 20

_log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed / open / half-open state of one model version, per :class:`Breaker`."""

    def __init__(self, spec: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(spec, Breaker):
            raise InvalidInput(
                f"The 'spec' parameter of CircuitBreaker must be a Breaker. Got {spec!r}."
            )
        self.spec = spec
        self._clock = clock
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[State, State], None]] = []
        self._state: State = "closed"
        self._consecutive = 0
        self._slice_s = spec.window_s / WINDOW_SLICES
        self._slices: deque[list[int]] = deque()  # [slice index, calls, failures]
        self._calls = 0
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0  # probes let through and not yet reported
        self._probe_at = 0.0
        self._successes = 0  # probe successes while half-open

    # ------------------------------------------------------------------ public

    @property
    def state(self) -> State:
        """``"closed"``, ``"open"`` or ``"half_open"`` (an open breaker whose
        ``open_s`` has passed reads as half-open)."""
        state = self._state
        if state != "open":  # only an open breaker changes state with time
            return state
        changes: list[tuple[State, State]] = []
        with self._lock:
            self._advance(self._clock(), changes)
            state = self._state
        if changes:
            self._notify(changes)
        return state

    @property
    def code(self) -> int:
        """The state as a number for metrics: closed 0, open 1, half-open 2."""
        return STATE_CODES[self.state]

    @property
    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self._opened_at + self.spec.open_s - self._clock())

    def on_change(self, callback: Callable[[State, State], None]) -> None:
        """Call ``callback(old, new)`` after every state change (outside the lock; an
        exception it raises is logged, never raised to the caller of the breaker)."""
        self._callbacks.append(callback)

    def allow(self) -> bool:
        """Whether a call may go to the model now; a half-open breaker lets at most
        ``half_open_probes`` calls through until they are reported."""
        state = self._state
        if state == "closed":  # the common case: nothing to advance or count
            return True
        changes: list[tuple[State, State]] = []
        with self._lock:
            now = self._clock()
            self._advance(now, changes)
            if self._state == "closed":
                allowed = True
            elif self._state == "open":
                allowed = False
            else:
                if self._probes and now - self._probe_at >= max(self.spec.open_s, 1.0):
                    self._probes = 0  # probes never reported (their callers died): retry
                allowed = self._probes + self._successes < self.spec.half_open_probes
                if allowed:
                    self._probes += 1
                    self._probe_at = now
        if changes:
            self._notify(changes)
        return allowed

    def record_success(self, n: int = 1) -> None:
        """``n`` calls succeeded: a batch of requests answered together is reported once."""
        changes: list[tuple[State, State]] = []
        with self._lock:
            now = self._clock()
            if self._state != "closed":  # a closed breaker has nothing to advance
                self._advance(now, changes)
            if self._state == "closed":
                self._consecutive = 0
                self._count(now, n, 0)
            elif self._state == "half_open":
                self._probes = max(0, self._probes - n)
                self._successes += n
                if self._successes >= self.spec.half_open_probes:
                    self._close(changes)
        if changes:
            self._notify(changes)

    def record_failure(self) -> None:
        changes: list[tuple[State, State]] = []
        with self._lock:
            now = self._clock()
            self._advance(now, changes)
            if self._state == "closed":
                self._consecutive += 1
                self._count(now, 1, 1)
                spec = self.spec
                if self._consecutive >= spec.consecutive_failures or (
                    self._calls >= spec.min_calls
                    and self._failures >= spec.failure_rate * self._calls
                ):
                    self._open(now, changes)
            elif self._state == "half_open":
                self._open(now, changes)
        if changes:
            self._notify(changes)

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self._state!r}, spec={self.spec!r})"

    # --------------------------------------------------------------- internals

    def _advance(self, now: float, changes: list[tuple[State, State]]) -> None:
        if self._state == "open" and now - self._opened_at >= self.spec.open_s:
            self._set("half_open", changes)
            self._probes = 0
            self._successes = 0

    def _count(self, now: float, calls: int, failures: int) -> None:
        index = math.floor(now / self._slice_s)
        slices = self._slices
        while slices and slices[0][0] <= index - WINDOW_SLICES:
            _, calls, failures = slices.popleft()
            self._calls -= calls
            self._failures -= failures
        if not slices or slices[-1][0] != index:
            slices.append([index, 0, 0])
        last = slices[-1]
        last[1] += calls
        last[2] += failures
        self._calls += calls
        self._failures += failures

    def _open(self, now: float, changes: list[tuple[State, State]]) -> None:
        self._opened_at = now
        self._set("open", changes)

    def _close(self, changes: list[tuple[State, State]]) -> None:
        self._consecutive = 0
        self._slices.clear()
        self._calls = self._failures = 0
        self._set("closed", changes)

    def _set(self, state: State, changes: list[tuple[State, State]]) -> None:
        if state != self._state:
            changes.append((self._state, state))
            self._state = state

    def _notify(self, changes: list[tuple[State, State]]) -> None:
        for old, new in changes:
            for callback in self._callbacks:
                try:
                    callback(old, new)
                except Exception:
                    _log.exception("on_change callback of a circuit breaker failed")
