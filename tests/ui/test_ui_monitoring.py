"""The monitoring pages over HTTP (a real server on 127.0.0.1): every deployment's drift
verdicts and alerts, one deployment's drift over time from the stored history, its
histograms, live quality equal to ``kiln.monitoring.quality``'s, skew stored and
recomputed on request, an alert event with its actions; mistakes in the URL as 4xx pages;
user text escaped. (In chromium: test_browser.py.)"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server import running
from _ui_monitoring import DEPLOYMENT, QUIET, RULE, SCRIPT, SKEWED, populate, skewed

import kiln
from kiln.ui import UISettings, create_app

WINDOWS = ("1h", "6h", "1d", "7d", "30d")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with running(create_app(UISettings())) as url, httpx.Client(base_url=url) as client:
        yield client


def charts(text: str) -> list[dict[str, Any]]:
    """The chart specs embedded in a page (JSON for app.js)."""
    found = re.findall(r'<script type="application/json" class="series">(.*?)</script>', text)
    return [json.loads(spec) for spec in found]


def figure(value: float | None) -> str:
    """A number as the pages print it (4 significant digits)."""
    assert value is not None
    return f"{value:.4g}"


def test_the_overview_names_drifted_features_alerts_and_recent_events(
    http: httpx.Client,
) -> None:
    empty = http.get("/monitoring")
    assert empty.status_code == 200
    assert "No deployments" in empty.text and "No alert events" in empty.text
    populate()
    r = http.get("/monitoring")
    assert r.status_code == 200
    text = html.unescape(r.text)
    assert '<a href="/monitoring">Monitoring</a>' in r.text  # in the navigation
    row = text[text.index(f'href="/monitoring/{DEPLOYMENT}?window=1d"') :]
    row = row[: row.index("</tr>")]
    assert "v1 champion" in row and "drifted" in row
    assert "amount, category" in row and "(2 of 3)" in row  # items is as trained
    assert '<span class="status a-firing">2</span>' in row  # psi reopened, accuracy
    quiet = text[text.index(f'href="/monitoring/{QUIET}?window=1d"') :]
    quiet = quiet[: quiet.index("</tr>")]
    assert f"deployment '{QUIET}' served nothing" in quiet and "never" in quiet
    events = kiln.monitoring.events()
    assert len(events) == 3
    assert sorted(e.status for e in events) == ["firing", "firing", "resolved"]
    for e in events:
        assert f'href="/monitoring/{DEPLOYMENT}/events/{e.id}?window=1d"' in r.text
    assert text.count("log: done") == 3
    # Each window is a link keeping the page; the window changes what is judged.
    for w in WINDOWS[:2] + WINDOWS[3:]:
        assert f'href="/monitoring?window={w}"' in r.text
    short = html.unescape(http.get("/monitoring?window=1h").text)
    assert "drift in the last 1h" in short and "amount, category" in short


def test_a_deployment_page_draws_history_histograms_quality_and_events(
    http: httpx.Client,
) -> None:
    monitored = populate()
    r = http.get(f"/monitoring/{DEPLOYMENT}?window=1h")
    assert r.status_code == 200
    text = html.unescape(r.text)
    # Drift in the window, per version and arm, and each feature's section.
    assert re.search(r'<td class="drifted">amount, category</td>', text)
    assert "3 in the window" in text  # evaluations
    assert re.search(r"<h3 [^>]*>amount <span[^>]*>drifted: v1 champion</span>", text)
    assert re.search(r"<h3 [^>]*>items</h3>", text)
    # Drift over time: the stored values, one point per evaluation.
    specs = {(c["ylabel"], tuple(s["label"] for s in c["series"])): c for c in charts(r.text)}
    psi = specs[("psi", ("v1 champion",))]
    stored = kiln.monitoring.history(DEPLOYMENT, metric="psi", feature="amount")
    assert len(psi["x"]) == len(stored) == 3
    assert psi["x"] == [t.timestamp() for t in monitored.evaluations]
    assert psi["series"][0]["values"] == pytest.approx([v.value for v in stored])
    assert psi["series"][0]["values"][0] > 1.0 > psi["series"][0]["values"][1]
    assert "psi of amount per evaluation <small>(3 values)</small>" in text
    assert sum(1 for c in charts(r.text) if c["ylabel"] == "missing_rate") == 3  # per input
    assert specs[("share_drifted", ("v1 champion",))]["series"][0]["values"][1] == 0.0
    # The latest histograms: one per feature and arm, each side on the reference's bins.
    assert text.count('<figure class="histogram">') == 3
    assert r.text.count('aria-label="reference and current histograms of') == 3
    report = kiln.monitoring.report(DEPLOYMENT, window="1h")
    amount = report.arms[0].columns[0]
    assert amount.column == "amount" and amount.to_html() in r.text
    # Live quality from the delayed labels: kiln.monitoring.quality's numbers.
    (total,) = kiln.monitoring.quality(DEPLOYMENT).rows
    assert total.predictions == total.labeled == 1_800
    quality = text[text.index('<table class="data quality">') :]
    first = quality[: quality.index("</tr>", quality.index('<tr class="total">'))]
    assert "1,800" in first and "100 %" in first
    for name in ("accuracy", "auc", "log_loss", "precision", "recall"):
        assert f'<td class="num q-{name}">{figure(getattr(total, name))}</td>' in first, name
    assert total.accuracy == pytest.approx(0.875)
    buckets = kiln.monitoring.quality(DEPLOYMENT, window="10m").rows
    assert len(buckets) == 3 and quality.count("+10m") == 3
    accuracy = specs[("accuracy", ("v1 champion",))]  # as evaluated, and per bucket
    assert accuracy["series"][0]["values"] == pytest.approx([0.875] * 3)
    # Alert events, with their actions.
    for event in kiln.monitoring.events(DEPLOYMENT):
        assert f'href="/monitoring/{DEPLOYMENT}/events/{event.id}?window=1h"' in r.text
    assert text.count("log: done") == 3
    # No online features: nothing to recompute, said so.
    assert "looks up no online features" in text


def test_a_deployment_that_served_nothing_says_why(http: httpx.Client) -> None:
    populate()
    r = http.get(f"/monitoring/{QUIET}")
    assert r.status_code == 200
    text = html.unescape(r.text)
    assert f"No drift report for the last 1d: deployment '{QUIET}' served nothing" in text
    assert "No live quality for the last 1d" in text
    assert "No alert events for this deployment" in text
    assert charts(r.text) == []


def test_skew_stored_and_recomputed_on_request(tmp_path: Path, http: httpx.Client) -> None:
    skewed(tmp_path)
    page = html.unescape(http.get(f"/monitoring/{SKEWED}").text)
    latest = page[page.index('<table class="data compact skew-latest">') :]
    latest = latest[: latest.index("</table>")]
    assert "<td>x</td><td" in latest and ">0.2</td>" in latest and "<td>n</td>" in latest
    assert f'href="/monitoring/{SKEWED}/skew?window=1d"' in page
    r = http.get(f"/monitoring/{SKEWED}/skew?window=1h")
    assert r.status_code == 200
    text = html.unescape(r.text)
    result = kiln.monitoring.skew(SKEWED, window="1h")
    assert result.skewed == ["x"]
    assert f"A sample of {result.requests} requests" in text
    assert "skew</span> in x" in text
    row = text[text.index("<td>x</td>") :]
    row = row[: row.index("</tr>")]
    assert "<code>stats:x</code>" in row and "<strong>0.2</strong>" in row
    assert "Skewed rows of x" in text and "9.9" in text and "user_id=3" in text


def test_an_event_page_shows_the_event_its_actions_and_its_values(http: httpx.Client) -> None:
    populate()
    resolved = next(e for e in kiln.monitoring.events(DEPLOYMENT) if e.status == "resolved")
    r = http.get(f"/monitoring/{DEPLOYMENT}/events/{resolved.id}")
    assert r.status_code == 200
    text = html.unescape(r.text)
    assert f"<h1>{RULE} <span" in text and "resolved</span>" in text
    assert resolved.message in text and resolved.resolved_at is not None
    assert f"<dt>resolved</dt><dd>{resolved.resolved_at:%Y-%m-%d %H:%M:%S} UTC" in text
    assert "<td>log</td>" in text and '"logged": true' in text
    (chart,) = charts(r.text)
    assert [s["label"] for s in chart["series"]] == ["v1 champion", "threshold"]
    assert chart["series"][1]["values"] == [1.0] * len(chart["x"])
    assert len(chart["x"]) == 3  # the values a day either side of it


def test_mistakes_in_the_url_are_4xx_pages(http: httpx.Client) -> None:
    populate()
    event = kiln.monitoring.events(DEPLOYMENT)[0]
    for path, status, words in (
        ("/monitoring?window=2w", 400, "window must be one of 1h, 6h, 1d, 7d, 30d; got '2w'"),
        (f"/monitoring/{DEPLOYMENT}?window=1y", 400, "window must be one of 1h, 6h,"),
        (f"/monitoring/{DEPLOYMENT}/skew?window=", 400, "got ''"),
        (f"/monitoring/{DEPLOYMENT}/events/{event.id}?window=9d", 400, "got '9d'"),
        ("/monitoring/fraud-apj", 404, "fraud-apj"),
        ("/monitoring/fraud-apj/skew", 404, "fraud-apj"),
        (f"/monitoring/{DEPLOYMENT}/events/nope", 404, "no alert event 'nope'"),
        (f"/monitoring/{QUIET}/events/{event.id}", 404, f"'{QUIET}' has no alert event"),
    ):
        r = http.get(path)
        assert r.status_code == status, (path, r.text)
        assert words in html.unescape(r.text), (path, r.text)


def test_user_text_is_escaped(http: httpx.Client) -> None:
    populate()
    pages = [
        http.get("/monitoring").text,
        http.get(f"/monitoring/{DEPLOYMENT}").text,
        http.get(f"/monitoring/{DEPLOYMENT}/events/{kiln.monitoring.events()[0].id}").text,
    ]
    for text in pages:
        assert "amount<b>psi" not in text and "amount&lt;b&gt;psi" in text
    deployment = pages[1]
    assert SCRIPT not in deployment  # a category served, drawn as a new one
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in deployment
