"""Monitoring reports: drift's own verdicts with both sides counted on the reference
profile's bins, live quality when labels exist, and three renderings (JSON-valid dict,
Rich tables, one self-contained escaped HTML file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.monitoring import MonitoringReport, report
from kiln.serving.predlog import Prediction, PredictionLog

NOW = datetime.now(UTC)
SCRIPT = "<script>alert(1)</script>"


def rows(n: int, seed: int, amount_mean: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(amount_mean, 20.0, n),
            "items": rng.integers(1, 6, n),
            "category": rng.choice(["grocery", "travel", "online"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def register(seed: int) -> None:
    train = rows(2_000, seed)
    model = LogisticRegression().fit(train[["amount", "items"]], train.amount > 100)
    kiln.models.register(
        "fraud", model, input_example=train[["amount", "items"]][:2], training_data=train
    )


def serve(frame: pd.DataFrame, version: int, arm: str, hours_ago: float) -> None:
    log = PredictionLog(
        kiln.get_settings().home / "offline" / "predictions", flush_rows=10_000, flush_interval_s=60
    )
    at = NOW - timedelta(hours=hours_ago)
    log.append_many(
        Prediction(
            request_id=f"{arm}-{hours_ago}-{i}",
            deployment="fraud-api",
            model=f"fraud/{version}",
            version=version,
            arm=arm,
            features={"amount": float(r.amount), "items": int(r.items), "category": r.category},
            output=0.9 if r.amount > 130 else 0.1,
            latency_ms=1.0,
            at=at + timedelta(seconds=i),
        )
        for i, r in enumerate(frame.itertuples())
    )
    log.close()


def wide(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """25 features: 20 numbers (the first shifted by ``shift``), 5 categories."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {
        f"num_{i:02d}": rng.normal(i + (shift if i == 0 else 0.0), 1.0 + i / 10, n)
        for i in range(20)
    }
    for i in range(5):
        data[f"cat_{i}"] = rng.choice([f"value_{k}" for k in range(4 + 3 * i)], n)
    return pd.DataFrame(data)


def test_a_deployment_report_holds_drifts_verdicts_on_the_reference_profiles_bins() -> None:
    register(1)
    register(2)
    serve(rows(300, 12, amount_mean=140.0), version=1, arm="champion", hours_ago=0.5)
    serve(rows(200, 11), version=2, arm="canary", hours_ago=0.5)
    got = report("fraud-api", window="1h")
    want = kiln.monitoring.drift("fraud-api", window="1h")
    assert got.drifted == want.drifted == {(1, "champion"): ["amount"]}
    assert [(a.version, a.arm) for a in got.arms] == [(1, "champion"), (2, "canary")]
    assert got.deployment == "fraud-api" and got.window == "1h"
    assert got.until is not None and got.since == got.until - timedelta(hours=1)
    for arm in got.arms:
        assert arm.version is not None and arm.arm is not None
        assert arm.drift == want.results[arm.version, arm.arm]  # the verdicts, unchanged
        profile = kiln.models.reference_profile(f"fraud/{arm.version}")
        assert arm.reference_rows == profile.rows == 2_000
        for c in arm.columns:
            ref = profile[c.column]
            if c.kind == "numeric":
                assert ref.histogram is not None
                assert c.edges == ref.histogram.edges
                assert c.reference == ref.histogram.counts
                assert len(c.current) == len(c.edges) - 1
                assert sum(c.current) == arm.rows
            else:
                assert c.categories == tuple(v for v, _ in ref.top)
                assert c.new == () and c.current_other == 0
                assert sum(c.current) == arm.rows and sum(c.reference) == 2_000
    champion = got.arms[0]
    assert champion.rows == 300 and got.arms[1].rows == 200
    amount = next(c for c in champion.columns if c.column == "amount")
    edges = np.asarray(amount.edges)
    shares = np.asarray(amount.current) / 300
    assert shares @ (edges[:-1] + edges[1:]) / 2 > 130  # the shifted mean shows in the bars
    assert got.quality is None and "no labels" in (got.quality_note or "")


