"""``kiln demo`` end to end: data, three tracked trainings, serving, all readable back."""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import deltalake
import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.metrics import roc_auc_score

import kiln
from kiln.cli._demo import DemoSummary, run_demo
from kiln.cli._demo_features import DEMO_FEATURES, STORE_FEATURES
from kiln.cli._demo_monitoring import PSI_LIMIT
from kiln.cli._demo_serving import (
    CANARY_PERCENT,
    DEPLOYMENT,
    LATENCY_FACTOR,
    LATENCY_FLOOR_MS,
    WARM_UP_REQUESTS,
    canary_guard,
    kiln_serve,
)
from kiln.core import InvalidInput, KilnError, reset_settings
from kiln.serving.predlog import read_predictions

N_TRANSACTIONS = 5_000


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary, str]:
    """Run the demo once for the module: it is the slow part, and every test only reads."""
    home = tmp_path_factory.mktemp("kiln-demo")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("KILN_") and not name.startswith("KILN_TEST_"):
                mp.delenv(name)
        kiln.configure(home=str(home))
        try:
            summary = run_demo(Console(file=out, width=120), n_transactions=N_TRANSACTIONS, seed=3)
        finally:
            reset_settings()
    return home, summary, out.getvalue()


@pytest.fixture
def demo(demo_run: tuple[Path, DemoSummary, str]) -> Iterator[tuple[DemoSummary, str]]:
    """Point this test's settings at the demo's store (settings are reset around each test)."""
    home, summary, text = demo_run
    kiln.configure(home=str(home))
    try:
        yield summary, text
    finally:
        reset_settings()


def test_three_finished_runs(demo: tuple[DemoSummary, str]) -> None:
    summary, _ = demo
    assert summary.experiment == "fraud-demo"
    assert len(summary.run_ids) == 3
    records = [kiln.runs.get(run_id) for run_id in summary.run_ids]
    assert [r.name for r in records] == ["sgd-logreg", "hist-gbdt", "lightgbm"]
    assert all(r.status == kiln.RunStatus.FINISHED for r in records)
    assert all(r.experiment == "fraud-demo" for r in records)
    found = kiln.runs.search("fraud-demo")
    assert {r.id for r in found} == set(summary.run_ids)


def test_candidates_were_trained_by_a_flow_run_shown_in_the_summary(
    demo: tuple[DemoSummary, str],
) -> None:
    summary, text = demo
    record = kiln.flows.get_run(summary.flow_run_id)
    assert record.flow == "fraud_demo_training" and record.status == "finished"
    assert record.executor == "processes"
    tasks = kiln.flows.tasks(summary.flow_run_id)
    assert sorted(t.task for t in tasks) == [f"train_candidate[{i}]" for i in range(3)]
    assert all(t.status == "finished" and t.attempts == 1 for t in tasks)
    # each candidate's run is nested under its task's run, itself under the flow run
    by_task = {t.task: t.child_run_id for t in tasks}
    for index, run_id in enumerate(summary.run_ids):
        task_run = kiln.runs.get(run_id).parent_id
        assert task_run == by_task[f"train_candidate[{index}]"]
        assert kiln.runs.get(task_run).parent_id == summary.flow_run_id
    assert f"Flow run {summary.flow_run_id} (fraud_demo_training): 3 train_candidate" in text
    assert f"kiln flows show {summary.flow_run_id}" in text


def test_best_run_is_the_highest_auc(demo: tuple[DemoSummary, str]) -> None:
    summary, _ = demo
    aucs = {run_id: kiln.runs.get(run_id).metrics["val_auc"] for run_id in summary.run_ids}
    assert summary.best_run_id == max(aucs, key=aucs.__getitem__)
    assert summary.best_val_auc == pytest.approx(aucs[summary.best_run_id])
    assert 0.6 < summary.best_val_auc < 1.0


