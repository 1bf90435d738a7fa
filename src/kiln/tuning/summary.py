"""Studies at a glance: each study's status, trials counted by state, and its best trial
or Pareto front, as frozen :class:`StudySummary` records.

``study_summaries()`` reads every study in two queries (the studies' runs, then all
their trials' runs at once), so a list of studies costs the same for ten studies as for
one; ``Study.summary()`` reads one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kiln.core import InvalidInput
from kiln.tuning import records as rec
from kiln.tuning.records import StudyConfig, TrialRecord

__all__ = ["STATES", "StudySummary", "study_summaries", "summarize"]

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


@dataclass(frozen=True)
class StudySummary:
    """One study as it was when read.

    ``status`` is the study's run's (RUNNING, FINISHED, FAILED, KILLED); ``state`` what
    the study recorded as it ended (``finished``, ``timed_out``, ``failed``; None while
    it runs or when it stopped without a verdict). ``counts`` holds every state of
    :data:`STATES`. ``best`` is the best completed trial of a single-objective study;
    ``front`` the Pareto front of a study of several objectives (empty for one).
    """

    config: StudyConfig
    run_id: str
    status: str
    state: str | None
    created: datetime
    ended: datetime | None
    counts: Mapping[str, int]
    best: TrialRecord | None
    front: tuple[TrialRecord, ...]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def experiment(self) -> str:
        return self.config.experiment

    @property
    def directions(self) -> tuple[str, ...]:
        return self.config.directions

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.config.metrics

    @property
    def trials(self) -> int:
        """How many trials the study has (every state)."""
        return sum(self.counts.values())

    @property
    def best_value(self) -> float | None:
        """The best trial's value (single objective), None before one completed."""
        return self.best.value if self.best is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "experiment": self.experiment,
            "run_id": self.run_id,
            "directions": list(self.directions),
            "metrics": list(self.metrics),
            "status": self.status,
            "state": self.state,
            "created": self.created.isoformat(),
            "ended": self.ended.isoformat() if self.ended else None,
            "counts": dict(self.counts),
            "best": self.best.to_dict() if self.best is not None else None,
            "front": [t.to_dict() for t in self.front],
        }


def summarize(config: StudyConfig, run: Any, trials: Sequence[TrialRecord]) -> StudySummary:
    """The summary of a study from its run (a ``RunRecord``) and its trials."""
    counts = dict.fromkeys(STATES, 0)
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    multi = len(config.directions) > 1
    return StudySummary(
        config=config,
        run_id=run.id,
        status=run.status,
        state=run.tags.get("kiln.study.state"),
        created=run.start_time,
        ended=run.end_time,
        counts=counts,
        best=None if multi else rec.best_of(trials, config.directions[0]),
        front=tuple(rec.pareto_of(trials, config.directions)) if multi else (),
    )


def study_summaries(
    experiment: str | None = None, *, limit: int | None = None
) -> list[StudySummary]:
    """Every study (of ``experiment``; the newest ``limit`` when given), newest first,
    each with its trials counted by state and its best trial or Pareto front."""
    from kiln.tracking import runs

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInput(f"limit must be a positive integer or None; got {limit!r}")
    found = rec.list_study_runs(experiment, limit=limit)
    kids = runs.children([r.id for r in found]) if found else {}
    out = []
    for run in found:
        config = StudyConfig.from_json(run.tags[rec.CONFIG_TAG])
        trial_runs = [
            r
            for r in kids.get(run.id, [])
            if r.tags.get(rec.STUDY_RUN_TAG) == run.id and rec.TRIAL_TAG in r.tags
        ]
        out.append(summarize(config, run, rec.trial_records(trial_runs, config)))
    return out
