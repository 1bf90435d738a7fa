"""The dashboard over HTTP (a real server on 127.0.0.1): pages, paging and sorting, escaping,
the token, errors as 4xx pages, and the global search."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from _server import running

import kiln
from kiln.ui import UISettings, create_app


@pytest.fixture
def population() -> dict[str, str]:
    ids = {}
    for i in range(7):
        with kiln.start_run(experiment="churn", name=f"run-{i}") as run:
            run.log_params({"lr": 0.1 * (i + 1), "depth": i % 3})
            for step in range(30):
                run.log_metric("auc", 0.5 + 0.01 * i + 0.001 * step, step=step)
            run.log_metric("loss", 1.0 / (i + 1))
            ids[f"run-{i}"] = run.id
    with kiln.start_run(experiment="churn", name="sweep") as parent:
        for j in range(2):
            with kiln.start_run(name=f"trial-{j}", parent=parent) as child:
                child.log_metric("auc", 0.6 + j / 10)
                ids[f"trial-{j}"] = child.id
        parent.log_text("hello <b>world</b>\n", "notes/readme.txt")
        parent.log_text("a,b\n1,2\n3,4\n", "tables/small.csv")
    ids["sweep"] = parent.id
    kiln.runs.set_tags(ids["run-0"], {"note": "<script>alert(1)</script>"})
    return ids


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with running(create_app(UISettings(page_size=3))) as url, httpx.Client(base_url=url) as client:
        yield client


def test_home_lists_experiments_runs_models_and_deployments(
    http: httpx.Client, population: dict[str, str]
) -> None:
    r = http.get("/")
    assert r.status_code == 200
    assert 'href="/experiments/churn"' in r.text and "sweep" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["server-timing"].startswith("app;dur=")
    assert "https://" not in r.text and "http://" not in r.text  # nothing from elsewhere


def test_runs_table_pages_sorts_filters_and_folds_nested_runs(
    http: httpx.Client, population: dict[str, str]
) -> None:
    first = http.get("/experiments/churn")
    assert first.status_code == 200
    # 8 top-level runs (7 + the sweep), 3 a page; the sweep's trials folded under it.
    assert "Runs 1\u20133 of 8 top-level runs" in first.text
    assert "sweep" in first.text and 'data-parent="' + population["sweep"] + '"' in first.text
    last = http.get("/experiments/churn?page=3")
    assert "Runs 7\u20138 of 8" in last.text
    by_auc = http.get("/experiments/churn?sort=-metrics.auc&col=metrics.auc&col=params.lr")
    names = re.findall(r'<a href="/runs/[0-9a-f]+">([^<]+)</a>', by_auc.text)
    assert names[:3] == ["run-6", "run-5", "run-4"]
    query = {"q": "params.depth = 0", "sort": "attributes.name"}
    filtered = http.get("/experiments/churn", params=query)
    names = re.findall(r'<a href="/runs/[0-9a-f]+">([^<]+)</a>', filtered.text)
    assert names == ["run-0", "run-3", "run-6"] and "of 3 matching" in filtered.text
    # A bad filter is the page with the message, a 400, never a 500.
    bad = http.get("/experiments/churn", params={"q": "metrics.auc >"})
    assert bad.status_code == 400 and "position" in bad.text
    for query in ({"page": "0"}, {"sort": "bogus"}, {"col": "nope"}):
        assert http.get("/experiments/churn", params=query).status_code == 400, query
    assert http.get("/experiments/nochurn").status_code == 404


def test_run_page_escapes_user_text_and_previews_artifacts(
    http: httpx.Client, population: dict[str, str]
) -> None:
    page = http.get(f"/runs/{population['run-0']}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    sweep = http.get(f"/runs/{population['sweep']}")
    assert "trial-0" in sweep.text and "notes/readme.txt" in sweep.text
    text = http.get(f"/runs/{population['sweep']}/artifacts/notes/readme.txt")
    assert "hello &lt;b&gt;world&lt;/b&gt;" in text.text
    table = http.get(f"/runs/{population['sweep']}/artifacts/tables/small.csv")
    assert "<td>3</td><td>4</td>" in table.text
    raw = http.get(f"/api/runs/{population['sweep']}/artifacts/notes/readme.txt")
    assert raw.content == b"hello <b>world</b>\n"
    assert raw.headers["content-security-policy"].startswith("sandbox")
    missing = http.get(f"/runs/{population['sweep']}/artifacts/notes/nope.txt")
    assert missing.status_code == 404
    assert http.get("/runs/0123456789abcdef").status_code == 404


def test_metric_series_are_downsampled_and_exact_on_zoom(
    http: httpx.Client, population: dict[str, str]
) -> None:
    run = population["run-2"]
    whole = http.get(f"/api/runs/{run}/metrics/auc").json()
    assert whole["total"] == 30 and whole["exact"] and whole["steps"] == list(range(30))
    small = http.get(f"/api/runs/{run}/metrics/auc?points=10").json()
    assert not small["exact"] and len(small["steps"]) <= 10
    assert small["steps"][0] == 0 and small["steps"][-1] == 29
    zoom = http.get(f"/api/runs/{run}/metrics/auc?points=10&from=5&to=9").json()
    assert zoom["exact"] and zoom["steps"] == [5, 6, 7, 8, 9]
    bad = http.get(f"/api/runs/{run}/metrics/auc?points=1")
    assert bad.status_code == 400 and "points" in bad.json()["error"]
    assert http.get(f"/api/runs/{run}/metrics/nope").status_code == 404


def test_downsampling_keeps_spikes() -> None:
    from kiln.ui.pages.charts import downsample

    steps = np.arange(100_000, dtype=np.float64)
    values = np.zeros(100_000)
    values[77_777] = 5.0
    xs, ys = downsample(steps, values, 1000)
    assert len(xs) <= 1000 and ys.max() == 5.0 and np.all(np.diff(xs) > 0)


def test_compare_highlights_differences_and_draws_parallel_coordinates(
    http: httpx.Client, population: dict[str, str]
) -> None:
    ids = [population["run-1"], population["run-2"]]
    r = http.get("/compare", params=[("run", i) for i in ids])
    assert r.status_code == 200
    assert 'class="differs"><th scope="row">params.lr' in r.text
    assert "<polyline" in r.text and 'data-key="auc"' in r.text
    assert http.get("/compare").status_code == 400


def test_a_token_guards_every_page_and_api(population: dict[str, str]) -> None:
    app = create_app(UISettings(token="s3cret"))
    with running(app) as url, httpx.Client(base_url=url) as http:
        assert http.get("/", headers={"accept": "text/html"}).headers["location"] == "/login?next=/"
        assert http.get("/api/runs/x/metrics/auc").status_code == 401
        assert http.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        bad = http.post("/login", data={"token": "nope", "next": "/"})
        assert bad.headers["location"].startswith("/login?next=/&failed=1")
        good = http.post("/login", data={"token": "s3cret", "next": "/experiments"})
        assert good.headers["location"] == "/experiments"
        assert http.get("/experiments").status_code == 200  # the cookie now
        http.cookies.clear()
        once = http.get("/experiments?token=s3cret")
        assert once.status_code == 303 and once.headers["location"] == "/experiments"
        assert http.get("/static/app.css").status_code == 200  # assets need no token
    with pytest.raises(kiln.errors.InvalidInput, match="token"):
        create_app(UISettings(token=" "))


def test_serving_beyond_this_machine_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln.ui import serve_ui

    monkeypatch.delenv("KILN_UI_TOKEN", raising=False)
    with pytest.raises(kiln.errors.InvalidInput, match="serves beyond this machine"):
        serve_ui(host="0.0.0.0", port=0)


def test_search_finds_runs_by_name_and_id(http: httpx.Client, population: dict[str, str]) -> None:
    found = http.get("/search", params={"q": "trial"})
    assert found.status_code == 200
    assert f'href="/runs/{population["trial-0"]}"' in found.text
    assert f'href="/runs/{population["trial-1"]}"' in found.text
    by_id = http.get("/search", params={"q": population["run-3"]})
    assert f'href="/runs/{population["run-3"]}"' in by_id.text
    odd = http.get("/search", params={"q": "it's <b>"})
    assert odd.status_code == 200 and "it&#39;s &lt;b&gt;" in odd.text
    assert http.get("/search").status_code == 200
