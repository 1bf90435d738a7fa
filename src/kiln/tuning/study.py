"""Studies: many trials of one objective, sampled by Optuna, each a tracked run.

The study's process owns an in-memory Optuna study (Optuna's samplers and pruners,
never re-implemented) and writes nothing to it that is not also on the runs: a study
is rebuilt from its runs to be shown, warm-started from or resumed after its process
died. Trials run in this process (``parallel=1``) or on a flow executor, local processes
or Ray, where each samples against a copy of the study (:mod:`kiln.tuning._remote`).
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from kiln.core import Conflict, InvalidInput, KilnError, NotFound
from kiln.tuning import records as rec
from kiln.tuning._algorithms import check_pruner, check_sampler, make_pruner, make_sampler
from kiln.tuning.records import StudyConfig, TrialRecord
from kiln.tuning.spaces import Space, space_from_json, space_to_json, to_optuna
from kiln.tuning.summary import StudySummary, summarize
from kiln.tuning.trial import Outcome, execute, failure_reason, load_model

__all__ = ["Study", "StudyFailed", "list_studies", "load_study", "resume", "tune"]

DEFAULT_EXPERIMENT = "tuning"
OBJECTIVE_FILE = "objective.pkl"
_ENTRY = "kiln.tuning._remote:run_trial"
_FAIL_FAST = 5  # this many failures before any trial ends well: the objective is broken
Callback = Callable[["Study", TrialRecord], None]


class StudyFailed(KilnError):
    """The study stopped: its first trials all failed (the objective is likely broken)."""


def _directions(direction: str | None, directions: Sequence[str] | None) -> tuple[str, ...]:
    if directions is None:
        out: tuple[str, ...] = (direction or "minimize",)
    elif direction is not None:
        raise InvalidInput("give direction= (one objective) or directions= (several), not both")
    elif isinstance(directions, str) or not directions:
        raise InvalidInput(
            f"directions must be a list like ['maximize', 'minimize']; got {directions!r}"
        )
    else:
        out = tuple(directions)
    for d in out:
        if d not in ("minimize", "maximize"):
            raise InvalidInput(f"direction must be 'minimize' or 'maximize'; got {d!r}")
    return out


def _metrics(metrics: Sequence[str] | str | None, count: int) -> tuple[str, ...]:
    if metrics is None:
        return ("value",) if count == 1 else tuple(f"value_{i}" for i in range(count))
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if len(names) != count or len(set(names)) != count:
        raise InvalidInput(
            f"metrics must name each of the {count} objective(s) once; got {list(names)}"
        )
    from kiln.tuning.trial import INTERMEDIATE

    for name in names:
        if not isinstance(name, str) or not name or name == INTERMEDIATE:
            raise InvalidInput(f"metric names must be non-empty strings; got {name!r}")
    return names


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be an integer >= 1; got {value!r}")
    return value


def _executor_name(executor: Any, parallel: int) -> str:
    from kiln.flows.executors import parse_executor

    if executor is None:
        return "inline" if parallel == 1 else "processes"
    if not isinstance(executor, str):
        raise InvalidInput(
            f"executor must be 'inline', 'processes', 'ray', 'ray:auto' or 'ray://HOST:PORT'; "
            f"got {executor!r}"
        )
    kind, _ = parse_executor(executor)
    if kind == "inline" and parallel != 1:
        raise InvalidInput(f"executor 'inline' runs one trial at a time; got parallel={parallel}")
    return executor


def _check_gp(sampler: str) -> None:
    if sampler == "gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            from kiln.core import MissingDependency

            raise MissingDependency(
                "sampler 'gp' needs PyTorch (Optuna's Gaussian process); pip install 'kiln[torch]'"
            ) from None


class Study:
    """A study as stored. ``kiln.tune`` returns one; ``load_study(name)`` reads one back."""

    def __init__(self, config: StudyConfig, run_id: str) -> None:
        self.config = config
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<Study {self.name!r} ({self.config.sampler}, {self.config.n_trials} trials)>"

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def directions(self) -> tuple[str, ...]:
        return self.config.directions

    @property
    def trials(self) -> list[TrialRecord]:
        """Every trial as stored now, by number (an interrupted one and its retry both)."""
        return rec.load_trials(self.run_id, self.config)

    def _objective(self, objective: int | str) -> int:
        """The index of ``objective`` (an index or one of the study's metric names)."""
        metrics = self.config.metrics
        if isinstance(objective, str) and objective in metrics:
            return metrics.index(objective)
        is_int = isinstance(objective, int) and not isinstance(objective, bool)
        if is_int and 0 <= int(objective) < len(metrics):
            return int(objective)
        raise InvalidInput(
            f"objective must be an index below {len(metrics)} or a metric of study "
            f"{self.name!r} ({', '.join(metrics)}); got {objective!r}"
        )

    @property
    def best_trial(self) -> TrialRecord:
        """The best completed trial of a single-objective study (lowest number on ties)."""
        if len(self.directions) > 1:
            raise InvalidInput(
                f"study {self.name!r} has {len(self.directions)} objectives: it has a Pareto "
                "front (study.pareto_front), not one best trial"
            )
        best = rec.best_of(self.trials, self.directions[0])
        if best is None:
            raise NotFound(f"study {self.name!r} has no completed trial yet")
        return best

    @property
    def best(self) -> Any:
        """The best trial's run (a ``RunRecord``): its params, metrics and artifacts."""
        from kiln.tracking import runs

        return runs.get(self.best_trial.run_id)

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best_trial.params)

    @property
    def best_value(self) -> float | None:
        return self.best_trial.value

    @property
    def pareto_front(self) -> list[TrialRecord]:
        """Completed trials no other completed trial beats on every objective."""
        return rec.pareto_of(self.trials, self.directions)

    def history(
        self,
        *,
        objective: int | str | None = None,
        trials: Sequence[TrialRecord] | None = None,
    ) -> list[tuple[int, float, float]]:
        """(trial number, value, best so far) of each completed trial, in order.

        A study of several objectives names one: ``objective`` is its index or metric
        name, and "best so far" is then best on that objective alone. ``trials`` are
        the study's trials read before (``study.trials``), so several views agree on one
        reading; read now when not given.
        """
        if objective is None:
            if len(self.directions) > 1:
                raise InvalidInput(
                    "a multi-objective study has no single history; pass objective= "
                    f"(one of {', '.join(self.config.metrics)}) or see pareto_front"
                )
            objective = 0
        index = self._objective(objective)
        better = max if self.directions[index] == "maximize" else min
        out: list[tuple[int, float, float]] = []
        best: float | None = None
        for t in self.trials if trials is None else trials:
            if t.state != "COMPLETE" or not t.values:
                continue
            value = float(t.values[index])
            best = value if best is None else better(best, value)
            out.append((t.number, value, best))
        return out

    def to_optuna(self) -> Any:
        """The study as an Optuna study in memory (its finished trials), for Optuna's own
        analysis and plots."""
        study, _ = _optuna_study(self.config, self.trials)
        return study

    def importances(
        self, *, objective: int | str = 0, trials: Sequence[TrialRecord] | None = None
    ) -> dict[str, float]:
        """How much each parameter mattered to an objective (the first unless named by
        index or metric name): Optuna's evaluator (fANOVA) on the completed trials,
        largest first; empty until two trials completed with params that vary.
        ``trials`` as for :meth:`history`."""
        import optuna

        index = self._objective(objective)
        study, _ = _optuna_study(self.config, self.trials if trials is None else trials)
        done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if len(done) < 2 or not any(t.params for t in done):
            return {}
        target = (lambda t: t.values[index]) if len(self.directions) > 1 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                found = optuna.importance.get_param_importances(study, target=target)
            except (ValueError, RuntimeError):  # e.g. every trial alike: nothing to explain
                return {}
        return {str(k): float(v) for k, v in found.items()}

    def summary(self, *, trials: Sequence[TrialRecord] | None = None) -> StudySummary:
        """The study at a glance as stored now: its run's status and times, its trials
        counted by state, the best trial or the Pareto front. ``trials`` as for
        :meth:`history`."""
        from kiln.tracking import runs

        record = runs.get(self.run_id)
        return summarize(self.config, record, self.trials if trials is None else trials)

    def register_best(self, model_name: str, **register: Any) -> Any:
        """Register the best trial's model (kept with ``trial.log_model``) as the next
        version of ``model_name``, with lineage to the trial's run."""
        from kiln.registry import models
        from kiln.tracking import runs
        from kiln.tuning.trial import EXAMPLE_FILE, MODEL_FILE

        best = self.best_trial
        kept = {a.path for a in runs.list_artifacts(best.run_id, "model")}
        if MODEL_FILE not in kept:
            raise NotFound(
                f"trial {best.number} of study {self.name!r} (run {best.run_id}) kept no "
                "model; call trial.log_model(model, input_example=...) in the objective"
            )
        with tempfile.TemporaryDirectory(prefix="kiln-best-") as tmp:
            root = runs.download_artifacts(best.run_id, "model", tmp)
            model = load_model((root / Path(MODEL_FILE).name).read_bytes())
            example = pickle.loads((root / Path(EXAMPLE_FILE).name).read_bytes())
        register.setdefault("input_example", example)
        register.setdefault("tags", {})
        register["tags"] = {**register["tags"], "kiln.study": self.name, "kiln.trial": best.number}
        return models.register(model_name, model, run=best.run_id, **register)