def test_params_and_final_metrics(demo: tuple[DemoSummary, str]) -> None:
    summary, _ = demo
    sgd, hist, lgbm = (kiln.runs.get(run_id) for run_id in summary.run_ids)
    for record in (sgd, hist, lgbm):
        assert record.params["data.n_transactions"] == N_TRANSACTIONS
        assert record.params["data.seed"] == 3
        assert record.params["data.features"] == list(DEMO_FEATURES)
        assert record.params["features.service"] == "fraud_model"
        assert record.params["data.n_train"] + record.params["data.n_valid"] == N_TRANSACTIONS
        assert record.tags["demo"] == "fraud"
        for key in ("val_auc", "val_average_precision", "val_logloss", "train_seconds"):
            assert key in record.metrics, (record.name, key)
        assert record.metrics["train_seconds"] > 0
    assert sgd.params["loss"] == "log_loss"
    assert sgd.params["epochs"] == 20
    assert hist.params["max_iter"] == 150
    assert lgbm.params["n_estimators"] == 200
    assert lgbm.params["n_jobs"] == 2
    assert lgbm.params["verbose"] == -1


@pytest.mark.parametrize(
    ("index", "steps"), [(0, 20), (1, 150), (2, 200)], ids=["sgd", "hist", "lightgbm"]
)
def test_per_iteration_history(demo: tuple[DemoSummary, str], index: int, steps: int) -> None:
    run_id = demo[0].run_ids[index]
    for key in ("val_auc", "val_logloss"):
        history = kiln.runs.metric_history(run_id, key)
        assert [p.step for p in history] == list(range(steps))
        assert all(np.isfinite(p.value) for p in history)
        # The run's headline value is the last iteration's, i.e. the saved model's.
        assert kiln.runs.get(run_id).metrics[key] == pytest.approx(history[-1].value)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["sgd", "hist", "lightgbm"])
def test_artifacts_download_and_predict(
    demo: tuple[DemoSummary, str], index: int, tmp_path: Path
) -> None:
    run_id = demo[0].run_ids[index]
    paths = {a.path for a in kiln.runs.list_artifacts(run_id)}
    registered = {p for p in paths if p.startswith("models/fraud/v")}
    assert paths - registered == {"model/model.joblib", "feature_importance.csv", "dataset.json"}
    # The best run produced the champion (v1) and the runner-up the canary (v2); each
    # lists its registered model's files too.
    versions = {v.run_id: v.version for v in kiln.models.list_versions("fraud")}
    assert bool(registered) == (run_id in versions)
    assert all(p.startswith(f"models/fraud/v{versions.get(run_id)}/") for p in registered)
    assert versions.get(demo[0].best_run_id) == 1

    local = kiln.runs.download_artifacts(run_id, "model/model.joblib", dst=tmp_path)
    model = joblib.load(local)
    record = kiln.runs.get(run_id)
    # The training snapshot holds every transaction with its point-in-time features.
    assert record.params["data.snapshot"].startswith("fraud_demo_train@")
    df = _snapshot()
    proba = model.predict_proba(df[list(DEMO_FEATURES)])[:, 1]
    assert proba.shape == (N_TRANSACTIONS,)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert roc_auc_score(df["is_fraud"], proba) > 0.6
    assert record.metrics["val_auc"] > 0.6

    report = kiln.runs.download_artifacts(run_id, "feature_importance.csv", dst=tmp_path)
    header, *rows = report.read_text().splitlines()
    assert header.startswith("feature,importance")
    assert sorted(row.split(",")[0] for row in rows) == sorted(DEMO_FEATURES)

    dataset = json.loads(
        kiln.runs.download_artifacts(run_id, "dataset.json", dst=tmp_path).read_text()
    )
    assert dataset["rows"] == N_TRANSACTIONS
    assert dataset["features"] == list(DEMO_FEATURES)
    assert 0.0 < dataset["fraud_rate"]["all"] < 0.1


