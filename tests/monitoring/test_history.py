"""The values evaluations measured, read back: oldest first, narrowed by time, metric,
feature, version and arm, each value once, on SQLite and PostgreSQL; mistakes refused by
name."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from test_alerts import NOW, register, rows, serve

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.monitoring import Monitor, MonitorValue, Rule, evaluate, history


def _labels(frame: pd.DataFrame, at: float) -> None:
    kiln.monitoring.log_labels(
        "fraud-api",
        pd.DataFrame(
            {
                "request_id": [f"champion-{at}-{i}" for i in range(len(frame))],
                "label": (frame.amount > 130).astype(int),
            }
        ),
    )


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_history_reads_back_what_each_evaluation_measured(db_url: str, tmp_path: Path) -> None:
    kiln.configure(db_url=db_url, artifact_uri=str(tmp_path / "artifacts"))
    register()
    kiln.deployments.create("fraud-api", model="fraud/1")
    assert history("fraud-api") == []  # deployed, never evaluated

    served_at = NOW - timedelta(minutes=30)
    frame = rows(800, 11, amount_mean=160.0)
    serve(frame, served_at)
    _labels(frame, served_at.timestamp())
    monitor = Monitor(
        "fraud-api",
        [
            # two rules on one value: it was measured once and comes back once
            Rule("psi", feature="*", above=0.2),
            Rule("psi", feature="amount", above=0.3, name="amount-high"),
            Rule("accuracy", below=0.5),
        ],
        window="1h",
    )
    times = [NOW - timedelta(minutes=10), NOW - timedelta(minutes=5), NOW]
    evaluations = [evaluate(monitor, now=t) for t in times]

    values = history("fraud-api")
    assert all(isinstance(v, MonitorValue) for v in values)
    assert [v.evaluated_at for v in values] == sorted(v.evaluated_at for v in values)
    assert sorted({v.evaluated_at for v in values}) == times
    per_time = {(v.metric, v.feature) for v in values if v.evaluated_at == times[0]}
    assert per_time == {
        ("psi", "amount"),
        ("psi", "items"),
        ("psi", "category"),
        ("accuracy", None),
    }
    assert len(values) == 3 * 4  # psi of amount once per evaluation, not twice
    first = evaluations[0]
    measured = {(o.metric, o.feature): o.value for o in first.observations}
    for v in values[:4]:
        assert v.value == pytest.approx(measured[(v.metric, v.feature)])
        assert v.deployment == "fraud-api" and v.version == 1 and v.arm == "champion"
    accuracy = kiln.monitoring.quality("fraud-api").rows[0].accuracy
    assert [v.value for v in values if v.metric == "accuracy"] == [pytest.approx(accuracy)] * 3

    # Narrowed by time (since inclusive, until exclusive), metric, feature, version, arm.
    later = history("fraud-api", since=times[1])
    assert sorted({v.evaluated_at for v in later}) == times[1:]
    middle = history("fraud-api", since=times[1], until=times[2])
    assert {v.evaluated_at for v in middle} == {times[1]}
    amount = history("fraud-api", metric="psi", feature="amount")
    assert [v.evaluated_at for v in amount] == times
    assert all(v.metric == "psi" and v.feature == "amount" for v in amount)
    both = history("fraud-api", metric=["accuracy", "psi"], feature="items")
    assert {(v.metric, v.feature) for v in both} == {("psi", "items")}
    assert history("fraud-api", version=1, arm="champion") == values
    assert history("fraud-api", version=2) == [] and history("fraud-api", arm="canary") == []
    assert history("fraud-api", metric="auc") == []  # never measured

    # The newest values, still oldest first.
    newest = history("fraud-api", metric="psi", limit=3)
    assert [v.evaluated_at for v in newest] == [times[2]] * 3
    assert json.loads(json.dumps([v.to_dict() for v in newest]))[0]["metric"] == "psi"


def test_history_of_a_deployment_that_is_neither_evaluated_nor_deployed_is_not_found() -> None:
    register()
    kiln.deployments.create("fraud-api", model="fraud/1")
    with pytest.raises(NotFound, match="fraud-apj"):
        history("fraud-apj")
    with pytest.raises(NotFound):
        history("fraud-apj", metric="psi")


def test_history_survives_its_deployment(tmp_path: Path) -> None:
    register()
    kiln.deployments.create("fraud-api", model="fraud/1")
    serve(rows(300, 12), NOW - timedelta(minutes=20))
    evaluate(Monitor("fraud-api", [Rule("missing_rate", feature="amount", above=0.1)]), now=NOW)
    kiln.deployments.delete("fraud-api")
    (value,) = history("fraud-api")
    assert value.metric == "missing_rate" and value.value == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "psy"}, "metric: unknown 'psy'; known: psi, ks"),
        ({"metric": []}, "metric must be a metric name or a list"),
        ({"since": NOW, "until": NOW - timedelta(hours=1)}, "since must not be after until"),
        ({"since": "yesterday"}, "since must be a datetime"),
        ({"limit": 0}, "limit must be an integer >= 1"),
        ({"version": "1"}, "version must be an integer"),
        ({"feature": 3}, "feature must be a feature name"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        history("fraud-api", **kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    with pytest.raises(InvalidInput, match="deployment name"):
        history("no such/name")
