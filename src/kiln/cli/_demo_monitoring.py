"""The demo's last act: production traffic shifts, and the monitor notices.

``kiln serve`` takes ordinary traffic (validation transactions), then a surge of
purchases at electronics, jewelry and gift-card merchants, the categories fraud rings
favour. A monitor with one rule (PSI above 0.2 on any model input) judges the surge
against the ordinary traffic just before it, both read from the server's own prediction
log: the alerts name the inputs that moved, and the drift report is written as one HTML
file. (Against the training profile, the trailing-window features read online "now"
differ from the same windows computed at each training transaction's time even on
ordinary traffic: the demo's history ends at midnight, and a card's activity clusters
around its own purchases. Comparing two live windows isolates the surge.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import kiln
from kiln.cli._demo_serving import DEPLOYMENT, bodies_of, kiln_serve, send, wait_logged
from kiln.core import KilnError
from kiln.monitoring import AlertEvent, Evaluation, Monitor, Rule, evaluate

__all__ = ["PSI_LIMIT", "SURGE_CATEGORIES", "MonitoringReport", "watch_traffic"]

SURGE_CATEGORIES = ("electronics", "jewelry", "gift_cards")
PSI_LIMIT = 0.2
RULE = Rule("psi", feature="*", above=PSI_LIMIT, name="input-shift", actions=())
"""No action: the demo prints what fired (``kiln monitor`` rules add log, webhook, rollback
or a retraining flow)."""


@dataclass(frozen=True, kw_only=True)
class MonitoringReport:
    """What the monitor made of the surge."""

    requests: int
    """Requests sent: the ordinary window's, then the surge's."""
    failed: int
    psi: dict[str, float]
    """Per input, the PSI of the champion's surge traffic against its ordinary traffic."""
    drifted: tuple[str, ...]
    """The inputs whose PSI passed the limit, most shifted first."""
    alerts: tuple[str, ...]
    """The inputs of the champion's alerts firing after the surge."""
    not_judged: tuple[str, ...]
    """Why some traffic was not judged (the canary's few rows)."""
    html: Path
    html_bytes: int


def watch_traffic(
    console: Console,
    *,
    rows: pd.DataFrame,
    categories: pd.Series,
    request_columns: tuple[str, ...],
    requests: int = 400,
) -> MonitoringReport:
    """Serve ordinary traffic then a category surge; judge the surge against the traffic
    before it."""
    surge_rows = rows[rows["merchant_id"].map(categories).isin(SURGE_CATEGORIES)]
    if surge_rows.empty:
        raise KilnError("the validation rows hold no purchase in the surge categories")
    ordinary = rows.sample(n=requests, replace=len(rows) < requests, random_state=11)
    surge = surge_rows.sample(n=requests, replace=len(surge_rows) < requests, random_state=12)
    log = kiln.get_settings().home / "demo" / "serve-monitoring.log"
    failed = 0
    spans = []
    with kiln_serve([DEPLOYMENT], log=log) as (url, _):
        for label, frame, prefix in (
            ("Ordinary traffic", ordinary, "demo-ordinary"),
            ("Category surge", surge, "demo-surge"),
        ):
            started = datetime.now(UTC)
            failures, _ = send(console, url, bodies_of(frame, request_columns, prefix), label)
            failed += sum(failures.values())
            wait_logged(started, requests - sum(failures.values()))
            spans.append((started, datetime.now(UTC)))
    (calm_start, _), (surge_start, surge_end) = spans
    # The window holds the surge; the reference is the ordinary traffic just before it.
    margin = timedelta(milliseconds=100)
    window = _ms(surge_end - surge_start + 2 * margin)
    reference = _ms(surge_start - calm_start)
    monitor = Monitor(DEPLOYMENT, [RULE], window=window, reference=reference)
    evaluation = evaluate(monitor, now=surge_end + margin)
    psi = {
        str(o.feature): float(o.value or 0.0)
        for o in evaluation.observations
        if o.arm == "champion" and o.feature is not None
    }
    drifted = tuple(sorted((n for n, v in psi.items() if v > PSI_LIMIT), key=lambda n: -psi[n]))
    report = kiln.monitoring.report(
        DEPLOYMENT, since=evaluation.since, until=evaluation.until, reference=reference
    )
    html = report.write_html(kiln.get_settings().home / "demo" / "monitoring-report.html")
    result = MonitoringReport(
        requests=2 * requests,
        failed=failed,
        psi=psi,
        drifted=drifted,
        alerts=tuple(sorted(str(e.feature) for e in evaluation.firing if e.arm == "champion")),
        not_judged=tuple(r for reasons in evaluation.problems.values() for r in reasons),
        html=html,
        html_bytes=html.stat().st_size,
    )
    _show(console, result, evaluation)
    return result


def _ms(span: timedelta) -> str:
    return f"{int(span.total_seconds() * 1000)}ms"


def _show(console: Console, result: MonitoringReport, evaluation: Evaluation) -> None:
    table = Table(
        title="Input drift of the surge against the ordinary traffic before it "
        f"(PSI, champion; alert above {PSI_LIMIT:g})",
        title_justify="left",
        header_style="bold",
        box=None,
    )
    for column in ("input", "PSI", ""):
        table.add_column(column, justify="left" if column == "input" else "right")
    for name, value in sorted(result.psi.items(), key=lambda kv: -kv[1]):
        flag = "[red]alert[/]" if value > PSI_LIMIT else "[green]ok[/]"
        table.add_row(escape(name), f"{value:.3f}", flag)
    console.print(table)
    console.print(
        f"[bold]Monitor[/] rule {RULE.name}: the surge of {', '.join(SURGE_CATEGORIES)} "
        f"purchases fired {len(evaluation.firing)} alert(s):",
        highlight=False,
    )
    for event in _champion_first(evaluation.firing):
        shown = "n/a" if event.value is None else f"{event.value:.3f}"
        console.print(
            f"  [red]ALERT[/] {escape(str(event.feature))}: PSI {shown} > {PSI_LIMIT:g} "
            f"(version {event.version}, {event.arm}; event {event.id})",
            highlight=False,
        )
    for reason in result.not_judged:
        console.print(f"  not judged: {escape(reason)}", highlight=False)
    console.print(
        f"[bold]Drift report[/] {result.html} ({result.html_bytes / 1024:.0f} KB, "
        f"self-contained HTML); again any time: kiln monitor report {DEPLOYMENT} --window 1h",
        soft_wrap=True,
        highlight=False,
    )


def _champion_first(events: Sequence[AlertEvent]) -> list[AlertEvent]:
    return sorted(events, key=lambda e: (e.arm != "champion", -(e.value or 0.0)))