def test_output_compares_and_says_where(
    demo: tuple[DemoSummary, str], demo_run: tuple[Path, DemoSummary, str]
) -> None:
    summary, text = demo
    home = demo_run[0]
    assert "Candidates, best first" in text
    for name in ("sgd-logreg", "hist-gbdt", "lightgbm"):
        assert name in text
    assert str(home) in text
    assert "kiln runs list --experiment fraud-demo" in text
    assert f"kiln runs show {summary.best_run_id}" in text
    assert f"kiln runs compare {' '.join(summary.run_ids)}" in text
    assert "kiln experiments list" in text
    # The best run is listed first in the table.
    table = text[text.index("Candidates, best first") :]
    assert table.index(summary.best_run_id) < min(
        table.index(run_id) for run_id in summary.run_ids if run_id != summary.best_run_id
    )


def test_comparison_through_the_sdk(demo: tuple[DemoSummary, str]) -> None:
    comparison = kiln.runs.compare(list(demo[0].run_ids))
    assert {"val_auc", "val_average_precision", "val_logloss", "train_seconds"} <= set(
        comparison.metric_keys
    )
    assert "model.class" in comparison.differing_params


def test_best_candidate_is_the_registered_champion(demo: tuple[DemoSummary, str]) -> None:
    summary, text = demo
    champion = kiln.models.resolve("fraud@champion")
    assert champion.ref == summary.model_ref == "fraud/1"
    assert champion.run_id == summary.best_run_id
    assert champion.config["method"] == "predict_proba"
    assert champion.metrics["val_auc"] == pytest.approx(summary.best_val_auc)
    history = kiln.models.alias_history("fraud", "champion")
    assert [(e.action, e.to_version) for e in history] == [("set", 1)]

    df = _snapshot()[:500]
    proba = kiln.models.load("fraud@champion").predict(df[list(DEMO_FEATURES)])
    assert proba.shape == (500, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)

    graph = kiln.models.lineage("fraud@champion")
    assert graph.run is not None and graph.run.id == summary.best_run_id
    best = kiln.runs.get(summary.best_run_id)
    # Trained on the saved training set; the tuned candidate also on its study.
    studied = {("study", best.tags["tuned_by"])} if best.name == "lightgbm" else set()
    inputs = {(n.kind, n.label) for n in graph.inputs}
    assert inputs == {("dataset", "fraud_demo_train")} | studied
    (dataset,) = (n for n in graph.inputs if n.kind == "dataset")
    assert dataset.attributes["rows"] == N_TRANSACTIONS
    upstream = {c.id for c in dataset.children}
    assert upstream == {"user_tx@v1", "merchant_tx@v1", "amount_features@v1"}
    step, flow_run = graph.parents  # the flow step that trained it, then its flow run
    assert (step.kind, step.attributes["step"]) == ("flow_step", "train_candidate")
    assert step.attributes["flow_run"] == flow_run.id == summary.flow_run_id
    assert (flow_run.kind, flow_run.attributes["flow"]) == ("flow_run", "fraud_demo_training")
    assert "flow step train_candidate" in text
    assert f"flow run fraud_demo_training  {summary.flow_run_id}" in text
    assert "Registered fraud/1" in text and "fraud@champion" in text
    assert f"data inputs ({len(inputs)})" in text and "kiln models lineage fraud@champion" in text


def _snapshot() -> pd.DataFrame:
    path = kiln.get_settings().home / "offline" / "datasets" / "fraud_demo_train"
    return deltalake.DeltaTable(str(path)).to_pandas()


def test_features_online_equal_offline_and_training_is_point_in_time(
    demo: tuple[DemoSummary, str],
) -> None:
    _, text = demo
    assert "online read vs offline at the same instant" in " ".join(text.split())
    assert "≠" not in text
    # Every store feature has a row in the table, marked equal, with the same two values.
    for name in STORE_FEATURES:
        row = re.search(rf"^ {name} +(\S+) +(\S+) +(\S)\s*$", text, re.MULTILINE)
        assert row is not None, name
        online, offline, mark = row.groups()
        assert (online, mark) == (offline, "="), name
    fs = kiln.FeatureStore()
    assert {r.name for r in fs.list_definitions()} >= {"user_tx", "merchant_tx", "fraud_model"}
    frame = _snapshot()
    # Point in time: a user's first transaction has no history, and counts never include
    # the transaction itself.
    first = frame.sort_values("event_timestamp").groupby("user_id").head(1)
    assert (first["user_txns_24h"] == 0).all()
    assert first["user_avg_amount_7d"].isna().all()
    assert (first["amount_vs_user_7d"] == 1.0).all()
    assert set(STORE_FEATURES) <= set(frame.columns)