def _optuna_study(
    config: StudyConfig, trials: Sequence[TrialRecord], *, for_pruning: bool = False
) -> tuple[Any, Any]:
    """An in-memory Optuna study holding the finished trials (warm-start ones first);
    with their reported values when a pruner will compare against them."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    seed = config.seed
    reports = for_pruning and config.pruner != "none"
    study = optuna.create_study(
        storage=storage,
        sampler=make_sampler(config.sampler, seed),
        pruner=make_pruner(config.pruner),
        directions=list(config.directions),  # type: ignore[arg-type]  # checked words
    )
    states = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAIL}
    for t in trials:
        if t.state not in states or t.interrupted:
            continue
        dists = space_from_json(t.distributions or config.space or {})
        params = {k: v for k, v in t.params.items() if k in dists}
        study.add_trial(
            create_trial(
                state=states[t.state],
                values=list(t.values) if t.state == "COMPLETE" and t.values else None,
                params=params,
                distributions={k: dists[k] for k in params},
                intermediate_values=dict(_intermediate(t)) if reports and t.state != "FAIL" else {},
            )
        )
    return study, storage


def _intermediate(t: TrialRecord) -> list[tuple[int, float]]:
    from kiln.tracking import runs
    from kiln.tuning.trial import INTERMEDIATE

    try:
        return [(p.step, p.value) for p in runs.metric_history(t.run_id, INTERMEDIATE)]
    except NotFound:  # it reported nothing
        return []


def _warm_trials(name: str | None) -> list[TrialRecord]:
    if name is None:
        return []
    earlier = load_study(name)
    return [t for t in earlier.trials if t.state in ("COMPLETE", "PRUNED")]


class _Driver:
    """Runs a study's remaining trials and records each end; one per study process."""

    def __init__(
        self,
        study: Study,
        objective: Callable[..., Any],
        run: Any,
        trials: Sequence[TrialRecord],
        callbacks: Sequence[Callback],
    ) -> None:
        self.study = study
        self.config = study.config
        self.objective = objective
        self.run = run
        self.callbacks = list(callbacks)
        warm = _warm_trials(self.config.warm_start)
        self.optuna, self.storage = _optuna_study(self.config, [*warm, *trials], for_pruning=True)
        self.study_id = self.storage.get_study_id_from_name(self.optuna.study_name)
        own = [t for t in trials if not t.interrupted]
        self.done = sum(1 for t in own if t.state in ("COMPLETE", "PRUNED", "FAIL"))
        self.ended_well = any(t.state in ("COMPLETE", "PRUNED") for t in trials)
        self.failures: list[str] = []
        self.next_number = max((t.number for t in trials), default=-1) + 1
        self.space = space_from_json(self.config.space) if self.config.space else None

    # -- one trial's bookkeeping ---------------------------------------------------------

    def _tags(self, number: int) -> dict[str, Any]:
        return {rec.STUDY_RUN_TAG: self.run.id, rec.TRIAL_TAG: number}

    def _ended(
        self,
        number: int,
        run_id: str,
        state: str,
        values: Any,
        reason: str | None,
        params: Mapping[str, Any],
    ) -> None:
        self.done += 1
        if state == "FAIL":
            self.failures.append(reason or "failed")
        else:
            self.ended_well = True
        if self.callbacks:
            from datetime import datetime

            now = datetime.now(UTC)
            record = TrialRecord(
                number,
                state,
                tuple(values) if values else None,
                dict(params),
                run_id,
                reason,
                now,
                now,
            )
            for callback in self.callbacks:
                callback(self.study, record)

    def _broken(self) -> bool:
        return not self.ended_well and len(self.failures) >= min(_FAIL_FAST, self.config.n_trials)

    # -- in this process -----------------------------------------------------------------

    def run_inline(self, deadline: float) -> None:
        import optuna

        from kiln.tracking import start_run

        client = self.run.client
        while self.done < self.config.n_trials and time.monotonic() < deadline:
            if self._broken():
                return
            trial = self.optuna.ask(fixed_distributions=self.space)
            number = self.next_number
            self.next_number += 1
            run = start_run(
                self.config.experiment,
                name=f"trial-{number}",
                parent=self.run.id,
                tags=self._tags(number),
                client=client,
            )
            try:
                outcome = execute(
                    self.objective,
                    trial,
                    run,
                    number=number,
                    study=self.config.name,
                    metrics=self.config.metrics,
                    space=self.space is not None,
                )
            except Exception as exc:
                self.optuna.tell(trial, state=optuna.trial.TrialState.FAIL)
                self._ended(number, run.id, "FAIL", None, failure_reason(exc), trial.params)
                continue
            if outcome.state == "PRUNED":
                self.optuna.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                self.optuna.tell(trial, outcome.values)
            self._ended(
                number, run.id, outcome.state, outcome.values, outcome.reason, outcome.params
            )

    # -- on an executor ------------------------------------------------------------------

    def run_on(self, executor: Any, deadline: float) -> None:
        import cloudpickle

        from kiln.flows import TaskSpec, settings_snapshot
        from kiln.flows.steps import Resources

        objective = cloudpickle.dumps(self.objective)
        fn = cloudpickle.dumps(_entry())
        settings = settings_snapshot()
        resources = dict(Resources.of(self.config.resources or None).__dict__)
        if resources.get("memory") is None:
            resources.pop("memory", None)
        running: dict[str, tuple[int, int, Any]] = {}  # key -> (number, optuna number, trial)
        launched = self.done
        try:
            while self.done < self.config.n_trials or running:
                while (
                    launched < self.config.n_trials
                    and executor.slots() > 0
                    and time.monotonic() < deadline
                    and not self._broken()
                ):
                    trial = self.optuna.ask(fixed_distributions=self.space)
                    number = self.next_number
                    self.next_number += 1
                    launched += 1
                    payload = {
                        "objective": objective,
                        "snapshot": pickle.dumps(self.optuna.get_trials(deepcopy=False)),
                        "number": trial.number,
                        "index": number,
                        "study": self.config.name,
                        "sampler": self.config.sampler,
                        "pruner": self.config.pruner,
                        "seed": self.config.seed,
                        "directions": list(self.config.directions),
                        "metrics": list(self.config.metrics),
                        "space": dict(self.config.space) if self.config.space else None,
                    }
                    key = f"trial-{number}"
                    spec = TaskSpec(
                        run_id=self.run.id,
                        task=key,
                        step="kiln.tuning.trial",
                        fn=fn,
                        args={"payload": ("const", payload)},
                        settings=settings,
                        experiment=self.config.experiment,
                        resources=resources,
                        tags=self._tags(number),
                    )
                    executor.submit(key, spec, self.config.trial_timeout_s)
                    running[key] = (number, trial.number, trial)
                if not running:
                    break  # past the deadline, or broken: nothing more will start
                for key, result in executor.collect(0.5):
                    number, optuna_number, trial = running.pop(key)
                    self._collected(number, optuna_number, trial, result)
        finally:
            for key in running:
                executor.cancel(key)

    def _collected(self, number: int, optuna_number: int, trial: Any, result: Any) -> None:
        import optuna

        from kiln.flows import task_output

        if result.ok:
            outcome = Outcome.from_dict(task_output(result, self.run.client.blobs))
            self._apply(optuna_number, trial, outcome)
            self._ended(
                number,
                result.child_run_id or "",
                outcome.state,
                outcome.values,
                outcome.reason,
                outcome.params,
            )
            return
        run_id = result.child_run_id or _trial_run(self.run.id, number, self.config)
        reason = (result.error or "failed").splitlines()[0]
        if run_id:
            _mark_failed(run_id, reason)
        self.optuna.tell(optuna_number, state=optuna.trial.TrialState.FAIL)
        self._ended(number, run_id or "", "FAIL", None, reason, trial.params)

    def _apply(self, optuna_number: int, trial: Any, outcome: Outcome) -> None:
        """A worker's trial onto the study here: its sampled params, reports and notes."""
        import optuna

        storage = self.storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study_id, optuna_number)
        dists = space_from_json(outcome.distributions)
        have = trial.params
        for name, value in outcome.params.items():
            if name not in have and name in dists:
                dist = dists[name]
                storage.set_trial_param(trial_id, name, dist.to_internal_repr(value), dist)
        for step, value in outcome.intermediate:
            storage.set_trial_intermediate_value(trial_id, step, value)
        for key, value in outcome.user_attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        for key, value in outcome.system_attrs.items():
            storage.set_trial_system_attr(trial_id, key, value)
        if outcome.state == "PRUNED":
            self.optuna.tell(optuna_number, state=optuna.trial.TrialState.PRUNED)
        else:
            self.optuna.tell(optuna_number, outcome.values)


