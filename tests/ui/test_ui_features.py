"""The features pages over HTTP (a real server on 127.0.0.1): the catalog, a definition's
source, TTL, fields, freshness and versions with what each changed, the stores in use,
errors as 4xx pages and escaped descriptions; then in chromium (as test_browser.py): clean
pages at both sizes, with screenshots."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _server import running
from test_browser import SIZES, Watched

import kiln
from kiln.core import reset_settings
from kiln.features import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    ParquetSource,
    RequestSource,
    WindowedFeatureView,
)
from kiln.ui import UISettings, create_app

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
SCRIPT = "<script>alert(1)</script>"
user = Entity("user", ["user_id"], description=f"a customer {SCRIPT}")


def doubled(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"x2": df["x"] * 2})


def _stats(path: Path, ttl: str = "2d", extra: bool = False) -> FeatureView:
    schema = [Field("x", "float64")] + ([Field("y", "float64")] if extra else [])
    return FeatureView(
        "stats", entities=[user], source=ParquetSource(str(path)), schema=schema, ttl=ttl
    )


def _apply(tmp_path: Path) -> kiln.FeatureStore:
    times = pa.array([NOW - timedelta(hours=h) for h in (3, 2, 1)], pa.timestamp("us", "UTC"))
    pq.write_table(
        pa.table(
            {
                "user_id": [1, 2, 1],
                "event_timestamp": times,
                "x": [0.1, 0.2, 0.3],
                "y": [1.0, 2.0, 3.0],
            }
        ),
        tmp_path / "users.parquet",
    )
    stats = _stats(tmp_path / "users.parquet")
    windows = WindowedFeatureView(
        "spend",
        entities=[user],
        source=ParquetSource(str(tmp_path / "users.parquet")),
        aggregations=[Aggregation("y", "sum", "1d")],
    )
    od = OnDemandFeatureView(
        "scaled",
        sources=[RequestSource("req", [Field("amount", "float64")])],
        schema=[Field("x2", "float64")],
        function=doubled,
        inputs=["stats:x"],
    )
    service = FeatureService("fraud", features=["stats:x", "spend:y_sum_1d"], description=SCRIPT)
    fs = kiln.FeatureStore()
    fs.apply([user, stats, windows, od, service])
    assert fs.materialize(end=NOW).ok
    return fs


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with running(create_app(UISettings())) as url, httpx.Client(base_url=url) as client:
        yield client


def test_catalog_lists_entities_views_services_freshness_and_stores(
    tmp_path: Path, http: httpx.Client
) -> None:
    assert "No feature views applied" in http.get("/features").text
    _apply(tmp_path)
    r = http.get("/features")
    assert r.status_code == 200
    text = html.unescape(r.text)
    for link in (
        "/features/view/stats",
        "/features/view/spend",
        "/features/view/scaled",
        "/features/entity/user",
        "/features/service/fraud",
    ):
        assert f'href="{link}"' in r.text, link
    for label in ("feature view", "windowed view", "on-demand view", "computed per request"):
        assert label in text, label
    assert f"parquet: {tmp_path / 'users.parquet'}" in text and "2d" in text
    assert "2024-05-01 11:00:00" in text  # the newest event materialized
    online = kiln.get_settings().describe()["online_url"]
    assert online in text and str(kiln.FeatureStore().offline_dir) in text
    assert SCRIPT not in r.text and html.escape(SCRIPT, quote=False) in r.text


def test_a_view_page_shows_source_fields_ttl_freshness_and_plan_diffs(
    tmp_path: Path, http: httpx.Client
) -> None:
    fs = _apply(tmp_path)
    page = html.unescape(http.get("/features/view/stats").text)
    assert "version 1" in page and "first version" in page
    assert str(tmp_path / "users.parquet") in page and "event_timestamp" in page
    assert re.search(r"<td>x</td><td><code>float64</code></td>", page)
    assert "<dt>TTL</dt><dd>2d</dd>" in page
    # Freshness: when, up to which time, and the newest event materialized.
    assert "2024-05-01 12:00:00" in page and "2024-05-01 11:00:00" in page
    assert "(current)" in page
    assert 'href="/features/service/fraud"' in page and 'href="/features/view/scaled"' in page

    fs.apply([_stats(tmp_path / "users.parquet", ttl="1d", extra=True)])
    page = html.unescape(http.get("/features/view/stats").text)
    assert "version 2" in page
    assert "schema: added y: float64" in page and 'ttl: "2d" -> "1d"' in page
    assert "The current version has not been materialized yet" in page
    old = html.unescape(http.get("/features/view/stats?version=1").text)
    assert "<dt>TTL</dt><dd>2d</dd>" in old and "the current version is" in old
    fs.materialize(end=NOW)
    assert "not been materialized" not in http.get("/features/view/stats").text


def test_windowed_on_demand_entity_and_service_pages(tmp_path: Path, http: httpx.Client) -> None:
    _apply(tmp_path)
    spend = html.unescape(http.get("/features/view/spend").text)
    assert "y_sum_1d" in spend and "<td>sum</td>" in spend and "<td>1d</td>" in spend
    assert "2024-05-01 11:00:00" in spend  # windowed views keep their freshness too
    scaled = html.unescape(http.get("/features/view/scaled").text)
    assert "request (req)" in scaled and "stats:x" in scaled and "def doubled" in scaled
    entity = http.get("/features/entity/user")
    assert entity.status_code == 200 and "user_id" in entity.text
    assert 'href="/features/view/stats"' in entity.text  # the views that use it
    service = http.get("/features/service/fraud")
    assert service.status_code == 200 and 'href="/features/view/spend"' in service.text
    for page in (entity.text, service.text):
        assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Search links name definition kinds; they land on the page.
    moved = http.get("/features/feature_view/stats", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/features/view/stats"


def test_mistakes_in_the_url_are_4xx_pages(tmp_path: Path, http: httpx.Client) -> None:
    _apply(tmp_path)
    for path, status, words in (
        ("/features/view/stat", 404, "did you mean stats"),
        ("/features/widget/stats", 404, "kinds: entity, view, service"),
        ("/features/view/stats?version=9", 404, "versions: 1"),
        ("/features/view/stats?version=two", 400, "version must be a whole number"),
        ("/features/view/stats?version=0", 400, "version must be a whole number"),
        ("/features/entity/stats", 404, "no entity named 'stats'"),
    ):
        r = http.get(path)
        assert r.status_code == status, path
        assert words in html.unescape(r.text), (path, r.text)


def test_passwords_in_store_urls_are_masked(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    monkeypatch.setenv("KILN_DB_URL", url)
    reset_settings()
    _apply(tmp_path)  # on PostgreSQL
    with running(create_app(UISettings())) as base, httpx.Client(base_url=base) as client:
        text = html.unescape(client.get("/features").text)
        view = client.get("/features/view/stats").text
    assert "s3cret-pw" not in text and "s3cret-pw" not in view
    assert "postgres:***@127.0.0.1" in text


def test_feature_pages_in_a_browser(browser: Any, tmp_path: Path) -> None:
    fs = _apply(tmp_path)
    fs.apply([_stats(tmp_path / "users.parquet", ttl="1d", extra=True)])
    pages = {
        "features": "/features",
        "feature-view": "/features/view/stats",
        "feature-windowed": "/features/view/spend",
        "feature-on-demand": "/features/view/scaled",
        "feature-entity": "/features/entity/user",
        "feature-service": "/features/service/fraud",
    }
    with running(create_app(UISettings())) as url:
        for size, (width, height) in SIZES.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            watched = Watched(context.new_page())
            for name, path in pages.items():
                assert watched.visit(url + path, shot=f"{name}-{size}").locator("h1").count()
            page = watched.visit(f"{url}/features")
            page.click("a[href='/features/view/stats']")
            page.click("a[href='/features/view/stats?version=1']")
            assert "version 1" in page.locator("h1").inner_text()
            context.close()
            assert watched.problems == [] and watched.dialogs == []