def test_too_few_transactions_is_refused() -> None:
    with pytest.raises(InvalidInput, match="'n_transactions'"):
        run_demo(Console(file=io.StringIO(), width=120), n_transactions=10)


# -- serving: the demo's canary on a real `kiln serve` process ---------------------------------


def test_served_by_a_kiln_serve_process_that_is_gone_afterwards(
    demo: tuple[DemoSummary, str],
) -> None:
    summary, text = demo
    url = summary.canary.url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    served = re.search(r"Serving fraud-api with kiln serve at (\S+) \(process (\d+);", text)
    assert served is not None and served.group(1) == url
    # The server was its own process, and it was stopped: nothing listens there now.
    assert int(served.group(2)) != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(int(served.group(2)), 0)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v2/health/ready", timeout=2.0)


def test_no_request_failed_and_the_canary_took_its_share(demo: tuple[DemoSummary, str]) -> None:
    summary, text = demo
    canary = summary.canary
    assert canary.failed == 0
    assert canary.requests == WARM_UP_REQUESTS + 1_000
    assert f"Failed requests: 0 of {canary.requests:,}" in text
    # The server's own prediction log: every request answered once; the warm-up by the
    # champion alone, the rest by one of the two arms.
    table = read_predictions(deployment=DEPLOYMENT)
    rows = [
        (rid, arm)
        for rid, arm in zip(table["request_id"].to_pylist(), table["arm"].to_pylist(), strict=True)
        if not rid.startswith(("demo-ordinary-", "demo-surge-"))  # the monitoring act's
    ]
    ids = [rid for rid, _ in rows]
    assert len(ids) == len(set(ids)) == canary.requests
    warm_up = [arm for rid, arm in rows if rid.startswith("demo-warm-up-")]
    arms = [arm for rid, arm in rows if not rid.startswith("demo-warm-up-")]
    assert warm_up == ["champion"] * WARM_UP_REQUESTS
    assert set(arms) == {"champion", "canary"}
    n, k, p = len(arms), arms.count("canary"), CANARY_PERCENT / 100
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(k - n * p) <= 4 * sigma, (k, n)
    assert canary.split == {"champion": n - k, "canary": k}
    # The table shows the same counts and shares.
    for arm, count in (("champion", n - k), ("canary", k)):
        assert re.search(rf"│ {arm} +│ +\d+ │ +{count:,} │ +{count / n:.1%} │", text), arm


def test_guard_verdict_and_rollout_history(demo: tuple[DemoSummary, str]) -> None:
    summary, text = demo
    canary = summary.canary
    # The latency limit is the champion's p95 on the same server times the factor.
    assert canary.champion_p95_ms > 0
    assert canary.guard == canary_guard(canary.champion_p95_ms)
    assert canary.guard.max_p95_ms is not None
    assert canary.guard.max_p95_ms >= LATENCY_FACTOR * canary.champion_p95_ms
    assert canary.guard.max_psi is None
    assert f"<= {canary.guard.max_p95_ms:g} ms" in text
    assert f"champion's {canary.champion_p95_ms:.1f} ms over {WARM_UP_REQUESTS} requests" in text
    # Two healthy models: the guard passes the canary, for the reasons it prints.
    assert canary.verdict == "pass", canary.reasons
    assert any(r.startswith("error rate 0 <= max 0.01") for r in canary.reasons)
    limit = f"{canary.guard.max_p95_ms:g}"
    assert any(re.match(rf"p95 latency [\d.]+ ms <= max {limit} ms", r) for r in canary.reasons)
    assert f"Guard verdict for fraud/2: pass — {'; '.join(canary.reasons)}" in text
    # The demo says why the score shift is not judged, with the shift it measured.
    assert f"its scores already shift by PSI {canary.offline_psi:.2f}" in text
    assert canary.offline_psi > 0
    # The history the server and the SDK wrote: the canary started, and no guard breach.
    events = kiln.deployments.history(DEPLOYMENT)
    assert canary.events == ("canary_started",)
    assert events[-1].kind == "canary_started"
    assert events[-1].reason == "kiln demo: the runner-up takes 10% of traffic"
    assert "guard_breach" not in {e.kind for e in events}
    deployment = kiln.deployments.get(DEPLOYMENT)
    assert deployment.traffic.policy == "canary"
    assert deployment.traffic.challenger == "fraud/2"
    assert f"kiln deployments promote {DEPLOYMENT}" in text


