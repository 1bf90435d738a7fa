"""Quality gates on a step: its arguments and its return value validated against schemas
(``@step(checks={"df": schema, "return": schema})``), each report kept on the task's run.

The step's function is wrapped only where it runs (the runner sends the wrapper), so the
step's code hash, and with it its cache key, stays the function's own plus the schemas'.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from kiln.core import InvalidInput

__all__ = ["RETURN", "check_checks", "checked", "checks_digest"]

RETURN = "return"


def check_checks(fn: Callable[..., Any], checks: Any) -> dict[str, Any]:
    """``checks`` as given to ``@step``: parameter names (or ``"return"``) to schemas."""
    from kiln.validation import Schema

    if checks is None:
        return {}
    if not isinstance(checks, Mapping):
        raise InvalidInput(
            "The 'checks' parameter of step maps argument names (or 'return') to "
            f"kiln.validation schemas; got {type(checks).__name__}"
        )
    params = list(inspect.signature(fn).parameters)
    for name, schema in checks.items():
        if name != RETURN and name not in params:
            raise InvalidInput(
                f"checks names {name!r}, which is not a parameter of "
                f"{getattr(fn, '__name__', 'the step')}; its parameters: "
                f"{', '.join(params) or 'none'} (or 'return' for its value)"
            )
        if not isinstance(schema, Schema):
            raise InvalidInput(
                f"checks[{name!r}] must be a kiln.validation.Schema; got {type(schema).__name__}"
            )
    return dict(checks)


def checks_digest(checks: Mapping[str, Any]) -> str:
    """What the cache key adds for the checks: a changed schema runs the step again."""
    import json

    text = json.dumps({k: v.to_dict() for k, v in sorted(checks.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def checked(fn: Callable[..., Any], checks: Mapping[str, Any], step: str) -> Callable[..., Any]:
    """``fn`` with its gates: arguments checked before it runs, its value after."""

    def run_checked(**kwargs: Any) -> Any:
        for name, schema in checks.items():
            if name != RETURN and name in kwargs:
                _gate(kwargs[name], schema, name, f"argument {name!r} of step {step!r}")
        value = fn(**kwargs)
        if RETURN in checks:
            _gate(value, checks[RETURN], RETURN, f"the value step {step!r} returned")
        return value

    return run_checked


def _gate(data: Any, schema: Any, name: str, what: str) -> None:
    """Validate, keep the report on the task's run, stop on an error."""
    from kiln.tracking import active_run
    from kiln.validation import ValidationFailed, validate

    report = validate(data, schema)
    run = active_run()
    if run is not None:
        run.log_dict(report.to_dict(), f"validation/{name}.json")
        run.set_tags({f"kiln.validation.{name}": "passed" if report.ok else "failed"})
    if not report.ok:
        raise ValidationFailed(what, report)
