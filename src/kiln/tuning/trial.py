"""What an objective receives, and one trial run from start to its recorded end.

A :class:`Trial` is Optuna's trial bound to the trial's tracked run: every parameter it
samples is logged on the run as it is sampled (so a study stopped mid-trial knows the
configuration to try again), every ``report`` is a metric by step and a pruning check.
:func:`execute` is the one way a trial runs, in the study's process or in a worker, so a
trial records the same things wherever it ran.
"""

from __future__ import annotations

import io
import math
import pickle
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from optuna.exceptions import TrialPruned  # raise it in an objective to prune the trial

from kiln.core import InvalidInput
from kiln.tuning.records import DISTRIBUTIONS_TAG as DISTRIBUTIONS
from kiln.tuning.records import REASON_TAG as REASON
from kiln.tuning.records import STATE_TAG as STATE

__all__ = [
    "INTERMEDIATE",
    "Outcome",
    "Trial",
    "TrialPruned",
    "execute",
    "failure_reason",
    "load_model",
]

INTERMEDIATE = "intermediate_value"  # the metric ``report`` logs, by step (Optuna's term)
MODEL_FILE = "model/model.bin"
EXAMPLE_FILE = "model/input_example.pkl"


@dataclass
class Outcome:
    """How a trial ended, as plain values: what a worker sends back to the study."""

    state: str  # COMPLETE | PRUNED
    values: list[float] | None
    params: dict[str, Any]
    distributions: dict[str, str]  # name -> Optuna distribution JSON
    intermediate: list[tuple[int, float]] = field(default_factory=list)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "values": self.values,
            "params": self.params,
            "distributions": self.distributions,
            "intermediate": [list(p) for p in self.intermediate],
            "user_attrs": self.user_attrs,
            "system_attrs": self.system_attrs,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            state=data["state"],
            values=data["values"],
            params=dict(data["params"]),
            distributions=dict(data["distributions"]),
            intermediate=[(int(s), float(v)) for s, v in data["intermediate"]],
            user_attrs=dict(data["user_attrs"]),
            system_attrs=dict(data["system_attrs"]),
            reason=data["reason"],
        )