def test_the_monitor_fires_on_the_surge_and_writes_the_report(
    demo: tuple[DemoSummary, str],
) -> None:
    summary, text = demo
    watched = summary.monitoring
    assert watched.failed == 0 and watched.requests == 800
    logged = read_predictions(deployment=DEPLOYMENT)["request_id"].to_pylist()
    assert sum(r.startswith(("demo-ordinary-", "demo-surge-")) for r in logged) == 800
    # Pricier purchases at pricier merchants: the amounts and the merchant features move,
    # the hour of day and the card's last-hour activity do not.
    assert {"amount", "merchant_avg_amount_7d"} <= set(watched.drifted)
    assert not {"user_txns_1h", "hour"} & set(watched.drifted)
    assert all(watched.psi[name] > PSI_LIMIT for name in watched.drifted)
    assert len(watched.psi) == len(DEMO_FEATURES)
    # One alert per drifted input of the champion, stored and firing.
    assert watched.alerts == tuple(sorted(watched.drifted))
    firing = kiln.monitoring.events(DEPLOYMENT, status="firing")
    assert sorted(str(e.feature) for e in firing if e.arm == "champion") == list(watched.alerts)
    for name in watched.drifted:
        assert f"ALERT {name}: PSI {watched.psi[name]:.3f} > {PSI_LIMIT:g}" in text
    # The canary's few dozen rows are not judged, and the demo says so.
    assert any("canary" in reason and "min_rows" in reason for reason in watched.not_judged)
    # The report: one self-contained HTML file, small.
    html = watched.html.read_text(encoding="utf-8")
    assert watched.html_bytes == len(html.encode()) < 300_000
    assert "<script src" not in html and "https://" not in html and "http://" not in html
    assert all(name in html for name in watched.drifted)
    assert f"Drift report {watched.html}" in text


def test_the_summary_ends_with_the_dashboard(demo: tuple[DemoSummary, str]) -> None:
    _, text = demo
    assert "Open the dashboard" in text
    assert "kiln ui   then http://127.0.0.1:5000/experiments/fraud-demo" in text


