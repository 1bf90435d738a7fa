"""The studies pages over HTTP (a real server on 127.0.0.1): every study with its trials
by state and best value, and one study's optimization history, parameter importances,
parallel coordinates (the compare page's code), Pareto front and trials linking to their
runs; errors as 4xx pages, escaped names, search and home; then in chromium (as
test_browser.py): clean pages at both sizes with screenshots, charts drawn, and the
keyboard reaching every control."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _server import running
from test_browser import SIZES, Watched, assert_tab_reaches_every_control

import kiln
from kiln.core import reset_settings
from kiln.tuning import StudyFailed
from kiln.ui import UISettings, create_app

SCRIPT = "<script>alert(1)</script>"
EVIL = "<b>bold</b>"


def quadratic(trial: Any) -> float:
    """Minimum 0.01 at x=0.3, kind='b'; trials with x > 1.5 fail."""
    x = trial.suggest_float("x", -2.0, 2.0)
    kind = trial.suggest_categorical("kind", ["a", "b", EVIL])
    if x > 1.5:
        raise RuntimeError(f"diverged at x={x:.3f}")
    return (x - 0.3) ** 2 + (0.0 if kind == "b" else 0.5) + 0.01


def auc_vs_latency(trial: Any) -> dict[str, float]:
    depth = trial.suggest_int("depth", 1, 12)
    width = trial.suggest_float("width", 0.0, 1.0)
    return {"auc": 1 - 1 / (depth + 1) - 0.1 * width, "latency_ms": depth * (1 + width)}


def always_fails(trial: Any) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    raise RuntimeError("broken")


def _single(name: str = "quad", n_trials: int = 14) -> kiln.tuning.Study:
    return kiln.tune(quadratic, n_trials=n_trials, sampler="random", seed=4, name=name)


def _multi() -> kiln.tuning.Study:
    return kiln.tune(
        auc_vs_latency,
        n_trials=12,
        directions=["maximize", "minimize"],
        metrics=["auc", "latency_ms"],
        sampler="nsga2",
        pruner=None,
        seed=0,
        name="auc-vs-latency",
        experiment="fraud",
    )


def _text(r: httpx.Response) -> str:
    return html.unescape(r.text)


def _charts(page: str) -> list[dict[str, Any]]:
    found = re.findall(r'<script type="application/json" class="series">(.*?)</script>', page)
    return [json.loads(spec) for spec in found]


def _shown(value: float) -> str:
    return f"{value:.4g}"  # as the dashboard prints a number in [0.001, 1e6)


def test_the_list_shows_every_study_with_trials_by_state_and_best(
    serve: Callable[..., httpx.Client],
) -> None:
    http = serve()
    empty = http.get("/studies")
    assert empty.status_code == 200 and "No studies yet" in empty.text
    single, multi = _single(), _multi()
    r = http.get("/studies")
    assert r.status_code == 200
    page = _text(r)
    assert re.findall(r'href="/studies/([^"]+)"', r.text) == ["auc-vs-latency", "quad"]
    trials = single.trials
    failed = sum(t.state == "FAIL" for t in trials)
    assert failed, "some trials should fail (x > 1.5)"
    row = page[page.index('href="/studies/quad"') :].split("</tr>")[0]
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells == ["14 / 14", str(14 - failed), "0", str(failed), "0"]
    best = single.best_trial
    assert f'<a href="/runs/{best.run_id}">{_shown(best.value or 0)}</a>' in row
    assert f"trial {best.number}" in row and "minimize" in row and "tuning" in row
    multi_row = page[page.index('href="/studies/auc-vs-latency"') :].split("</tr>")[0]
    assert f"Pareto front: {len(multi.pareto_front)} trials" in multi_row
    assert "auc ↑" in multi_row and "latency_ms ↓" in multi_row and "fraud" in multi_row
    assert 'href="/studies"' in http.get("/").text  # in the nav


def test_a_study_page_shows_history_importances_parallel_coordinates_and_trials(
    serve: Callable[..., httpx.Client],
) -> None:
    study = _single()
    trials = study.trials
    done = [t for t in trials if t.state == "COMPLETE"]
    http = serve(page_size=10)
    r = http.get("/studies/quad")
    assert r.status_code == 200
    page = _text(r)
    best = study.best_trial
    assert f"value = {_shown(best.value or 0)}" in page
    assert f'<a href="/runs/{best.run_id}">trial {best.number}</a>' in page
    assert f"14 of 14: {len(done)} complete, 0 pruned, {14 - len(done)} failed" in page
    # Optimization history: each completed trial's value, and the best so far.
    (chart,) = _charts(r.text)
    assert chart["x"] == [t.number for t in done]
    values, best_so_far = chart["series"][0]["values"], chart["series"][1]["values"]
    assert values == [t.value for t in done] and chart["series"][0]["line"] is False
    assert best_so_far == [min(values[: i + 1]) for i in range(len(values))]
    assert best_so_far[-1] == best.value
    # Importances: Optuna's, through kiln.tuning.
    importances = study.importances()
    assert set(importances) == {"x", "kind"}
    section = page[page.index('id="h-importances"') : page.index('id="h-parallel"')]
    assert re.findall(r'<th scope="row">([^<]+)</th>', section) == list(importances)
    assert section.count("<meter") == 2
    # Parallel coordinates: a line per completed trial over kind, x and the value.
    svg = page[page.index('<svg class="parallel"') : page.index("</svg>")]
    assert svg.count("<polyline") == len(done)
    assert re.findall(r'text-anchor="middle">(kind|x|value)</text>', svg) == ["kind", "x", "value"]
    assert f"<title>trial {best.number}: value={_shown(best.value or 0)}</title>" in svg
    # Trials, 10 a page, each linking to its run; failures say why.
    for t in trials[:10]:
        assert f'<a href="/runs/{t.run_id}">trial {t.number}</a>' in page
    assert f'href="/runs/{trials[10].run_id}"' not in page.split('id="h-trials"')[1]
    assert "Trials 1\u201310 of 14" in page and 'rel="next"' in page
    assert "RuntimeError: diverged at x=" in page
    second = _text(http.get("/studies/quad", params={"page": 2}))
    assert "Trials 11\u201314 of 14" in second and 'rel="next"' not in second
    for t in trials[10:]:
        assert f'<a href="/runs/{t.run_id}">trial {t.number}</a>' in second
    assert "No trials on page 9" in http.get("/studies/quad?page=9").text
    assert "Pareto front" not in page  # one objective


def test_a_multi_objective_study_has_a_pareto_front(serve: Callable[..., httpx.Client]) -> None:
    study = _multi()
    front = study.pareto_front
    http = serve()
    r = http.get("/studies/auc-vs-latency")
    assert r.status_code == 200
    page = _text(r)
    assert "value =" not in page  # no single best
    section = page[page.index('id="h-pareto"') : page.index('id="h-trials"')]
    assert section.count('class="front"><title>') == len(front)
    assert section.count('class="dominated"><title>') == 12 - len(front)
    assert "auc (maximize)" in section and "latency_ms (minimize)" in section
    table = section[section.index('<table class="data front">') :]
    linked = re.findall(r'<a href="/runs/([0-9a-f]+)">trial (\d+)</a>', table)
    assert linked == [(t.run_id, str(t.number)) for t in front]
    # One history per objective, each with its own best so far.
    auc, latency = _charts(r.text)
    assert auc["series"][1]["values"] == sorted(auc["series"][1]["values"])
    assert latency["series"][1]["values"] == sorted(latency["series"][1]["values"], reverse=True)
    assert "For auc" in page and "For latency_ms" in page
    svg = page[page.index('<svg class="parallel"') : page.index("</svg>")]
    assert svg.count("<polyline") == 12
    assert re.findall(r'text-anchor="middle">([a-z_]+)</text>', svg) == [
        "depth",
        "width",
        "auc",
        "latency_ms",
    ]


def test_the_compare_page_draws_parallel_coordinates_with_the_same_code(
    serve: Callable[..., httpx.Client],
) -> None:
    study = _single(n_trials=3)
    ids = [t.run_id for t in study.trials if t.state == "COMPLETE"][:2]
    assert len(ids) == 2
    http = serve()
    page = _text(http.get("/compare", params=[("run", i) for i in ids]))
    svg = page[page.index('<svg class="parallel"') : page.index("</svg>")]
    assert svg.count("<polyline") == 2
    for label in ("params.x", "metrics.value"):
        assert f'text-anchor="middle">{label}</text>' in svg


def test_too_few_trials_and_mistakes_in_the_url(serve: Callable[..., httpx.Client]) -> None:
    kiln.tune(quadratic, n_trials=1, sampler="random", seed=0, name="just-one")
    with pytest.raises(StudyFailed):
        kiln.tune(always_fails, n_trials=5, name="all-failed")
    http = serve()
    one = _text(http.get("/studies/just-one"))
    assert "Not enough to say yet" in one and "(1 completed)" in one
    assert "Needs two completed trials" in one
    failed = http.get("/studies/all-failed")
    assert failed.status_code == 200
    text = _text(failed)
    assert "No completed trial yet" in text and "RuntimeError: broken" in text
    assert "failed" in text and "0 complete" in text
    for path, status, words in (
        ("/studies/nope", 404, "no study named 'nope'"),
        ("/studies/just-on", 404, "did you mean"),
        ("/studies/just-one?page=0", 400, "page must be a whole number >= 1; got '0'"),
        ("/studies/just-one?page=x", 400, "page must be a whole number"),
    ):
        r = http.get(path)
        assert r.status_code == status, (path, r.text)
        assert words in _text(r), (path, r.text)


def test_names_and_values_are_escaped_and_found_by_search(
    serve: Callable[..., httpx.Client],
) -> None:
    _single(name=f"evil {SCRIPT}", n_trials=12)
    http = serve()
    escaped = html.escape(SCRIPT, quote=False)
    link = "/studies/evil%20%3Cscript%3Ealert%281%29%3C/script%3E"
    for path in ("/studies", link, "/search?q=evil", "/"):
        r = http.get(path)
        assert r.status_code == 200, path
        assert SCRIPT not in r.text and escaped in r.text, path
    page = http.get(link).text
    assert EVIL not in page and html.escape(EVIL, quote=False) in page  # a categorical value
    found = http.get("/search", params={"q": "EVIL <SCRIPT"}).text
    assert f'href="{link}"' in found and "No study named like that" not in found
    assert "No study named like that" in http.get("/search?q=zzz").text
    home = http.get("/").text
    assert f'href="{link}"' in home and 'id="h-studies"' in home


def test_studies_pages_on_postgresql(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, serve: Callable[..., httpx.Client]
) -> None:
    monkeypatch.setenv("KILN_DB_URL", pg_url)
    reset_settings()
    _single(n_trials=6)
    _multi()
    http = serve()
    assert re.findall(r'href="/studies/([^"]+)"', http.get("/studies").text) == [
        "auc-vs-latency",
        "quad",
    ]
    for path in ("/studies/quad", "/studies/auc-vs-latency"):
        assert http.get(path).status_code == 200, path


def test_studies_pages_in_a_browser(browser: Any) -> None:
    _single(name=f"evil {SCRIPT}", n_trials=12)
    _single()
    _multi()
    pages = {
        "studies": "/studies",
        "study": "/studies/quad",
        "study-pareto": "/studies/auc-vs-latency",
        "study-escaped": "/studies/evil%20%3Cscript%3Ealert%281%29%3C%2Fscript%3E",
    }
    with running(create_app(UISettings())) as url:
        for size, (width, height) in SIZES.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            watched = Watched(context.new_page())
            for name, path in pages.items():
                page = watched.visit(url + path, shot=f"{name}-{size}")
                assert page.locator("h1").count(), name
                if name.startswith("study"):
                    page.locator("figure.series-chart canvas").first.wait_for()
            page = watched.visit(url + pages["study-escaped"])
            assert SCRIPT in page.inner_text("h1")
            assert page.locator("main script:not([type='application/json'])").count() == 0
            page = watched.visit(f"{url}/studies")
            page.get_by_role("link", name="auc-vs-latency").click()
            page.wait_for_load_state("networkidle")
            assert page.locator("svg.pareto circle.front").count() >= 1
            assert page.locator("figure.series-chart canvas").count() >= 2
            context.close()
            assert watched.problems == [] and watched.dialogs == []

        # The keyboard reaches every visible control, in order, by Tab alone.
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        for path in (pages["studies"], pages["study"]):
            assert_tab_reaches_every_control(Watched(context.new_page()).visit(url + path))
        context.close()
