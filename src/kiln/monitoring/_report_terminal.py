"""A monitoring report as Rich tables, for ``kiln monitor report`` in a terminal.

Names from users go in as :class:`rich.text.Text`, never as markup, so a column called
``[red]x`` prints as written.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from kiln.monitoring.quality import QualityReport
    from kiln.monitoring.report import ArmReport, MonitoringReport

__all__ = ["render"]


def render(report: MonitoringReport) -> Group:
    parts: list[Table | Text] = [_heading(report)]
    parts.extend(_verdicts(arm) for arm in report.arms)
    if report.quality is not None:
        parts.append(_quality(report.quality))
    elif report.deployment is not None:
        why = report.quality_note or "not asked for"
        parts.append(Text(f"No live quality: {why}", style="dim"))
    return Group(*parts)


def _heading(report: MonitoringReport) -> Text:
    text = Text()
    if report.deployment is not None:
        text.append(report.deployment, style="bold")
    else:
        text.append("reference and current data", style="bold")
    if report.since is not None and report.until is not None:
        span = f"{report.since.astimezone(UTC):%Y-%m-%d %H:%M} to "
        span += f"{report.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        text.append(f"  window {report.window}: {span}" if report.window else f"  {span}")
    text.append(f"\nreference: {report.reference}", style="dim")
    return text


def _verdicts(arm: ArmReport) -> Table:
    drifted = len(arm.drift.drifted)
    title = Text(f"{arm.label}: {drifted} of {len(arm.columns)} columns drifted, ")
    title.append(f"{arm.rows:,} rows")
    table = Table(title=title, title_justify="left")
    table.add_column("column")
    table.add_column("method")
    for name in ("statistic", "p-value", "threshold", "missing"):
        table.add_column(name, justify="right")
    table.add_column("drifted")
    for c in arm.columns:
        d = c.drift
        table.add_row(
            Text(c.column),
            d.method,
            _num(d.statistic),
            _num(d.p_value),
            _num(d.threshold),
            f"{d.missing_current:.1%}",
            Text("yes", style="bold red") if d.drifted else Text("no", style="green"),
        )
    return table


def _quality(q: QualityReport) -> Table:
    title = Text(f"Live quality (score {q.score}, threshold {q.threshold:g})")
    table = Table(title=title, title_justify="left")
    table.add_column("version")
    table.add_column("arm")
    for name in (
        "predictions",
        "labeled",
        "coverage",
        "AUC",
        "log loss",
        "accuracy",
        "precision",
        "recall",
        "calibration",
    ):
        table.add_column(name, justify="right")
    for r in q.rows:
        figures = (r.auc, r.log_loss, r.accuracy, r.precision, r.recall, r.calibration_error)
        table.add_row(
            str(r.version),
            Text(r.arm),
            f"{r.predictions:,}",
            f"{r.labeled:,}",
            f"{r.coverage:.1%}",
            *(_num(v) for v in figures),
        )
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
