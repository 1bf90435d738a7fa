"""Every page of the dashboard on PostgreSQL: runs and experiments, compare, charts,
search, flows, monitoring (models, deployments, features and studies have their own
PostgreSQL tests beside their pages)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from _server import running
from _ui_flows import pipeline
from _ui_monitoring import DEPLOYMENT, populate

import kiln
from kiln.core import reset_settings
from kiln.ui import UISettings, create_app


def test_every_page_answers_on_postgresql(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KILN_DB_URL", pg_url)
    reset_settings()
    ids = []
    for i in range(3):
        with kiln.start_run(experiment="churn", name=f"run-{i}") as run:
            run.log_params({"lr": 0.1 * (i + 1)})
            for step in range(20):
                run.log_metric("auc", 0.5 + 0.01 * i + 0.001 * step, step=step)
            run.log_text("a,b\n1,2\n", "tables/small.csv")
            ids.append(run.id)
    flow = pipeline.run(work=str(tmp_path), n=2, executor="inline")
    populate()
    event = kiln.monitoring.events(DEPLOYMENT)[0]
    pages = {
        "/": "churn",
        "/experiments": "churn",
        "/experiments/churn?q=params.lr+%3E+0.15&sort=-metrics.auc": "run-2",
        f"/runs/{ids[0]}": "auc",
        f"/runs/{ids[0]}/artifacts/tables/small.csv": "small.csv",
        f"/compare?run={ids[0]}&run={ids[1]}": "run-1",
        f"/api/runs/{ids[0]}/metrics/auc": '"exact"',
        "/search?q=run-1": "run-1",
        "/flows": "pipeline",
        f"/flows/{flow.id}": "combine",
        "/monitoring": DEPLOYMENT,
        f"/monitoring/{DEPLOYMENT}?window=1h": "amount",
        f"/monitoring/{DEPLOYMENT}/events/{event.id}": "psi",
    }
    with running(create_app(UISettings())) as url, httpx.Client(base_url=url) as http:
        for path, words in pages.items():
            r = http.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            assert words in r.text, (path, words)
        table = http.get("/experiments/churn?q=params.lr+%3E+0.15").text
    assert sorted(re.findall(r">(run-\d)<", table)) == ["run-1", "run-2"]