class Trial:
    """One configuration being tried: sample with ``suggest_*`` (or read ``params`` when
    the study has a ``space``), ``report`` intermediate values, log to ``run``."""

    def __init__(self, trial: Any, run: Any, number: int, study: str) -> None:
        self._trial = trial
        self.run = run
        self.number = number
        self.study = study
        self._intermediate: dict[int, float] = {}
        self._user_attrs: dict[str, Any] = {}
        self._distributions: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}  # sampled, not yet on the run
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def __repr__(self) -> str:
        return f"<Trial {self.number} of study {self.study!r}>"

    @property
    def params(self) -> dict[str, Any]:
        """The parameters sampled so far (all of them at once for a study's ``space``)."""
        return dict(self._trial.params)

    def _sampled(self, name: str, value: Any, distribution: Any) -> Any:
        self._distributions[name] = distribution
        with self._lock:
            if self._ended:
                raise InvalidInput(f"trial {self.number} has ended; it samples no more params")
            self._pending[name] = value
        if not self._watched:
            _watch(self)
        return value

    _watched = False

    def flush_params(self) -> None:
        """Put the parameters sampled so far on the run: at a report, at the end, and
        from the study's watcher once a trial runs long, so a study stopped mid-trial
        knows its configuration without a write per ``suggest``."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if pending:
                self.run.log_params(pending)

    def _take_params(self) -> dict[str, Any]:
        """The params not on the run yet, for the run's final write; none after it."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._ended = True
        return pending

    _ended = False

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        from optuna.distributions import FloatDistribution

        value = self._trial.suggest_float(name, low, high, step=step, log=log)
        return float(self._sampled(name, value, FloatDistribution(low, high, log=log, step=step)))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        from optuna.distributions import IntDistribution

        value = self._trial.suggest_int(name, low, high, step=step, log=log)
        return int(self._sampled(name, value, IntDistribution(low, high, log=log, step=step)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        from optuna.distributions import CategoricalDistribution

        value = self._trial.suggest_categorical(name, list(choices))
        return self._sampled(name, value, CategoricalDistribution(list(choices)))

    def report(self, value: float, step: int) -> None:
        """Record an intermediate value (a metric by step) and stop the trial as pruned
        when the study's pruner says it cannot catch up."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"trial.report value must be a number; got {value!r}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInput(f"trial.report step must be an integer >= 0; got {step!r}")
        self.flush_params()
        self._trial.report(float(value), step)
        self._intermediate[step] = float(value)
        self.run.log_metric(INTERMEDIATE, float(value), step=step)
        if self._trial.should_prune():
            raise TrialPruned(f"pruned at step {step} (value {value:.6g})")

    def should_prune(self) -> bool:
        return bool(self._trial.should_prune())

    def set_user_attr(self, key: str, value: Any) -> None:
        """A note on the trial (JSON-serializable), kept with it and shown as a tag."""
        self._trial.set_user_attr(key, value)
        self._user_attrs[key] = value
        self.run.set_tags({f"kiln.trial.attr.{key}": value})

    def log_model(self, model: Any, *, input_example: Any) -> None:
        """Keep this trial's model, so ``study.register_best`` can register the winner's
        (stored in its library's format where the registry has one, else pickled)."""
        from kiln.registry.step_values import dump

        data = dump(model)
        blob = b"K" + data if data is not None else b"P" + _pickle(model)
        example = _pickle(input_example)
        with tempfile.TemporaryDirectory(prefix="kiln-trial-model-") as tmp:
            root = Path(tmp)
            (root / "model").mkdir()
            (root / MODEL_FILE).write_bytes(blob)
            (root / EXAMPLE_FILE).write_bytes(example)
            self.run.log_artifacts(root / "model", "model")


# Trials whose sampled params are not all on their run yet, and the thread that puts
# them there once a trial has run for _FLUSH_AFTER_S: a fast trial writes its params
# once, at its end; a slow one has them stored while it runs.
_FLUSH_AFTER_S = 0.5
_live: set[Trial] = set()
_live_lock = threading.Lock()
_watcher: threading.Thread | None = None


def _watch(trial: Trial) -> None:
    global _watcher
    trial._watched = True
    with _live_lock:
        _live.add(trial)
        if _watcher is None:
            _watcher = threading.Thread(
                target=_flush_slow_trials, name="kiln-trial-params", daemon=True
            )
            _watcher.start()


def _unwatch(trial: Trial) -> None:
    if trial._watched:
        with _live_lock:
            _live.discard(trial)


def _flush_slow_trials() -> None:
    while True:
        time.sleep(_FLUSH_AFTER_S / 2)
        now = time.monotonic()
        with _live_lock:
            slow = [t for t in _live if now - t._started >= _FLUSH_AFTER_S]
        for trial in slow:
            try:
                trial.flush_params()
            except Exception:  # the run ended meanwhile: its end wrote them
                with _live_lock:
                    _live.discard(trial)


def _pickle(value: Any) -> bytes:
    import cloudpickle

    sink = io.BytesIO()
    cloudpickle.dump(value, sink, protocol=pickle.HIGHEST_PROTOCOL)
    return sink.getvalue()


def load_model(blob: bytes) -> Any:
    """The model :meth:`Trial.log_model` kept."""
    if blob[:1] == b"K":
        from kiln.registry.step_values import load

        return load(blob[1:])
    return pickle.loads(blob[1:])


def _values(result: Any, metrics: Sequence[str]) -> list[float]:
    """The objective's return as one number per objective, or a clear refusal."""
    if isinstance(result, Mapping):
        missing = [m for m in metrics if m not in result]
        if missing:
            raise InvalidInput(
                f"the objective returned a dict without {missing[0]!r}; the study's metrics "
                f"are {list(metrics)} (returned keys: {sorted(map(str, result))})"
            )
        raw: list[Any] = [result[m] for m in metrics]
    elif isinstance(result, Sequence) and not isinstance(result, str):
        raw = list(result)
    else:
        raw = [result]
    if len(raw) != len(metrics):
        raise InvalidInput(
            f"the objective returned {len(raw)} value(s) for a study of {len(metrics)} "
            f"objective(s) ({', '.join(metrics)}); got {result!r}"
        )
    out = []
    for name, value in zip(metrics, raw, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"the objective's {name!r} must be a number; got {value!r}"
                ) from None
        if not math.isfinite(value):
            raise InvalidInput(f"the objective's {name!r} is not a finite number: {value!r}")
        out.append(float(value))
    return out


def failure_reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def execute(
    objective: Any,
    optuna_trial: Any,
    run: Any,
    *,
    number: int,
    study: str,
    metrics: Sequence[str],
    space: bool = False,
) -> Outcome:
    """Run the objective on one trial, active as ``kiln.active_run()``, and end its run
    with how it ended (state, reason, values) in the run's final transaction.

    A pruned trial is an outcome; any other exception propagates after the run ended
    FAILED with it, for the caller to record the trial as failed.
    """
    trial = Trial(optuna_trial, run, number, study)
    reason = None
    if space:  # sampled before the objective runs: on the run before it runs
        run.log_params(optuna_trial.params)
    with run:
        try:
            try:
                values: list[float] | None = _values(objective(trial), metrics)
                state = "COMPLETE"
            except TrialPruned as exc:
                values, state = None, "PRUNED"
                reason = str(exc) or "pruned"
            except Exception as exc:
                why = failure_reason(exc)
                failed = {STATE: "FAIL", REASON: why}
                run.end("FAILED", error=why, tags=failed, params=trial._take_params())
                raise
        finally:
            _unwatch(trial)
        tags: dict[str, Any] = {STATE: state}
        if reason:
            tags[REASON] = reason
        distributions = {} if space else _json(trial._distributions)
        if distributions:
            tags[DISTRIBUTIONS] = orjson.dumps(distributions).decode()
        if values is not None:
            for name, value in zip(metrics, values, strict=True):
                run.log_metric(name, value)
        run.end("FINISHED", tags=tags, params=trial._take_params())
    return Outcome(
        state=state,
        values=values,
        params=dict(optuna_trial.params),
        distributions=distributions,
        intermediate=sorted(trial._intermediate.items()),
        user_attrs=dict(trial._user_attrs),
        reason=reason,
    )


_json_cache: dict[Any, str] = {}


def _json(distributions: Mapping[str, Any]) -> dict[str, str]:
    """Distributions as Optuna's JSON, each written once per process (trials of a study
    mostly sample the same ones)."""
    from optuna.distributions import distribution_to_json

    out = {}
    for name, dist in distributions.items():
        text = _json_cache.get(dist)
        if text is None:
            text = _json_cache[dist] = distribution_to_json(dist)
        out[name] = text
    return out
