"""The models and deployments pages over HTTP (a real server on 127.0.0.1): versions with
flavors, sizes, metrics and signatures, aliases with their history, a version's lineage
back to its run, dataset and feature view version; a deployment's traffic as configured
and as served per version and arm, its history, and the rollout actions behind a
confirmation, CSRF, ``--allow-writes`` and a revision check; 4xx pages for mistakes, on
SQLite and PostgreSQL; then in chromium: clean pages at both sizes and a promotion by
clicking."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from _server import running
from test_browser import SIZES, Watched, assert_tab_reaches_every_control

import kiln
from kiln.core import reset_settings
from kiln.serving.predlog import Prediction, PredictionLog
from kiln.ui import UISettings, create_app

SCRIPT = "<script>alert(1)</script>"
COLUMNS = ("f0", "f1", "f2", "f3")


def _register(scale: float, run: kiln.Run) -> Any:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.standard_normal((200, 4)), columns=list(COLUMNS))
    y = (scale * x["f0"] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    run.log_metric("val_auc", 0.8 + scale / 100)
    return kiln.models.register("fraud", model, input_example=x[:5], run=run)


def _populate() -> None:
    """Two versions of ``fraud`` (the second trained on a dataset built from a feature
    view version), a deployment in a 10 % canary, and an hour of its predictions."""
    with kiln.start_run(experiment="fraud", name="train-v1") as run:
        _register(1.0, run)
    with kiln.start_run(experiment="fraud", name="train-v2") as run:
        kiln.lineage.add_edge(
            "feature_view",
            "user_stats@v1",
            "input_to",
            "dataset",
            "snap1",
            view="user_stats",
            version=1,
        )
        kiln.lineage.add_edge(
            "dataset", "snap1", "input_to", "run", run.id, name="training-set", rows=1234
        )
        _register(2.0, run)
    kiln.models.update_model("fraud", description=f"fraud scores {SCRIPT}")
    kiln.models.set_alias("fraud", "champion", 1, reason="first")
    kiln.models.set_alias("fraud", "challenger", 2, reason="better val_auc")
    kiln.deployments.create("fraud-api", model="fraud@champion")
    kiln.deployments.canary("fraud-api", model="fraud@challenger", percent=10, reason="try v2")
    log = PredictionLog(flush_interval_s=0.05)
    now = datetime.now(UTC)
    for i in range(200):
        challenger = i % 10 == 0
        log.append(
            Prediction(
                request_id=f"r{i}",
                deployment="fraud-api",
                model="fraud/2" if challenger else "fraud/1",
                version=2 if challenger else 1,
                arm="canary" if challenger else "champion",
                features=dict.fromkeys(COLUMNS, 0.5),
                output=0.5,
                latency_ms=20.0 if challenger else 2.0,
                at=now - timedelta(minutes=50) + timedelta(seconds=10 * i),
            )
        )
    log.close()


def _text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.text)))


def test_models_pages_show_versions_aliases_and_lineage(
    serve: Callable[..., httpx.Client],
) -> None:
    _populate()
    http = serve()
    listing = _text(http.get("/models"))
    assert "fraud" in listing and "champion → 1" in listing and "challenger → 2" in listing
    page = http.get("/models/fraud")
    assert SCRIPT not in page.text and "&lt;script&gt;" in page.text  # shown as text
    text = _text(page)
    assert "val_auc" in text and "0.82" in text and "0.81" in text
    assert "sklearn" in text and "4 in (columns) → 1 out" in text
    assert "better val_auc" in text and "first" in text  # the alias history, with reasons
    assert "fraud-api" in text  # served by

    version = http.get("/models/fraud/2")
    text = _text(version)
    for column in COLUMNS:
        assert re.search(rf"input\s+{column}\s+float64", text), column
    boxes = re.findall(r'data-node="([^"]+)"', version.text)
    code = ["code"] if kiln.models.get_version("fraud", 2).git_commit else []
    kinds = sorted(b.split(":")[0] for b in boxes)
    assert kinds == sorted(["dataset", "feature_view", "model_version", "run", *code]), boxes
    assert 'href="/features/view/user_stats"' in version.text
    assert "1,234 rows" in text and "train-v2" in text
    v1 = http.get("/models/fraud/1")
    v1_kinds = sorted(b.split(":")[0] for b in re.findall(r'data-node="([^"]+)"', v1.text))
    assert v1_kinds == sorted(["model_version", "run", *code])


def test_deployment_page_shows_the_split_served_and_the_history(
    serve: Callable[..., httpx.Client],
) -> None:
    _populate()
    http = serve()
    listing = _text(http.get("/deployments"))
    assert "fraud-api" in listing and "canary" in listing and "fraud/1" in listing
    page = http.get("/deployments/fraud-api")
    text = _text(page)
    assert "200 requests answered" in text
    assert "champion 90 %, challenger 10 %" in text  # configured
    assert "served: champion 90 %, challenger 10 %" in text
    cell = r'\s*<td class="num">(\d+)</td>'
    rows = re.findall(r"<tr>\s*<td>(champion|canary)[^<]*</td>" + cell * 2, page.text)
    assert rows == [("champion", "1", "180"), ("canary", "2", "20")], rows
    assert "canary started" in text and "try v2" in text
    assert "Promote the challenger" in text and "Roll back to the champion" in text
    assert "series-chart" in page.text
    assert "No kiln serve is running" in text
    for window in ("15m", "7d"):
        assert http.get(f"/deployments/fraud-api?window={window}").status_code == 200


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_rollout_actions_need_writes_csrf_and_the_confirmed_revision(
    serve: Callable[..., httpx.Client],
) -> None:
    _populate()
    revision = kiln.deployments.get("fraud-api").revision
    readonly = serve()
    confirm = readonly.get("/deployments/fraud-api/promote")
    assert confirm.status_code == 200 and "read-only" in confirm.text
    refused = readonly.post(
        "/deployments/fraud-api/promote",
        data={"csrf": readonly.cookies.get("kiln_csrf") or "", "revision": str(revision)},
    )
    assert refused.status_code == 403

    http = serve(allow_writes=True)
    confirm = http.get("/deployments/fraud-api/promote")
    token = _csrf(confirm.text)
    assert f'name="revision" value="{revision}"' in confirm.text
    assert (
        http.post(
            "/deployments/fraud-api/promote", data={"csrf": "x" * 43, "revision": str(revision)}
        ).status_code
        == 403
    )
    stale = http.post(
        "/deployments/fraud-api/promote", data={"csrf": token, "revision": str(revision - 1)}
    )
    assert stale.status_code == 409 and "changed since" in stale.text
    bad = http.post("/deployments/fraud-api/promote", data={"csrf": token, "revision": "two"})
    assert bad.status_code == 400 and "revision must be" in html.unescape(bad.text)
    assert kiln.deployments.get("fraud-api").traffic.policy == "canary"  # nothing happened

    done = http.post(
        "/deployments/fraud-api/promote",
        data={"csrf": token, "revision": str(revision), "reason": "canary looked fine"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/deployments/fraud-api"
    after = kiln.deployments.get("fraud-api")
    assert after.traffic.policy == "single" and after.revision == revision + 1
    last = kiln.deployments.history("fraud-api")[-1]
    assert (last.kind, last.actor, last.reason) == ("promoted", "kiln ui", "canary looked fine")
    assert kiln.models.get_model("fraud").aliases["champion"] == 2  # the alias moved
    assert kiln.models.alias_history("fraud", "champion")[-1].actor == "kiln ui"
    # Nothing left to promote: the page says so and a POST is a conflict.
    assert "does not apply" in http.get("/deployments/fraud-api/promote").text
    again = http.post(
        "/deployments/fraud-api/rollback", data={"csrf": token, "revision": str(revision + 1)}
    )
    assert again.status_code == 409 and "does not apply" in again.text


def test_switch_back_over_http_and_a_switch_that_no_longer_applies(
    serve: Callable[..., httpx.Client],
) -> None:
    _populate()
    kiln.deployments.rollback("fraud-api", reason="end the canary")
    kiln.deployments.blue_green("fraud-api", model="fraud@challenger", reason="all on green")
    revision = kiln.deployments.get("fraud-api").revision
    http = serve(allow_writes=True)
    confirm = http.get("/deployments/fraud-api/switch_back")
    assert confirm.status_code == 200 and f'name="revision" value="{revision}"' in confirm.text
    token = _csrf(confirm.text)
    done = http.post(
        "/deployments/fraud-api/switch_back",
        data={"csrf": token, "revision": str(revision), "reason": "green misbehaves"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/deployments/fraud-api"
    after = kiln.deployments.get("fraud-api")
    assert (after.traffic.policy, after.traffic.percent) == ("blue_green", 0.0)
    assert after.traffic.challenger == "fraud@challenger"  # green stays named
    last = kiln.deployments.history("fraud-api")[-1]
    assert (last.kind, last.actor, last.reason) == ("switched_back", "kiln ui", "green misbehaves")
    # Switched back already: the page offers nothing and a POST of the new revision is 409.
    assert "does not apply" in http.get("/deployments/fraud-api/switch_back").text
    again = http.post(
        "/deployments/fraud-api/switch_back",
        data={"csrf": token, "revision": str(after.revision)},
    )
    assert again.status_code == 409 and "does not apply" in again.text
    assert kiln.deployments.get("fraud-api").revision == after.revision  # nothing written


def test_mistakes_in_the_url_are_4xx_pages(serve: Callable[..., httpx.Client]) -> None:
    _populate()
    http = serve()
    for path, status, words in (
        ("/models/frod", 404, "fraud"),
        ("/models/fraud/9", 404, "9"),
        ("/models/fraud/two", 400, "a model version is a whole number"),
        ("/deployments/fraud-ap", 404, "fraud-api"),
        ("/deployments/fraud-api?window=2y", 400, "window must be one of 15m, 1h"),
        ("/deployments/fraud-api/explode", 404, "actions: promote, rollback, switch_back"),
    ):
        r = http.get(path)
        assert r.status_code == status, (path, r.text)
        assert words in html.unescape(r.text), (path, r.text)


def test_models_and_deployments_pages_on_postgresql(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, serve: Callable[..., httpx.Client]
) -> None:
    monkeypatch.setenv("KILN_DB_URL", pg_url)
    reset_settings()
    _populate()
    http = serve()
    for path in ("/models", "/models/fraud", "/models/fraud/2", "/deployments"):
        assert http.get(path).status_code == 200, path
    assert "200 requests answered" in _text(http.get("/deployments/fraud-api"))


def test_models_and_deployments_in_a_browser_and_promote_by_clicking(browser: Any) -> None:
    _populate()
    pages = {
        "models": "/models",
        "model": "/models/fraud",
        "model-version": "/models/fraud/2",
        "deployments": "/deployments",
        "deployment": "/deployments/fraud-api",
        "deployment-promote": "/deployments/fraud-api/promote",
    }
    with running(create_app(UISettings(allow_writes=True))) as url:
        for size, (width, height) in SIZES.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            watched = Watched(context.new_page())
            for name, path in pages.items():
                assert watched.visit(url + path, shot=f"{name}-{size}").locator("h1").count()
            page = watched.visit(f"{url}/deployments/fraud-api")
            assert page.locator("figure.series-chart canvas").count() == 1  # drawn
            if size == "laptop":
                for path in (
                    "/models/fraud/2",
                    "/deployments/fraud-api",
                    pages["deployment-promote"],
                ):
                    assert_tab_reaches_every_control(watched.visit(url + path))
            context.close()
            assert watched.problems == [] and watched.dialogs == []

        context = browser.new_context()
        watched = Watched(context.new_page())
        page = watched.visit(f"{url}/deployments/fraud-api")
        page.click("text=Promote the challenger")
        page.fill("#reason", "clicked in a browser")
        page.click("form.confirm button[type=submit]")
        page.wait_for_url(f"{url}/deployments/fraud-api")
        assert "clicked in a browser" in page.content()
        assert kiln.deployments.get("fraud-api").traffic.policy == "single"
        context.close()
        assert watched.problems == [] and watched.dialogs == []
