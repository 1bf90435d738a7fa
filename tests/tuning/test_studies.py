"""Studies in this process: tracking of trials, samplers, pruning, several objectives,
warm starts, registering the winner, and every mistake a user can make."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _objectives as obj
import pytest

import kiln
from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.tuning import Categorical, Float, Int, StudyFailed

HERE = Path(__file__).parent


def kiln_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )


def test_every_trial_is_a_child_run_and_the_best_is_the_best_stored() -> None:
    study = kiln.tune(obj.quadratic, n_trials=25, seed=3, name="quad", experiment="fraud")
    trials = study.trials
    assert [t.number for t in trials] == list(range(25))
    assert {t.state for t in trials} == {"COMPLETE"}
    runs = kiln.runs.search("fraud", filter=f"tags.kiln.study_run = '{study.run_id}'", limit=None)
    assert len(runs) == 25
    assert {r.parent_id for r in runs} == {study.run_id}
    for r in runs:
        assert set(r.params) == {"x", "y", "kind"}
        expected = obj.quadratic(_Fixed(r.params))
        assert r.metrics["value"] == pytest.approx(expected)
    best = min(trials, key=lambda t: t.value or 0)
    assert study.best_trial.number == best.number
    assert study.best.id == best.run_id and study.best_params == dict(best.params)
    history = study.history()
    assert [b for _, _, b in history] == sorted((b for _, _, b in history), reverse=True)
    assert history[-1][2] == study.best_value
    assert set(study.importances()) == {"x", "y", "kind"}
    parent = kiln.runs.get(study.run_id)
    assert parent.status == "FINISHED" and parent.params["n_trials"] == 25
    assert parent.metrics["best_value"] == study.best_value
    assert parent.tags["kiln.study.best_trial"] == best.run_id

    # the same seed samples the same configurations as Optuna itself
    import optuna

    plain = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, constant_liar=True))
    plain.optimize(obj.quadratic, n_trials=25)
    assert [t.values[0] for t in plain.trials] == [t.value for t in trials]


class _Fixed:
    """A trial that hands back stored params, to recompute an objective."""

    def __init__(self, params: dict[str, object]) -> None:
        self.params = params

    def suggest_float(self, name: str, *_: object, **__: object) -> object:
        return self.params[name]

    suggest_int = suggest_categorical = suggest_float


@pytest.mark.parametrize("sampler", ["random", "cmaes", "gp", "qmc"])
def test_each_sampler_runs_a_space_study(sampler: str) -> None:
    space = {"lr": Float(1e-4, 1e-1, log=True), "leaves": Int(8, 64)}
    study = kiln.tune(obj.from_params, space=space, n_trials=8, sampler=sampler, seed=0)
    trials = study.trials
    assert len(trials) == 8 and all(t.state == "COMPLETE" for t in trials)
    for t in trials:
        assert 1e-4 <= t.params["lr"] <= 1e-1 and 8 <= t.params["leaves"] <= 64
        assert t.value == pytest.approx(obj.from_params(_Fixed(dict(t.params))))


def test_a_pruner_stops_bad_trials_early_and_says_why() -> None:
    study = kiln.tune(obj.curves, n_trials=20, pruner="median", seed=1, name="curves")
    pruned = [t for t in study.trials if t.state == "PRUNED"]
    assert pruned, "bad curves should be pruned"
    for t in pruned:
        assert t.reason is not None and t.reason.startswith("pruned at step")
        steps = [p.step for p in kiln.runs.metric_history(t.run_id, "intermediate_value")]
        assert len(steps) < 8  # stopped before the last step
        assert kiln.runs.get(t.run_id).tags["kiln.trial.state"] == "PRUNED"
    complete = [t for t in study.trials if t.state == "COMPLETE"]
    assert min(t.params["offset"] for t in complete) < min(t.params["offset"] for t in pruned)
    unpruned = kiln.tune(obj.curves, n_trials=6, pruner=None, seed=1)
    assert all(t.state == "COMPLETE" for t in unpruned.trials)


def test_several_objectives_have_a_pareto_front() -> None:
    study = kiln.tune(
        obj.auc_vs_latency,
        n_trials=20,
        directions=["maximize", "minimize"],
        metrics=["auc", "latency_ms"],
        sampler="nsga2",
        pruner=None,
        seed=0,
    )
    done = study.trials
    front = study.pareto_front
    assert front
    for t in done:
        auc, lat = t.values or ()
        beaten = any(
            o.values[0] >= auc and o.values[1] <= lat and o.values != t.values  # type: ignore[index]
            for o in done
        )
        assert (t in front) == (not beaten)
    with pytest.raises(InvalidInput, match="Pareto front"):
        _ = study.best_trial
    assert kiln.runs.get(front[0].run_id).metrics.keys() >= {"auc", "latency_ms"}


def test_failed_trials_are_recorded_and_the_study_goes_on() -> None:
    study = kiln.tune(obj.flaky, n_trials=12, sampler="random", seed=5)
    failed = [t for t in study.trials if t.state == "FAIL"]
    assert failed and len(study.trials) == 12
    for t in failed:
        assert t.reason is not None and t.reason.startswith("RuntimeError: diverged at x=")
        assert kiln.runs.get(t.run_id).status == "FAILED"
        assert t.params["x"] > 0.5  # the configuration that failed is on its run
    assert (study.best_value or 1.0) <= 0.5

    with pytest.raises(
        StudyFailed, match=r"first 5 trials failed.*KeyError: \"no column 'label'\""
    ):
        kiln.tune(obj.broken, n_trials=50, name="broken")
    assert kiln.runs.get(kiln.tuning.load_study("broken").run_id).status == "FAILED"
    assert len(kiln.tuning.load_study("broken").trials) == 5


def test_warm_start_and_register_the_best_model() -> None:
    kiln.tune(obj.quadratic, n_trials=15, seed=0, name="q-1")
    warm = kiln.tune(obj.quadratic, n_trials=4, seed=1, name="q-2", warm_start="q-1")
    cold = kiln.tune(obj.quadratic, n_trials=4, seed=1, name="q-3")
    assert len(warm.trials) == 4  # the earlier trials inform sampling, not the count
    # past TPE's 10 random start-up trials only with the earlier study's 15 behind it
    assert [t.params for t in warm.trials] != [t.params for t in cold.trials]
    assert kiln.runs.get(warm.run_id).tags["kiln.study.config"].count('"warm_start":"q-1"') == 1

    first = kiln.tune(obj.with_model, n_trials=4, seed=0, name="lr-1", direction="maximize")
    mv = first.register_best("churn")
    assert mv.version == 1
    assert mv.run_id == first.best_trial.run_id
    model = kiln.models.load("churn/1")
    assert model.predict(__import__("numpy").zeros((2, 3))).shape == (2,)
    with pytest.raises(NotFound, match="kept no model"):
        kiln.tune(obj.quadratic, n_trials=2, name="nomodel").register_best("x")


def test_mistakes_are_named() -> None:
    with pytest.raises(InvalidInput, match="unknown sampler 'bayes'"):
        kiln.tune(obj.quadratic, sampler="bayes")
    with pytest.raises(InvalidInput, match="multi-objective study takes pruner=None"):
        kiln.tune(obj.auc_vs_latency, directions=["maximize", "minimize"])
    with pytest.raises(InvalidInput, match="n_trials must be an integer >= 1; got 0"):
        kiln.tune(obj.quadratic, n_trials=0)
    with pytest.raises(InvalidInput, match="direction must be 'minimize' or 'maximize'"):
        kiln.tune(obj.quadratic, direction="max")
    with pytest.raises(InvalidInput, match="executor 'inline' runs one trial at a time"):
        kiln.tune(obj.quadratic, parallel=2, executor="inline")
    with pytest.raises(InvalidInput, match="unknown executor 'threads'"):
        kiln.tune(obj.quadratic, executor="threads")
    with pytest.raises(InvalidInput, match=r"Float low must be <= high; got low=2.0, high=1.0"):
        Float(2, 1)
    with pytest.raises(InvalidInput, match=r"Float\(log=True\) needs low > 0"):
        Float(0, 1, log=True)
    with pytest.raises(InvalidInput, match="Categorical needs a non-empty list"):
        Categorical([])
    with pytest.raises(InvalidInput, match=r"space\['lr'\] must be kiln.tuning.Float"):
        kiln.tune(obj.from_params, space={"lr": (0.1, 0.2)})  # type: ignore[dict-item]
    with pytest.raises(NotFound, match="no study named 'nope'"):
        kiln.tuning.load_study("nope")
    with pytest.raises(NotFound, match="no study named 'missing'"):
        kiln.tune(obj.quadratic, warm_start="missing")
    kiln.tune(obj.quadratic, n_trials=1, name="taken")
    with pytest.raises(Conflict, match=r"a study named 'taken' exists; continue it with"):
        kiln.tune(obj.quadratic, n_trials=1, name="taken")
    # a wrong return is the trial's failure, named
    with pytest.raises(StudyFailed, match="its first 1 trials failed"):
        kiln.tune(lambda t: (1.0, 2.0), n_trials=1, name="two-values")
    (trial,) = kiln.tuning.load_study("two-values").trials
    assert trial.state == "FAIL"
    assert trial.reason == (
        "InvalidInput: the objective returned 2 value(s) for a study of 1 objective(s) "
        "(value); got (1.0, 2.0)"
    )


def test_the_command_line_shows_lists_and_refuses_mistakes() -> None:
    kiln.tune(obj.quadratic, n_trials=12, seed=2, name="cli-study")
    shown = kiln_cli("tune", "show", "cli-study", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["trials"] == {"COMPLETE": 12}
    assert data["best"][0]["number"] == kiln.tuning.load_study("cli-study").best_trial.number
    assert set(data["importances"]) == {"x", "y", "kind"}
    assert data["history"][-1]["best"] == data["best"][0]["values"][0]
    text = kiln_cli("tune", "show", "cli-study")
    assert "best 10 trials" in text.stdout and "parameter importances" in text.stdout
    assert "optimization history" in text.stdout
    listed = json.loads(kiln_cli("tune", "list", "--json").stdout)
    assert [(s["name"], s["trials"]) for s in listed] == [("cli-study", {"COMPLETE": 12})]
    missing = kiln_cli("tune", "show", "nope")
    assert missing.returncode == 2
    assert missing.stderr.startswith("kiln: error: no study named 'nope'")
