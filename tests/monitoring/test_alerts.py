"""Alert rules on a deployment's logged traffic: conditions counted over evaluations,
events opened once and resolved, values recorded, and rules refused by name."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.monitoring import Monitor, Retrain, Rule, Webhook, evaluate, events, load_monitors
from kiln.monitoring._tables import monitor_values
from kiln.serving.predlog import Prediction, PredictionLog

NOW = datetime.now(UTC).replace(microsecond=0)


def rows(n: int, seed: int, amount_mean: float = 100.0, travel: float = 0.3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(amount_mean, 20.0, n)
    return pd.DataFrame(
        {
            "amount": amount,
            "items": rng.integers(1, 6, n),
            "category": rng.choice(
                ["grocery", "travel", "online"], n, p=[0.7 - travel, travel, 0.3]
            ),
        }
    )


def register() -> None:
    train = rows(3_000, 1)
    model = LogisticRegression().fit(train[["amount", "items"]], train.amount > 100)
    kiln.models.register(
        "fraud", model, input_example=train[["amount", "items"]][:2], training_data=train
    )


def serve(frame: pd.DataFrame, at: datetime, *, arm: str = "champion", missing: int = 0) -> None:
    log = PredictionLog(
        kiln.get_settings().home / "offline" / "predictions",
        flush_rows=100_000,
        flush_interval_s=60,
    )
    log.append_many(
        Prediction(
            request_id=f"{arm}-{at.timestamp()}-{i}",
            deployment="fraud-api",
            model="fraud/1",
            version=1,
            arm=arm,
            features={
                "amount": float("nan") if i < missing else float(r.amount),
                "items": int(r.items),
                "category": r.category,
            },
            output=0.9 if r.amount > 130 else 0.1,
            latency_ms=1.0,
            at=at + timedelta(milliseconds=i),
        )
        for i, r in enumerate(frame.itertuples())
    )
    log.close()


@pytest.fixture
def deployed() -> None:
    register()
    kiln.deployments.create("fraud-api", model="fraud/1")


def test_a_rule_fires_after_its_windows_once_and_resolves_when_the_shift_ends(
    deployed: None,
) -> None:
    monitor = Monitor(
        "fraud-api", [Rule("psi", feature="*", above=0.2, for_windows=2)], window="1h"
    )
    serve(rows(2_000, 2, amount_mean=160.0), NOW - timedelta(minutes=30))

    first = evaluate(monitor, now=NOW)
    psi = {o.feature: o for o in first.observations}
    assert set(psi) == {"amount", "items", "category"}  # categories too, over their shares
    assert psi["amount"].breached and psi["amount"].breaches == 1
    assert not psi["items"].breached and not psi["category"].breached
    assert first.opened == () and first.firing == ()

    second = evaluate(monitor, now=NOW + timedelta(minutes=5))
    assert [(e.feature, e.status) for e in second.opened] == [("amount", "firing")]
    event = second.opened[0]
    assert event.metric == "psi" and event.threshold == 0.2 and event.value > 0.2
    assert event.version == 1 and event.arm == "champion"
    assert "psi of amount" in event.message and "for 2 evaluations" in event.message
    assert [a.kind for a in event.actions] == ["log"]
    assert [a.state for a in kiln.monitoring.get_event(event.id).actions] == ["done"]

    third = evaluate(monitor, now=NOW + timedelta(minutes=10))
    assert third.opened == ()  # deduplicated: still the one event
    assert [e.id for e in third.firing] == [event.id]
    assert third.firing[0].last_seen_at > event.started_at

    # The next hour serves as in training: the condition clears and the event resolves.
    serve(rows(2_000, 3), NOW + timedelta(minutes=30))
    fourth = evaluate(monitor, now=NOW + timedelta(hours=1))
    assert [e.id for e in fourth.resolved] == [event.id]
    assert fourth.firing == ()
    stored = events("fraud-api")
    assert [(e.id, e.status) for e in stored] == [(event.id, "resolved")]
    assert stored[0].resolved_at is not None

    # A new shift is a new event.
    serve(rows(2_000, 4, amount_mean=170.0), NOW + timedelta(minutes=90))
    later = NOW + timedelta(hours=2)
    evaluate(monitor, now=later)
    fresh = evaluate(monitor, now=later + timedelta(minutes=1))
    assert len(fresh.opened) == 1 and fresh.opened[0].id != event.id
    assert len(events("fraud-api")) == 2
    assert len(events("fraud-api", status="firing")) == 1


def test_drift_verdicts_missing_rate_and_share_are_measured_and_recorded(
    deployed: None,
) -> None:
    serve(rows(600, 5, travel=0.6), NOW - timedelta(minutes=20), missing=120)
    monitor = Monitor(
        "fraud-api",
        [
            Rule("drift"),
            Rule("missing_rate", feature="amount", above=0.05, severity="critical"),
            Rule("share_drifted", above=0.5),
        ],
    )
    result = evaluate(monitor, now=NOW)
    by_rule: dict[str, list[kiln.monitoring.Observation]] = {}
    for o in result.observations:
        by_rule.setdefault(o.rule, []).append(o)
    drifted = {o.feature for o in by_rule["drift[*]"] if o.breached}
    assert drifted == {"category"}  # travel's share doubled; amount and items as trained
    (missing,) = by_rule["missing_rate[amount]>0.05"]
    assert missing.value == pytest.approx(0.2) and missing.breached
    (share,) = by_rule["share_drifted>0.5"]
    assert share.value == pytest.approx(1 / 3) and not share.breached
    opened = {(e.rule, e.feature, e.severity) for e in result.opened}
    assert opened == {
        ("drift[*]", "category", "warning"),
        ("missing_rate[amount]>0.05", "amount", "critical"),
    }
    client = kiln.tracking.default_client()
    with client.meta.read() as conn:
        stored = conn.execute(
            sa.select(monitor_values.c.metric, sa.func.count()).group_by(monitor_values.c.metric)
        ).all()
    assert dict(stored) == {"drift": 3, "missing_rate": 1, "share_drifted": 1}


def test_rules_that_cannot_be_judged_say_why_and_leave_the_others(deployed: None) -> None:
    serve(rows(500, 6), NOW - timedelta(minutes=10))
    monitor = Monitor(
        "fraud-api",
        [Rule("auc", below=0.8, window="7d"), Rule("psi", feature="amount", above=0.2)],
    )
    result = evaluate(monitor, now=NOW)
    assert "auc<0.8" in result.problems
    assert "label" in " ".join(result.problems["auc<0.8"])
    assert [o.rule for o in result.observations] == ["psi[amount]>0.2"]

    empty = evaluate(monitor, now=NOW + timedelta(hours=3))
    assert "nothing served" in " ".join(empty.problems["psi[amount]>0.2"])


def test_quality_rules_judge_labelled_predictions(deployed: None) -> None:
    frame = rows(400, 7)
    serve(frame, NOW - timedelta(minutes=40))
    # Labels that disagree with the predictions: the live AUC is poor.
    labels = pd.DataFrame(
        {
            "request_id": [f"champion-{(NOW - timedelta(minutes=40)).timestamp()}-{i}"
                           for i in range(len(frame))],
            "label": (frame.amount <= 130).astype(int),
        }
    )  # fmt: skip
    kiln.monitoring.log_labels("fraud-api", labels)
    result = evaluate(Monitor("fraud-api", [Rule("auc", below=0.8)]), now=NOW)
    (auc,) = result.observations
    assert auc.value is not None and auc.value < 0.5 and auc.breached
    assert [e.rule for e in result.opened] == ["auc<0.8"]


def test_monitors_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(
        """