def _entry() -> Any:
    from kiln.tuning._remote import run_trial

    return run_trial


def _trial_run(study_run_id: str, number: int, config: StudyConfig) -> str | None:
    """The run a worker made for a trial before it died (the executor could not say)."""
    from kiln.tracking import runs

    found = runs.search(
        config.experiment,
        filter=f"tags.{rec.STUDY_RUN_TAG} = '{study_run_id}' and tags.{rec.TRIAL_TAG} = '{number}'",
        limit=1,
    )
    return found[0].id if found else None


def _mark_failed(run_id: str, reason: str, *, interrupted: bool = False) -> None:
    """A trial's run as failed with its reason, whether or not its process ended it."""
    from kiln.tracking import reopen_run, runs

    tags = {rec.STATE_TAG: "FAIL", rec.REASON_TAG: reason}
    if interrupted:
        tags[rec.INTERRUPTED_TAG] = "true"
    if runs.get(run_id).status != "FAILED":
        run = reopen_run(run_id)
        run.set_tags(tags)
        run.end("FAILED", error=reason)
    else:
        runs.set_tags(run_id, tags)


def _driver_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _driver_alive(tag: str | None) -> bool:
    """Whether the process that ran a study still runs (known only on its own machine)."""
    if not tag or ":" not in tag:
        return False
    host, _, pid = tag.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: trust the run's heartbeat instead
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish(driver: _Driver, run: Any, deadline: float) -> None:
    """After the loop: the study's verdict on its run, then the run's end."""
    study = driver.study
    if driver._broken():
        first = driver.failures[0]
        message = (
            f"study {study.name!r} stopped: its first {len(driver.failures)} trials failed "
            f"and none completed; first failure: {first}"
        )
        run.set_tags({"kiln.study.state": "failed"})
        run.end("FAILED", error=message)
        raise StudyFailed(message)
    timed_out = driver.done < driver.config.n_trials and time.monotonic() >= deadline
    tags: dict[str, Any] = {"kiln.study.state": "timed_out" if timed_out else "finished"}
    if len(study.directions) == 1:
        try:
            best = study.best_trial
        except NotFound:
            best = None
        if best is not None:
            run.log_metric(f"best_{driver.config.metrics[0]}", float(best.value or 0.0))
            tags["kiln.study.best_trial"] = best.run_id
    run.set_tags(tags)
    run.end("FINISHED")


