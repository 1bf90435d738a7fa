"""A study and its trials as stored: frozen records read back from tracked runs.

A study is a run tagged ``kiln.study`` (its configuration in ``kiln.study.config``); each
trial a child run tagged ``kiln.trial`` with its number. A trial's state follows from
its run: FINISHED is COMPLETE or PRUNED and FAILED is FAIL (as tagged when it ended), and
a run still RUNNING, KILLED, or ended without a verdict belongs to a trial that was
running when the study stopped. Nothing
about a trial lives anywhere but its run, so what the tracking UI shows is the study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from kiln.core import NotFound, close_matches

__all__ = [
    "StudyConfig",
    "TrialRecord",
    "best_of",
    "find_study_run",
    "list_study_runs",
    "load_trials",
    "pareto_of",
    "trial_records",
]

STUDY_TAG = "kiln.study"
CONFIG_TAG = "kiln.study.config"
DRIVER_TAG = "kiln.study.driver"
STUDY_RUN_TAG = "kiln.study_run"
TRIAL_TAG = "kiln.trial"
STATE_TAG = "kiln.trial.state"
REASON_TAG = "kiln.trial.reason"
DISTRIBUTIONS_TAG = "kiln.trial.distributions"
INTERRUPTED_TAG = "kiln.trial.interrupted"


@dataclass(frozen=True)
class StudyConfig:
    """Everything needed to run a study again, in another process, from its name."""

    name: str
    experiment: str
    directions: tuple[str, ...]
    metrics: tuple[str, ...]
    sampler: str
    pruner: str
    seed: int | None
    n_trials: int
    space: Mapping[str, str] | None  # name -> Optuna distribution JSON
    warm_start: str | None = None
    parallel: int = 1
    executor: str = "inline"
    resources: Mapping[str, float] = field(default_factory=dict)
    trial_timeout_s: float | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["directions"], data["metrics"] = list(self.directions), list(self.metrics)
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str) -> StudyConfig:
        data = orjson.loads(text)
        data["directions"], data["metrics"] = tuple(data["directions"]), tuple(data["metrics"])
        return cls(**data)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: its number in the study, state, values, params and run."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING
    values: tuple[float, ...] | None
    params: Mapping[str, Any]
    run_id: str
    reason: str | None
    start_time: datetime
    end_time: datetime | None
    distributions: Mapping[str, str] = field(default_factory=dict, repr=False)
    interrupted: bool = False

    @property
    def value(self) -> float | None:
        """The objective's value (a single-objective study's one number)."""
        return self.values[0] if self.values else None

    @property
    def duration_s(self) -> float | None:
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "values": list(self.values) if self.values is not None else None,
            "params": dict(self.params),
            "run_id": self.run_id,
            "reason": self.reason,
            "start_time": self.start_time.isoformat(),
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "duration_s": self.duration_s,
        }


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def list_study_runs(experiment: str | None = None, limit: int | None = None) -> list[Any]:
    """The runs of the studies (of ``experiment``), newest first."""
    from kiln.tracking import runs

    return runs.search(experiment, filter=f"tags.{STUDY_TAG} LIKE '%'", limit=limit)


def find_study_run(name: str) -> Any:
    """The run of the study called ``name``; NotFound naming the studies there are."""
    from kiln.tracking import runs

    found = runs.search(filter=f"tags.{STUDY_TAG} = {_quoted(name)}", limit=2)
    if not found:
        known = sorted({r.tags[STUDY_TAG] for r in list_study_runs()})
        listed = ", ".join(known[:10]) if known else "none yet"
        raise NotFound(f"no study named {name!r}{close_matches(name, known)} (studies: {listed})")
    return found[0]


def _state(run: Any) -> tuple[str, bool]:
    """(state, interrupted). A trial's run ends with its verdict tagged in the same
    write, so a run ended without one was ended by something else (its process exiting
    under it, as a Ray worker does when its driver dies): the trial was cut short, as if
    still running."""
    tags = run.tags
    if tags.get(INTERRUPTED_TAG) == "true":
        return "FAIL", True
    if run.status == "FINISHED":
        state = tags.get(STATE_TAG)
        return (state, False) if state in ("COMPLETE", "PRUNED") else ("RUNNING", False)
    if run.status == "FAILED" and STATE_TAG in tags:
        return "FAIL", False
    return "RUNNING", False


def load_trials(study_run_id: str, config: StudyConfig) -> list[TrialRecord]:
    """The study's trials by number (an interrupted trial and its retry share no number)."""
    from kiln.tracking import runs

    found = runs.search(
        config.experiment, filter=f"tags.{STUDY_RUN_TAG} = {_quoted(study_run_id)}", limit=None
    )
    return trial_records(found, config)


def trial_records(found: Sequence[Any], config: StudyConfig) -> list[TrialRecord]:
    """Trial records, by number, of a study's trial runs (``RunRecord``s) read before."""
    out = []
    for run in found:
        state, interrupted = _state(run)
        values = None
        if state == "COMPLETE":
            try:
                values = tuple(float(run.metrics[m]) for m in config.metrics)
            except KeyError:  # an objective's value never reached the store
                state = "FAIL"
        dists = run.tags.get(DISTRIBUTIONS_TAG)
        out.append(
            TrialRecord(
                number=int(run.tags[TRIAL_TAG]),
                state=state,
                values=values,
                params=dict(run.params),
                run_id=run.id,
                reason=run.tags.get(REASON_TAG) or run.error,
                start_time=run.start_time,
                end_time=run.end_time,
                distributions=orjson.loads(dists) if dists else {},
                interrupted=interrupted,
            )
        )
    out.sort(key=lambda t: t.number)
    return out


def best_of(
    trials: Sequence[TrialRecord], direction: str, objective: int = 0
) -> TrialRecord | None:
    """The completed trial best on ``objective`` (lowest number on ties), or None."""
    done = [t for t in trials if t.state == "COMPLETE" and t.values]
    if not done:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(done, key=lambda t: (sign * (t.values or ())[objective], t.number))


def pareto_of(trials: Sequence[TrialRecord], directions: Sequence[str]) -> list[TrialRecord]:
    """Completed trials no other completed trial beats on every objective, by number."""
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
    keyed = [
        (t, [s * v for s, v in zip(signs, t.values, strict=True)])
        for t in trials
        if t.state == "COMPLETE" and t.values
    ]
    front = []
    for t, k in keyed:
        dominated = any(all(a <= b for a, b in zip(o, k, strict=True)) and o != k for _, o in keyed)
        if not dominated:
            front.append(t)
    return front
