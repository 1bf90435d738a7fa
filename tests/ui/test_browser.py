"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright
(nothing is downloaded). Every page loads with no console error and no failed request
at a laptop and a wide screen size; filters, sorting, pages, columns, folding and
compare work by clicking; the keyboard reaches every control; user text cannot inject
markup; the token is asked for. Screenshots of every page land in build/ui-screenshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _server import running

import kiln
from kiln.ui import UISettings, create_app

SHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"
SIZES = {"laptop": (1366, 768), "wide": (1920, 1080)}


class Watched:
    """A page whose console errors, uncaught exceptions, failed requests and dialogs are
    collected, so a test can assert there were none."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        page.on(
            "console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}")
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"),
        )
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def visit(self, url: str, shot: str | None = None) -> Any:
        """Open ``url`` and wait until it is complete: loaded, and every chart that fetches
        its data drawn (the page marks that; in-page charts draw as the page loads)."""
        self.page.goto(url, wait_until="load")
        if self.page.locator("figure.chart").count():
            self.page.wait_for_selector("html[data-charts-ready]", state="attached")
        if shot is not None:
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
        return self.page


@pytest.fixture
def population() -> dict[str, str]:
    ids = {}
    for i in range(12):
        with kiln.start_run(experiment="churn", name=f"run-{i:02d}") as run:
            run.log_params({"lr": round(0.01 * (i + 1), 3), "depth": i % 4})
            for step in range(200):
                run.log_metric("auc", 0.5 + 0.02 * i + 0.0005 * step, step=step)
            run.log_metric("loss", 1.0 / (i + 1))
            ids[run.name] = run.id
    with kiln.start_run(experiment="churn", name="<img src=x onerror=alert(1)>") as run:
        run.set_tags({"note": "<script>alert(2)</script>"})
        run.log_text("plain text <b>not bold</b>\n", "notes.txt")
        ids["evil"] = run.id
    with kiln.start_run(experiment="churn", name="sweep") as parent:
        for j in range(3):
            with kiln.start_run(name=f"trial-{j}", parent=parent) as child:
                child.log_metric("auc", 0.6 + j / 10)
    ids["sweep"] = parent.id
    return ids


@pytest.fixture
def site(population: dict[str, str]) -> Iterator[str]:
    with running(create_app(UISettings(page_size=10))) as url:
        yield url


def pages_of(url: str, ids: dict[str, str]) -> dict[str, str]:
    return {
        "home": f"{url}/",
        "experiments": f"{url}/experiments",
        "runs": f"{url}/experiments/churn",
        "run": f"{url}/runs/{ids['run-03']}",
        "artifact": f"{url}/runs/{ids['evil']}/artifacts/notes.txt",
        "compare": f"{url}/compare?run={ids['run-01']}&run={ids['run-02']}&run={ids['run-03']}",
    }


@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_loads_cleanly_at_each_size(
    browser: Any, site: str, population: dict[str, str], size: str
) -> None:
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    watched = Watched(context.new_page())
    for name, url in pages_of(site, population).items():
        page = watched.visit(url, shot=f"{name}-{size}")
        assert page.locator("h1").count() >= 1, name
    context.close()
    assert watched.problems == []
    assert watched.dialogs == []


def test_the_runs_table_works_by_clicking(
    browser: Any, site: str, population: dict[str, str]
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    watched = Watched(context.new_page())
    page = watched.visit(f"{site}/experiments/churn")
    assert "of 14 top-level runs" in page.inner_text("p.count")
    # Sort by clicking the metric's header, twice for the other direction.
    page.get_by_role("link", name="metrics.auc").click()
    page.wait_for_load_state("networkidle")
    assert "sort=-metrics.auc" in page.url
    first = page.locator("table.runs tbody tr:not(.child) td:nth-child(2) a").first.inner_text()
    assert first == "run-11"
    # Filter by typing the search language and pressing Enter.
    page.fill("#q", "params.depth = 1")
    page.press("#q", "Enter")
    page.wait_for_load_state("networkidle")
    assert "of 3 matching" in page.inner_text("p.count")
    names = page.locator("table.runs tbody td:nth-child(2) a").all_inner_texts()
    assert sorted(names) == ["run-01", "run-05", "run-09"]
    # The next page of the unfiltered table.
    page = watched.visit(f"{site}/experiments/churn")
    page.get_by_role("link", name="next \u203a").click()
    page.wait_for_load_state("networkidle")
    assert "Runs 11\u201314 of 14" in page.inner_text("p.count")
    # Nested runs unfold under their parent.
    page = watched.visit(f"{site}/experiments/churn?sort=attributes.name&page=1")
    fold = page.locator("button.fold")
    if fold.count() == 0:  # the sweep sorts onto the second page by name
        page = watched.visit(f"{site}/experiments/churn?sort=-attributes.name")
        fold = page.locator("button.fold")
    assert page.locator("tr.child").first.is_hidden()
    fold.first.click()
    assert page.locator("tr.child").first.is_visible()
    assert fold.first.get_attribute("aria-expanded") == "true"
    # Choose columns: add params.lr.
    page.locator("details.columns summary").click()
    page.get_by_label("params.lr").check()
    page.get_by_role("button", name="Show columns").click()
    page.wait_for_load_state("networkidle")
    assert "col=params.lr" in page.url
    assert page.locator("table.runs thead").inner_text().count("params.lr") == 1
    # Compare two runs by ticking them.
    page = watched.visit(f"{site}/experiments/churn?sort=attributes.name")
    page.get_by_label("select run-01 for comparison").check()
    page.get_by_label("select run-02 for comparison").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_load_state("networkidle")
    assert page.url.startswith(f"{site}/compare?")
    assert page.locator("svg.parallel polyline").count() == 2
    context.close()
    assert watched.problems == []


def test_charts_draw_and_zoom_to_exact_values(
    browser: Any, site: str, population: dict[str, str]
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    watched = Watched(context.new_page())
    page = watched.visit(f"{site}/runs/{population['run-05']}")
    chart = page.locator("figure.chart[data-key='auc']")
    chart.locator("canvas").first.wait_for()
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] / 2, steps=5)
    with page.expect_response(lambda r: "/metrics/auc?" in r.url and "from=" in r.url) as zoom:
        page.mouse.up()
    assert zoom.value.json()["exact"] is True
    chart.get_by_label("log scale").check()
    chart.get_by_role("button", name="reset zoom").click()
    assert chart.locator("canvas").count() >= 1
    context.close()
    assert watched.problems == []


def test_the_keyboard_reaches_every_control(
    browser: Any, site: str, population: dict[str, str]
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    assert_tab_reaches_every_control(Watched(context.new_page()).visit(f"{site}/experiments/churn"))
    context.close()


def assert_tab_reaches_every_control(page: Any) -> None:
    """Tab alone, from the top, focuses every visible link, button, input and summary."""
    controls = (
        "Array.from(document.querySelectorAll('a[href], button, input:not([type=hidden]),"
        " summary')).filter(e => e.checkVisibility ? e.checkVisibility() : true)"
    )
    wanted = page.evaluate(f"() => {controls}.length")
    reached = set()
    for _ in range(wanted + 10):
        page.keyboard.press("Tab")
        reached.add(page.evaluate(f"() => {controls}.indexOf(document.activeElement)"))
    assert set(range(wanted)) <= reached, (wanted, sorted(reached))


def test_user_text_cannot_inject_markup(
    browser: Any, site: str, population: dict[str, str]
) -> None:
    context = browser.new_context()
    watched = Watched(context.new_page())
    for url in (f"{site}/experiments/churn", f"{site}/runs/{population['evil']}", f"{site}/"):
        page = watched.visit(url)
        assert page.locator("img[src=x]").count() == 0
        assert "<img src=x onerror=alert(1)>" in page.inner_text("main")
    page = watched.visit(f"{site}/runs/{population['evil']}")
    assert "<script>alert(2)</script>" in page.inner_text("main")
    context.close()
    assert watched.dialogs == []


def test_a_token_is_asked_for_and_remembered(browser: Any, population: dict[str, str]) -> None:
    with running(create_app(UISettings(token="open-sesame"))) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/experiments")
        assert page.url.startswith(f"{url}/login")
        page.fill("input[name=token]", "wrong")
        page.press("input[name=token]", "Enter")
        page.wait_for_load_state("networkidle")
        assert "not this dashboard" in page.inner_text("main")
        page.fill("input[name=token]", "open-sesame")
        page.press("input[name=token]", "Enter")
        page.wait_for_load_state("networkidle")
        assert page.url == f"{url}/experiments"
        page.goto(f"{url}/experiments/churn")
        assert "churn" in page.inner_text("h1")
        context.close()


def test_monitoring_pages_in_a_browser(browser: Any, tmp_path: Path) -> None:
    """The monitoring pages clean at both sizes with their charts drawn, reached by
    clicking, every control by Tab, and markup in a rule name or a category as text."""
    from _ui_monitoring import DEPLOYMENT, SCRIPT, SKEWED, populate, skewed

    populate()
    skewed(tmp_path)
    event = kiln.monitoring.events(DEPLOYMENT)[0]
    pages = {
        "monitoring": "/monitoring",
        "monitoring-deployment": f"/monitoring/{DEPLOYMENT}?window=1h",
        "monitoring-event": f"/monitoring/{DEPLOYMENT}/events/{event.id}",
        "monitoring-skew": f"/monitoring/{SKEWED}/skew?window=1h",
    }
    with running(create_app(UISettings())) as url:
        for size, (width, height) in SIZES.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            watched = Watched(context.new_page())
            for name, path in pages.items():
                page = watched.visit(url + path)
                figures = page.locator("figure.series-chart").count()
                if figures:  # every chart drawn before the screenshot
                    page.locator("figure.series-chart canvas").nth(figures - 1).wait_for()
                    assert page.locator("figure.series-chart canvas").count() == figures
                watched.visit(url + path, shot=f"{name}-{size}")
                assert page.locator("h1").count() == 1, name
            context.close()
            assert watched.problems == [] and watched.dialogs == []
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        watched = Watched(context.new_page())
        page = watched.visit(f"{url}/")
        page.get_by_role("link", name="Monitoring", exact=True).click()
        page.locator("table.monitoring").get_by_role("link", name=DEPLOYMENT).click()
        page.wait_for_load_state("networkidle")
        assert page.url == f"{url}/monitoring/{DEPLOYMENT}?window=1d"
        page.get_by_role("link", name="1h", exact=True).click()
        page.wait_for_load_state("networkidle")
        assert page.url.endswith("?window=1h")
        assert page.locator("figure.histogram svg").count() == 3
        main = page.inner_text("main")
        assert "amount<b>psi" in main and SCRIPT in main
        assert page.locator("main b").count() == 0
        page.locator(f"a[href^='/monitoring/{DEPLOYMENT}/events/{event.id}']").click()
        page.wait_for_load_state("networkidle")
        assert "amount<b>psi" in page.inner_text("h1")
        assert_tab_reaches_every_control(watched.visit(url + pages["monitoring-deployment"]))
        context.close()
        assert watched.problems == [] and watched.dialogs == []
