"""Studies at a glance: study_summaries() and Study.summary() count trials by state and
name the best trial or the Pareto front; history and importances per objective, and over
trials read once; on SQLite and PostgreSQL."""

from __future__ import annotations

import _objectives as obj
import pytest

import kiln
from kiln.errors import InvalidInput
from kiln.tuning import StudySummary


def _studies() -> tuple[kiln.tuning.Study, kiln.tuning.Study, kiln.tuning.Study]:
    single = kiln.tune(obj.quadratic, n_trials=8, seed=3, name="quad", experiment="fraud")
    flaky = kiln.tune(obj.flaky, n_trials=10, sampler="random", seed=5, name="flaky")
    multi = kiln.tune(
        obj.auc_vs_latency,
        n_trials=10,
        directions=["maximize", "minimize"],
        metrics=["auc", "latency_ms"],
        sampler="nsga2",
        pruner=None,
        seed=0,
        name="multi",
    )
    return single, flaky, multi


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_summaries_count_trials_by_state_and_name_the_best(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "postgresql":
        monkeypatch.setenv("KILN_DB_URL", request.getfixturevalue("pg_url"))
        kiln.core.reset_settings()
    single, flaky, multi = _studies()
    with kiln.start_run(experiment="fraud", name="not-a-study"):
        pass
    found = kiln.tuning.study_summaries()
    assert [s.name for s in found] == ["multi", "flaky", "quad"]  # newest first
    by_name = {s.name: s for s in found}
    quad = by_name["quad"]
    assert isinstance(quad, StudySummary)
    assert quad.experiment == "fraud" and quad.run_id == single.run_id
    assert quad.counts == {"COMPLETE": 8, "PRUNED": 0, "FAIL": 0, "RUNNING": 0}
    assert quad.trials == 8 and quad.status == "FINISHED" and quad.state == "finished"
    assert quad.best is not None and quad.best.number == single.best_trial.number
    assert quad.best_value == single.best_value and quad.front == ()
    assert quad.created <= (quad.ended or quad.created)
    failed = sum(t.state == "FAIL" for t in flaky.trials)
    assert failed and by_name["flaky"].counts["FAIL"] == failed
    assert by_name["flaky"].counts["COMPLETE"] == 10 - failed
    m = by_name["multi"]
    assert m.best is None and m.best_value is None
    assert m.directions == ("maximize", "minimize") and m.metrics == ("auc", "latency_ms")
    assert [t.number for t in m.front] == [t.number for t in multi.pareto_front]
    assert m.to_dict()["front"][0]["number"] == m.front[0].number
    assert [s.name for s in kiln.tuning.study_summaries("fraud")] == ["quad"]
    assert kiln.tuning.study_summaries("tuning")[-1].name == "flaky"
    assert [s.name for s in kiln.tuning.study_summaries(limit=2)] == ["multi", "flaky"]
    with pytest.raises(InvalidInput, match="limit must be a positive integer or None; got 0"):
        kiln.tuning.study_summaries(limit=0)
    one = multi.summary()
    assert one.counts == m.counts and [t.number for t in one.front] == [t.number for t in m.front]


def test_summaries_of_no_study_and_of_a_study_without_trials_done() -> None:
    assert kiln.tuning.study_summaries() == []
    study = kiln.tune(obj.quadratic, n_trials=1, name="one")
    kept = study.trials
    summary = study.summary(trials=[])  # as read before its trial ended
    assert summary.trials == 0 and summary.best is None
    assert study.summary(trials=kept).best == kept[0]


def test_history_and_importances_per_objective_over_trials_read_once() -> None:
    single, _, multi = _studies()
    trials = single.trials
    assert single.history(trials=trials) == single.history()
    assert single.history(objective="value") == single.history(objective=0)
    assert set(single.importances(trials=trials)) == {"x", "y", "kind"}
    assert single.importances(trials=trials[:1]) == {}  # too few trials to say
    assert single.history(trials=[]) == []
    auc = multi.history(objective="auc")
    latency = multi.history(objective=1)
    assert [b for _, _, b in auc] == sorted(b for _, _, b in auc)  # maximized: rises
    assert [b for _, _, b in latency] == sorted((b for _, _, b in latency), reverse=True)
    assert set(multi.importances(objective="latency_ms")) == {"depth", "width"}
    assert set(multi.importances()) == {"depth", "width"}
    with pytest.raises(InvalidInput, match="pass objective="):
        multi.history()
    with pytest.raises(InvalidInput, match=r"a metric of study 'multi' \(auc, latency_ms\)"):
        multi.importances(objective="loss")
    with pytest.raises(InvalidInput, match="an index below 2"):
        multi.history(objective=2)
    with pytest.raises(InvalidInput, match="got True"):
        single.history(objective=True)