def _run_study(
    study: Study,
    objective: Callable[..., Any],
    run: Any,
    trials: Sequence[TrialRecord],
    callbacks: Sequence[Callback],
    timeout_s: float | None,
    retry: Sequence[Mapping[str, Any]] = (),
) -> Study:
    from kiln.flows import open_executor

    driver = _Driver(study, objective, run, trials, callbacks)
    for params in retry:  # asked before any new configuration
        driver.optuna.enqueue_trial(dict(params), skip_if_exists=False)
    deadline = time.monotonic() + timeout_s if timeout_s else float("inf")
    try:
        if study.config.executor == "inline":
            driver.run_inline(deadline)
        else:
            executor = open_executor(study.config.executor, study.config.parallel)
            try:
                driver.run_on(executor, deadline)
            finally:
                executor.close()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            run.end("KILLED", error="KeyboardInterrupt: resume with kiln tune resume")
        else:
            run.end("FAILED", error=failure_reason(exc))
        raise
    _finish(driver, run, deadline)
    return study


def tune(
    objective: Callable[..., Any],
    *,
    space: Space | None = None,
    n_trials: int = 100,
    direction: str | None = None,
    directions: Sequence[str] | None = None,
    metrics: Sequence[str] | str | None = None,
    sampler: str = "tpe",
    pruner: str | None = "median",
    parallel: int = 1,
    executor: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    name: str | None = None,
    seed: int | None = None,
    warm_start: str | None = None,
    resources: Mapping[str, float] | None = None,
    trial_timeout: float | str | None = None,
    timeout: float | str | None = None,
    callbacks: Sequence[Callback] = (),
) -> Study:
    """Run a study of ``objective`` and return it when ``n_trials`` trials have ended.

    ``objective(trial)`` returns a number (or one per objective, or a dict holding each
    of ``metrics``); it samples with ``trial.suggest_*``, or reads ``trial.params`` when
    ``space`` is given. ``trial.report(value, step)`` logs and prunes. Trials run one at a
    time in this process, or ``parallel`` at a time on ``executor`` (``processes`` or
    ``ray``). The study is a run of ``experiment`` and each trial a child run; after a
    crash ``resume(name)`` continues it.
    """
    from kiln.flows.steps import Resources, parse_seconds
    from kiln.tracking import start_run

    if not callable(objective):
        raise InvalidInput(f"objective must be a function taking a trial; got {objective!r}")
    dirs = _directions(direction, directions)
    names = _metrics(metrics, len(dirs))
    sampler = check_sampler(sampler, len(dirs))
    pruner_name = check_pruner(pruner, len(dirs))
    _check_gp(sampler)
    _positive_int("n_trials", n_trials)
    _positive_int("parallel", parallel)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidInput(f"seed must be an integer or None; got {seed!r}")
    distributions = to_optuna(space)
    wanted = Resources.of(resources)
    config = StudyConfig(
        name=name or f"{getattr(objective, '__name__', 'study')}-{os.urandom(3).hex()}",
        experiment=experiment,
        directions=dirs,
        metrics=names,
        sampler=sampler,
        pruner=pruner_name,
        seed=seed,
        n_trials=n_trials,
        space=space_to_json(distributions) if distributions else None,
        warm_start=warm_start,
        parallel=parallel,
        executor=_executor_name(executor, parallel),
        resources={"cpus": wanted.cpus, "gpus": wanted.gpus},
        trial_timeout_s=parse_seconds(trial_timeout, "trial_timeout"),
    )
    timeout_s = parse_seconds(timeout, "timeout")
    if not isinstance(config.name, str) or not config.name.strip():
        raise InvalidInput(f"name must be a non-empty string; got {name!r}")
    try:
        rec.find_study_run(config.name)
    except NotFound:
        pass
    else:
        raise Conflict(
            f"a study named {config.name!r} exists; continue it with "
            f"kiln.tuning.resume({config.name!r}) or pick another name"
        )
    if warm_start is not None:
        load_study(warm_start)  # NotFound now, not after the study started
    run = start_run(
        experiment,
        name=config.name,
        tags={
            rec.STUDY_TAG: config.name,
            rec.CONFIG_TAG: config.to_json(),
            rec.DRIVER_TAG: _driver_tag(),
        },
    )
    run.log_params(
        {
            "sampler": sampler,
            "pruner": pruner_name,
            "n_trials": n_trials,
            "directions": ",".join(dirs),
            "parallel": parallel,
            "executor": config.executor,
        }
    )
    _keep_objective(run, objective)
    return _run_study(Study(config, run.id), objective, run, [], callbacks, timeout_s)