def test_quality_joins_the_report_when_labels_came_back() -> None:
    register(1)
    served = rows(300, 3)
    serve(served, version=1, arm="champion", hours_ago=0.5)
    labels = pd.DataFrame(
        {
            "request_id": [f"champion-0.5-{i}" for i in range(100)],
            "label": served.amount[:100] > 130,
        }
    )
    kiln.monitoring.log_labels("fraud-api", labels)
    got = report("fraud-api", window="1h")
    assert got.quality is not None and got.quality_note is None
    (row,) = got.quality.rows
    assert (row.version, row.arm, row.predictions, row.labeled) == (1, "champion", 300, 100)
    assert "<h2>Quality</h2>" in got.to_html() and "AUC" in got.to_html()
    assert report("fraud-api", window="1h", quality=False).quality_note is None


def test_against_an_earlier_window_both_sides_are_traffic_and_predictions_are_binned() -> None:
    register(1)
    serve(rows(300, 20), version=1, arm="champion", hours_ago=5)
    serve(rows(250, 21, amount_mean=140.0), version=1, arm="champion", hours_ago=0.5)
    got = report("fraud-api", window="60m", reference="6h")
    want = kiln.monitoring.drift("fraud-api", window="60m", reference="6h")
    assert got.drifted == want.drifted
    (arm,) = got.arms
    assert arm.reference_rows == 300 and arm.rows == 250
    output = next(c for c in arm.columns if c.column == "output")
    assert sum(output.reference) == 300 and sum(output.current) == 250
    assert "before the window" in got.reference


def test_two_datasets_counts_outer_values_in_outer_bins_and_show_new_categories() -> None:
    reference = pd.DataFrame({"x": np.linspace(0.0, 10.0, 1_000), "c": np.repeat(["a", "b"], 500)})
    current = pd.DataFrame(
        {
            "x": [-5.0, 0.0, 5.0, 10.0, 50.0, np.nan],
            "c": ["a", "a", SCRIPT, SCRIPT, "d", None],
        }
    )
    got = report(reference=reference, current=current)
    (arm,) = got.arms
    assert (arm.version, arm.arm, arm.rows, arm.reference_rows) == (None, None, 6, 1_000)
    x, c = arm.columns
    profile = kiln.validation.profile(reference)
    assert profile["x"].histogram is not None and x.edges == profile["x"].histogram.edges
    assert x.current[0] == 2 and x.current[-1] == 2 and sum(x.current) == 5  # NaN is missing
    clipped = np.clip([-5.0, 0.0, 5.0, 10.0, 50.0], x.edges[0], x.edges[-1])
    assert list(x.current) == np.histogram(clipped, bins=x.edges)[0].tolist()
    assert x.drift.missing_current == pytest.approx(1 / 6)
    assert c.categories == ("a", "b", SCRIPT, "d") and c.new == (SCRIPT, "d")
    assert c.reference == (500, 500, 0, 0) and c.current == (2, 0, 2, 1)
    assert arm.drift == kiln.monitoring.drift(reference=reference, current=current)


def test_a_reference_listing_only_its_top_values_counts_the_rest_as_other() -> None:
    reference = pd.DataFrame({"c": [f"v{i % 30}" for i in range(3_000)]})
    current = pd.DataFrame({"c": ["v0", "v29", "brand-new"] * 10})
    profile = kiln.validation.profile(reference, top_k=5)
    (arm,) = report(reference=profile, current=current).arms
    (c,) = arm.columns
    assert len(c.categories) == 5 and c.new == ()  # unlisted: maybe new, maybe not
    assert sum(c.reference) + c.reference_other == 3_000
    assert sum(c.current) + c.current_other == 30