def test_the_dashboard_shows_the_demo(demo: tuple[DemoSummary, str]) -> None:
    """Every page the demo leads to answers, on the demo's own data."""
    from kiln.ui import create_app
    from kiln.ui.server import running

    summary, _ = demo
    champion = kiln.models.resolve("fraud@champion")
    served = kiln.deployments.activity("fraud-api", window="7d")
    pages = [
        "/",
        "/experiments/fraud-demo",
        *(f"/runs/{run_id}" for run_id in summary.run_ids),
        "/models",
        "/models/fraud",
        f"/models/fraud/{champion.version}",
        "/deployments",
        "/deployments/fraud-api?window=7d",
        "/features",
        "/flows",
        "/monitoring?window=7d",
        "/monitoring/fraud-api?window=7d",
    ]
    with running(create_app()) as url, httpx.Client(base_url=url) as http:
        answers = {path: http.get(path) for path in pages}
    for path, answer in answers.items():
        assert answer.status_code == 200, (path, answer.text[:500])
    runs = answers["/experiments/fraud-demo"].text
    assert all(run_id in runs for run_id in summary.run_ids)
    lineage = answers[f"/models/fraud/{champion.version}"].text
    assert 'data-node="run:' in lineage and 'data-node="dataset:' in lineage
    deployment = re.sub(r"<[^>]+>", "", answers["/deployments/fraud-api?window=7d"].text)
    assert f"{served.requests:,} requests answered" in deployment
    # The monitor's alerts, each drifted input's values per evaluation and its histograms.
    monitoring = answers["/monitoring/fraud-api?window=7d"].text
    events = kiln.monitoring.events("fraud-api")
    assert events
    for event in events:
        assert f"/monitoring/fraud-api/events/{event.id}" in monitoring
        assert event.id in answers["/monitoring?window=7d"].text
    for name in summary.monitoring.drifted:
        assert f"psi of {name} per evaluation" in monitoring
        assert f'aria-label="reference and current histograms of {name}"' in monitoring


def test_kiln_serve_is_stopped_however_the_block_ends(
    demo: tuple[DemoSummary, str], tmp_path: Path
) -> None:
    for stop in (RuntimeError("the demo failed"), KeyboardInterrupt()):
        with pytest.raises(type(stop)), kiln_serve([DEPLOYMENT], log=tmp_path / "s.log") as run:
            url, process = run
            assert httpx.get(f"{url}/v2/health/ready", timeout=5.0).status_code == 200
            raise stop
        assert process.poll() is not None  # stopped, not left serving


def test_a_server_that_cannot_start_is_one_error(
    demo: tuple[DemoSummary, str], tmp_path: Path
) -> None:
    with (
        pytest.raises(KilnError, match=r"kiln serve exited with status \d+ before it was ready"),
        kiln_serve(["no-such-deployment"], log=tmp_path / "serve.log"),
    ):
        pass  # pragma: no cover - never reached


def test_canary_latency_limit_follows_the_champion_above_a_floor() -> None:
    assert canary_guard(2.0).max_p95_ms == LATENCY_FLOOR_MS
    assert canary_guard(100.0).max_p95_ms == 3 * 100.0 == LATENCY_FACTOR * 100.0
    assert canary_guard(100.2).max_p95_ms == 301.0  # whole ms, rounded up
    guard = canary_guard(10.0)
    assert (guard.max_error_rate, guard.max_psi, guard.min_requests) == (0.01, None, 50)


def test_the_lightgbm_candidate_was_tuned_by_a_study_shown_in_the_summary(
    demo: tuple[DemoSummary, str],
) -> None:
    from kiln.cli._demo_tuning import SPACE, TUNE_TRIALS

    summary, text = demo
    study = kiln.tuning.load_study(summary.study)
    trials = study.trials
    assert len(trials) == TUNE_TRIALS
    assert {t.state for t in trials} <= {"COMPLETE", "PRUNED"}
    pruned = sum(t.state == "PRUNED" for t in trials)
    study_run = kiln.runs.get(study.run_id)
    assert study_run.status == "FINISHED" and (study_run.duration_s or 99) < 30
    lightgbm = next(
        kiln.runs.get(r) for r in summary.run_ids if kiln.runs.get(r).name == "lightgbm"
    )
    # the final model trained with the best trial's settings, and says which study chose them
    assert lightgbm.tags["tuned_by"] == study.name
    for name in SPACE:
        assert lightgbm.params[name] == study.best_params[name]
    # the study ran inside the candidate's flow task: its run is nested under the
    # candidate's run, itself under the task's
    assert study_run.parent_id == lightgbm.id
    assert (
        f"Tuned lightgbm: study {study.name}, {TUNE_TRIALS} trials ({pruned} pruned early)"
        in " ".join(text.split())
    )
    assert f"best val_auc on held-out training rows {study.best_value:.4f}" in " ".join(
        text.split()
    )