def _keep_objective(run: Any, objective: Callable[..., Any]) -> None:
    """The objective, pickled (by value where it must be), so ``kiln tune resume`` can run
    it in another process; one that cannot be pickled is resumed from Python only."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(objective)
    except Exception as exc:
        run.set_tags({"kiln.study.objective": f"not stored: {failure_reason(exc)}"})
        return
    with tempfile.TemporaryDirectory(prefix="kiln-study-") as tmp:
        path = Path(tmp) / OBJECTIVE_FILE
        path.write_bytes(data)
        run.log_artifact(path)
    ref = f"{getattr(objective, '__module__', '?')}:{getattr(objective, '__qualname__', '?')}"
    run.set_tags({"kiln.study.objective": ref})


def _stored_objective(study: Study) -> Callable[..., Any]:
    import cloudpickle

    from kiln.tracking import runs

    found = {a.path for a in runs.list_artifacts(study.run_id, OBJECTIVE_FILE)}
    if OBJECTIVE_FILE not in found:
        note = runs.get(study.run_id).tags.get("kiln.study.objective", "")
        raise NotFound(
            f"study {study.name!r} has no stored objective ({note}); resume it from Python "
            f"with kiln.tuning.resume({study.name!r}, objective=...)"
        )
    with tempfile.TemporaryDirectory(prefix="kiln-study-") as tmp:
        path = runs.download_artifacts(study.run_id, OBJECTIVE_FILE, tmp)
        try:
            fn: Callable[..., Any] = cloudpickle.loads(path.read_bytes())
        except Exception as exc:
            raise InvalidInput(
                f"study {study.name!r}: its objective cannot be loaded here "
                f"({failure_reason(exc)}); resume with kiln.tuning.resume(name, objective=...)"
            ) from None
    return fn


def load_study(name: str) -> Study:
    """The study called ``name``, as stored."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"a study name must be a non-empty string; got {name!r}")
    run = rec.find_study_run(name)
    return Study(StudyConfig.from_json(run.tags[rec.CONFIG_TAG]), run.id)