[[monitor]]
deployment = "fraud-api"
window = "30m"
every = "1m"

[[monitor.rule]]
metric = "psi"
feature = "*"
above = 0.2
for_windows = 2
actions = ["log", { webhook = "http://127.0.0.1:9/hook", attempts = 3 }, "rollback",
           { retrain = "pipelines:train", params = { days = 7 } }]

[[monitor.rule]]
metric = "auc"
below = 0.8
window = "7d"
name = "live-auc"
""",
        encoding="utf-8",
    )
    (monitor,) = load_monitors(path)
    assert monitor.deployment == "fraud-api" and monitor.window == "30m"
    psi, auc = monitor.rules
    assert psi.name == "psi[*]>0.2" and psi.for_windows == 2
    kinds = [a.kind for a in psi.actions]  # type: ignore[union-attr]
    assert kinds == ["log", "webhook", "rollback", "retrain"]
    assert psi.actions[1] == Webhook("http://127.0.0.1:9/hook", attempts=3)
    assert psi.actions[3] == Retrain("pipelines:train", params={"days": 7})
    assert auc.name == "live-auc" and auc.window == "7d"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[monitor]]\nwindow = "1h"\n', "deployment is missing"),
        ('[[monitor]]\ndeployment = "d"\nwindw = "1h"\n', "unknown monitor key(s) windw"),
        (
            '[[monitor]]\ndeployment = "d"\n[[monitor.rule]]\nmetric = "psy"\nabove = 1\n',
            "rule 1: rule metric: unknown 'psy'",
        ),
        (
            '[[monitor]]\ndeployment = "d"\n[[monitor.rule]]\nmetric = "psi"\n',
            "needs exactly one of above= or below=",
        ),
        (
            '[[monitor]]\ndeployment = "d"\n[[monitor.rule]]\nmetric = "psi"\nabove = 1\n'
            'actions = ["page"]\n',
            "unknown action 'page'",
        ),
        ("[[monitor]\n", "not valid TOML"),
        ("rule = 1\n", "expected [[monitor]] tables"),
    ],
)
def test_bad_monitor_files_are_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        load_monitors(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_bad_rules_are_refused_by_name() -> None:
    cases = [
        (lambda: Rule("psi", above=0.2, below=0.1), "exactly one of above= or below="),
        (lambda: Rule("drift", above=0.1), "takes no above/below"),
        (lambda: Rule("auc", feature="amount", below=0.8), "takes no feature"),
        (lambda: Rule("psi", above=0.2, for_windows=0), "for_windows must be an integer >= 1"),
        (lambda: Rule("psi", above=0.2, arm="blue-ish"), "arm must be one of"),
        (lambda: Rule("psi", above=0.2, window="soon"), "window"),
        (lambda: Rule("psi", above="high"), "above must be a number"),
        (lambda: Rule("psi", above=0.2, actions="log"), "actions must be a list"),
        (lambda: Rule("psi", above=0.2, severity="loud"), "severity must be one of"),
        (lambda: Webhook("ftp://x"), "http:// or https://"),
        (lambda: Retrain("no_colon"), "pkg.module:function"),
        (
            lambda: Monitor("d", [Rule("psi", above=0.2), Rule("psi", above=0.2)]),
            "rule names must differ",
        ),
        (lambda: Monitor("d", [], every="never"), "every"),
    ]
    for make, message in cases:
        with pytest.raises(InvalidInput) as info:
            make()
        assert message in str(info.value), (message, str(info.value))


def test_evaluating_an_unknown_deployment_is_not_found() -> None:
    with pytest.raises(NotFound, match="nowhere"):
        evaluate(Monitor("nowhere", [Rule("psi", above=0.2)]))


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_monitors_racing_on_one_deployment_open_each_event_once(
    db_url: str, tmp_path: Path
) -> None:
    kiln.configure(db_url=db_url, artifact_uri=str(tmp_path / "artifacts"))
    register()
    kiln.deployments.create("fraud-api", model="fraud/1")
    serve(rows(1_500, 8, amount_mean=170.0), NOW - timedelta(minutes=20))
    monitor = Monitor("fraud-api", [Rule("psi", feature="*", above=0.2)])
    gate = threading.Barrier(4)
    opened: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        gate.wait()
        try:
            result = evaluate(monitor, now=NOW)
        except BaseException as exc:  # reported below with the others
            errors.append(exc)
            return
        opened.extend(e.id for e in result.opened)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    firing = events("fraud-api", status="firing")
    assert [e.feature for e in firing] == ["amount"]
    assert opened == [firing[0].id]  # one evaluator opened it; the others saw it open
    assert [a.state for a in firing[0].actions] == ["done"]
