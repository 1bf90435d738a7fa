"""Search spaces as plain values: a dict of these is a study's ``space``.

Each is Optuna's distribution under a friendlier name, checked when it is made, so a
mistake in a space is reported where it was written rather than at the first trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kiln.core import InvalidInput

__all__ = ["Categorical", "Float", "Int", "Space", "space_from_json", "space_to_json", "to_optuna"]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Float:
    """A real number in ``[low, high]``: on a log scale with ``log=True`` (learning rates),
    or on a grid of ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        low, high = _number("Float low", self.low), _number("Float high", self.high)
        if low > high:
            raise InvalidInput(f"Float low must be <= high; got low={low!r}, high={high!r}")
        if self.log and low <= 0:
            raise InvalidInput(f"Float(log=True) needs low > 0; got low={low!r}")
        if self.step is not None:
            if _number("Float step", self.step) <= 0:
                raise InvalidInput(f"Float step must be > 0; got {self.step!r}")
            if self.log:
                raise InvalidInput("Float takes log=True or a step, not both")

    def to_optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (both included), every ``step``-th, or on a log scale."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        for name, value in (("low", self.low), ("high", self.high), ("step", self.step)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"Int {name} must be an integer; got {value!r}")
        if self.low > self.high:
            raise InvalidInput(f"Int low must be <= high; got low={self.low}, high={self.high}")
        if self.step < 1:
            raise InvalidInput(f"Int step must be >= 1; got {self.step}")
        if self.log and (self.low < 1 or self.step != 1):
            raise InvalidInput("Int(log=True) needs low >= 1 and step 1")

    def to_optuna(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (None, bool, int, float or str: what a run's param can hold)."""

    choices: tuple[Any, ...]

    def __init__(self, choices: Sequence[Any]) -> None:
        if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
            raise InvalidInput(f"Categorical needs a non-empty list of choices; got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, bool | int | float | str):
                raise InvalidInput(
                    f"Categorical choices must be None, bool, int, float or str; "
                    f"got {choice!r} ({type(choice).__name__})"
                )
        object.__setattr__(self, "choices", tuple(choices))

    def to_optuna(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.choices)


Space = Mapping[str, Float | Int | Categorical]


def to_optuna(space: Space | None) -> dict[str, Any] | None:
    """The space as Optuna distributions (checked); None for a define-by-run objective."""
    if space is None:
        return None
    if not isinstance(space, Mapping) or not space:
        raise InvalidInput(
            "space must be a non-empty dict of name to kiln.tuning.Float/Int/Categorical, "
            f"or None for an objective that calls trial.suggest_*; got {space!r}"
        )
    out = {}
    for name, dist in space.items():
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"space names must be non-empty strings; got {name!r}")
        if not isinstance(dist, Float | Int | Categorical):
            raise InvalidInput(
                f"space[{name!r}] must be kiln.tuning.Float, Int or Categorical; got {dist!r}"
            )
        out[name] = dist.to_optuna()
    return out


def space_to_json(distributions: Mapping[str, Any]) -> dict[str, str]:
    from optuna.distributions import distribution_to_json

    return {name: distribution_to_json(d) for name, d in distributions.items()}


def space_from_json(data: Mapping[str, str]) -> dict[str, Any]:
    from optuna.distributions import json_to_distribution

    return {name: json_to_distribution(text) for name, text in data.items()}