def list_studies(experiment: str | None = None) -> list[Study]:
    """Every study (of ``experiment``), newest first."""
    return [
        Study(StudyConfig.from_json(r.tags[rec.CONFIG_TAG]), r.id)
        for r in rec.list_study_runs(experiment)
    ]


def resume(
    name: str,
    *,
    objective: Callable[..., Any] | None = None,
    parallel: int | None = None,
    executor: str | None = None,
    callbacks: Sequence[Callback] = (),
    timeout: float | str | None = None,
) -> Study:
    """Continue a study that stopped: finished trials stay, trials that were running are
    marked failed and their configurations tried again, until ``n_trials`` have ended."""
    from dataclasses import replace

    from kiln.flows.steps import parse_seconds
    from kiln.tracking import reopen_run, runs

    study = load_study(name)
    record = runs.get(study.run_id)
    driver = record.tags.get(rec.DRIVER_TAG)
    if record.status == "RUNNING" and _driver_alive(driver):
        raise Conflict(f"study {name!r} is running (process {driver}); it cannot be resumed twice")
    config = study.config
    if parallel is not None or executor is not None:
        par = _positive_int("parallel", parallel if parallel is not None else config.parallel)
        ex = _executor_name(executor if executor is not None else config.executor, par)
        config = replace(config, parallel=par, executor=ex)
    fn = objective if objective is not None else _stored_objective(study)
    trials = study.trials
    retry = []
    for t in trials:
        if t.state == "RUNNING":
            _mark_failed(
                t.run_id,
                "interrupted: the study stopped while this trial ran; its configuration "
                "is tried again",
                interrupted=True,
            )
            if t.params:
                retry.append(dict(t.params))
    trials = study.trials
    run = reopen_run(study.run_id)
    run.set_tags({rec.DRIVER_TAG: _driver_tag(), rec.CONFIG_TAG: config.to_json()})
    study = Study(config, study.run_id)
    timeout_s = parse_seconds(timeout, "timeout")
    return _run_study(study, fn, run, trials, callbacks, timeout_s, retry)