def test_html_is_self_contained_escaped_and_small(tmp_path: Path) -> None:
    reference, current = wide(5_000, 1), wide(5_000, 2, shift=1.0)
    current["cat_0"] = current["cat_0"].where(np.arange(5_000) % 7 != 0, SCRIPT)
    reference = reference.rename(columns={"num_01": 'num <b>"01"</b> & co'})
    current = current.rename(columns={"num_01": 'num <b>"01"</b> & co'})
    got = report(reference=reference, current=current)
    assert len(got.arms[0].columns) == 25 and "num_00" in got.arms[0].drift.drifted
    page = got.to_html()
    size = len(page.encode("utf-8"))
    assert size < 300_000, size
    lowered = page.lower()
    for outside in ("http://", "https://", "//cdn", "<script", "<link", "@import", "url("):
        assert outside not in lowered, outside
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "num &lt;b&gt;&quot;01&quot;&lt;/b&gt; &amp; co" in page and "<b>" not in page
    assert page.count("<svg") == 25 and page.startswith("<!doctype html>")
    for column in got.arms[0].columns:  # each column's drawing, as a page embeds it alone
        fragment = column.to_html()
        assert fragment.startswith("<svg") and fragment in page
    (bold,) = [c for c in got.arms[0].columns if c.column.startswith("num <b>")]
    assert "<b>" not in bold.to_html() and "&lt;b&gt;" in bold.to_html()
    path = got.write_html(tmp_path / "report.html")
    assert path.read_text(encoding="utf-8") == page
    smaller = report(reference=reference, current=current, columns=["num_00"])
    smaller.write_html(path)  # a rerun replaces the earlier report, whole
    assert path.read_text(encoding="utf-8") == smaller.to_html()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # nothing left aside
    with pytest.raises(NotFound, match="no-such-folder"):
        got.write_html(tmp_path / "no-such-folder" / "report.html")


def test_to_dict_is_json_and_to_rich_prints_the_verdicts() -> None:
    register(1)
    serve(rows(300, 12, amount_mean=140.0), version=1, arm="champion", hours_ago=0.5)
    got = report("fraud-api", window="1h")
    data = json.loads(json.dumps(got.to_dict(), allow_nan=False))
    assert data["deployment"] == "fraud-api" and data["since"] == got.since.isoformat()
    (arm,) = data["arms"]
    assert (arm["version"], arm["arm"], arm["drifted"]) == (1, "champion", ["amount"])
    amount = next(c for c in arm["columns"] if c["column"] == "amount")
    assert amount["edges"] == list(got.arms[0].columns[0].edges)
    assert sum(amount["current_counts"]) == 300 and amount["drifted"] is True
    console = Console(record=True, width=160, color_system=None)
    console.print(got.to_rich())
    text = console.export_text()
    assert "version 1 (champion): 1 of 3 columns drifted" in text
    assert "amount" in text and "yes" in text and "No live quality" in text
    marked = report(
        reference=pd.DataFrame({"[red]x": [1.0, 2.0, 3.0]}),
        current=pd.DataFrame({"[red]x": [1.0, 2.5, 3.0]}),
    )
    console = Console(record=True, width=160, color_system=None)
    console.print(marked.to_rich())
    assert "[red]x" in console.export_text()  # a name, never markup


def test_mistakes_are_named() -> None:
    with pytest.raises(NotFound, match="'nobody-api' served nothing"):
        report("nobody-api", window="1d")
    with pytest.raises(InvalidInput, match=r"deployment 'fraud-api' needs window="):
        report("fraud-api")
    with pytest.raises(InvalidInput, match="not current="):
        report("fraud-api", window="1d", current=rows(10, 1))
    with pytest.raises(InvalidInput, match="reference= and current="):
        report(reference=rows(10, 1))
    with pytest.raises(InvalidInput, match="window=, since= and until="):
        report(reference=rows(10, 1), current=rows(10, 2), window="1d")
    with pytest.raises(InvalidInput, match="quality must be True or False"):
        report("fraud-api", window="1d", quality="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="window"):
        report("fraud-api", window="one day")
    assert isinstance(report(reference=rows(50, 1), current=rows(50, 2)), MonitoringReport)
