"""Cron expressions for schedules, on croniter, in UTC and epoch milliseconds.

Only the five standard fields (minute hour day-of-month month day-of-week) and the
``@hourly``-style aliases are accepted: croniter also reads a sixth field as seconds and
a seventh as years, which no other cron does, so an expression copied from elsewhere
could silently mean something else here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

from kiln.core import InvalidInput

__all__ = ["check", "count_due", "latest_due", "next_after"]

ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_HELP = "five fields (minute hour day-of-month month day-of-week), e.g. '0 3 * * *', or " + (
    ", ".join(ALIASES)
)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def check(expr: str, now_ms: int) -> str:
    """``expr`` normalized (single spaces), or InvalidInput naming it and the rule."""
    if not isinstance(expr, str):
        raise InvalidInput(f"cron must be a string: {_HELP}; got {expr!r}")
    text = " ".join(expr.split())
    fields = text.split(" ")
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise InvalidInput(f"cron {expr!r}: unknown alias; expected {_HELP}")
        text = text.lower()
    elif len(fields) != 5:
        raise InvalidInput(f"cron {expr!r} has {len(fields)} fields; expected {_HELP}")
    if not croniter.is_valid(text):
        reason = ""
        try:
            croniter(text)
        except ValueError as exc:
            reason = f" ({exc})"
        raise InvalidInput(
            f"cron {expr!r} is not a valid cron expression{reason}; expected {_HELP}"
        )
    try:
        next_after(text, now_ms)
    except CroniterBadDateError:
        raise InvalidInput(f"cron {expr!r} never fires (no such date)") from None
    return text


def next_after(expr: str, ms: int) -> int:
    """The first time ``expr`` fires strictly after ``ms``."""
    return _ms(croniter(expr, _dt(ms)).get_next(datetime))


def latest_due(expr: str, ms: int) -> int:
    """The last time ``expr`` fires at or before ``ms``."""
    return _ms(croniter(expr, _dt(ms) + timedelta(milliseconds=1)).get_prev(datetime))


def count_due(expr: str, first_ms: int, until_ms: int, limit: int) -> int:
    """How many times ``expr`` fires from ``first_ms`` (one of its times) to ``until_ms``,
    both included; counting stops at ``limit`` (a long outage of a frequent schedule)."""
    if first_ms > until_ms:
        return 0
    it = croniter(expr, _dt(first_ms))
    count = 1
    while count < limit and _ms(it.get_next(datetime)) <= until_ms:
        count += 1
    return count
