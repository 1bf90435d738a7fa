"""A monitoring report as one HTML file: inline CSS and SVG, no script, nothing to fetch.

A report is mailed, attached to a ticket, opened offline years later; anything it loads
from elsewhere may be gone by then, so it carries everything. Charting libraries and data
embedded as JSON are what make such reports megabytes; a histogram is at most a hundred
bars a side, so each side is drawn as one SVG step path (a few kilobytes a column) and
the tables are plain HTML. Every text that came from users (deployment, arms, columns,
categories) is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.monitoring.report import ArmReport, ColumnReport, MonitoringReport

__all__ = ["column_html", "render"]

_W, _H = 600, 210  # numeric chart; categorical charts grow with their rows
_L, _R, _T, _B = 54, 14, 28, 46  # margins around the plot
_LABEL_W = 170  # categorical charts: room for the category names
_ROW = 18
_LABEL_CHARS = 26

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;padding:0 16px;
color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;
border-bottom:1px solid #ddd}h3{font-size:16px;margin:20px 0 4px}
small,.meta,.note{color:#666}
table{border-collapse:collapse;margin:6px 0 12px}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
th{font-weight:600;background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b3261e;font-weight:600}.ok{color:#1e7a35}
figure{margin:6px 0 14px}figcaption{font-size:13px}
svg text{font:11px system-ui,sans-serif;fill:#444}svg .t{font-size:12px;fill:#222}
.r{fill:#8fa8cf}.c{fill:#e8772e;fill-opacity:.45;stroke:#c4561a;stroke-width:1}
.ax{stroke:#888;fill:none}svg .new{fill:#b3261e;font-weight:600}
"""


def render(report: MonitoringReport) -> str:
    ids = _feature_ids(report)
    title = (
        f"Monitoring report: {report.deployment}"
        if report.deployment is not None
        else "Drift report: reference and current data"
    )
    body = [
        f"<header><h1>{_e(title)}</h1>{_meta(report)}</header>",
        _summary(report),
        *(_verdicts(arm, ids) for arm in report.arms),
        _quality(report),
        _features(report, ids),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _meta(report: MonitoringReport) -> str:
    parts = []
    if report.since is not None and report.until is not None:
        span = f"{_when(report.since)} to {_when(report.until)}"
        window = f"window {report.window}: {span}" if report.window else span
        parts.append(_e(window))
    parts.append(f"reference: {_e(report.reference)}")
    parts.append(f"made {_e(_when(report.created_at))}")
    return f'<p class="meta">{" &middot; ".join(parts)}</p>'


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _feature_ids(report: MonitoringReport) -> dict[str, str]:
    """An anchor per column, by position: a column name is not a safe id."""
    ids: dict[str, str] = {}
    for arm in report.arms:
        for c in arm.columns:
            ids.setdefault(c.column, f"f{len(ids)}")
    return ids


def _summary(report: MonitoringReport) -> str:
    rows = []
    for arm in report.arms:
        drifted = arm.drift.drifted
        flag = "bad" if drifted else "ok"
        rows.append(
            f"<tr><td>{_e(arm.label)}</td><td class=n>{arm.rows:,}</td>"
            f"<td class=n>{arm.reference_rows:,}</td>"
            f'<td class="n {flag}">{len(drifted)} of {len(arm.columns)}</td>'
            f"<td>{_e(', '.join(drifted)) or '-'}</td></tr>"
        )
    return (
        "<section><h2>Summary</h2><table><tr><th>version and arm</th><th>rows</th>"
        "<th>reference rows</th><th>drifted</th><th>drifted columns</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )


def _verdicts(arm: ArmReport, ids: dict[str, str]) -> str:
    rows = []
    for c in arm.columns:
        d = c.drift
        verdict = '<td class="bad">drifted</td>' if d.drifted else '<td class="ok">stable</td>'
        rows.append(
            f'<tr><td><a href="#{ids[c.column]}">{_e(c.column)}</a></td><td>{d.kind}</td>'
            f"<td>{_e(d.method)}</td><td class=n>{_num(d.statistic)}</td>"
            f"<td class=n>{_num(d.p_value)}</td><td class=n>{_num(d.threshold)}</td>"
            f"<td class=n>{_pct(d.missing_reference)}</td>"
            f"<td class=n>{_pct(d.missing_current)}</td>{verdict}</tr>"
        )
    return (
        f"<section><h2>Drift: {_e(arm.label)}</h2><table><tr><th>column</th><th>kind</th>"
        "<th>method</th><th>statistic</th><th>p-value</th><th>threshold</th>"
        "<th>missing (reference)</th><th>missing (current)</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )


def _quality(report: MonitoringReport) -> str:
    if report.quality is None:
        if report.deployment is None:
            return ""
        why = report.quality_note or "not asked for"
        return f'<section><h2>Quality</h2><p class="note">No live quality: {_e(why)}</p></section>'
    q = report.quality
    rows = []
    for r in q.rows:
        figures = (r.auc, r.log_loss, r.accuracy, r.precision, r.recall, r.calibration_error)
        rows.append(
            f"<tr><td>version {r.version} ({_e(r.arm)})</td><td class=n>{r.predictions:,}</td>"
            f"<td class=n>{r.labeled:,}</td><td class=n>{_pct(r.coverage)}</td>"
            f"<td class=n>{r.positives:,}</td>"
            + "".join(f"<td class=n>{_num(v)}</td>" for v in figures)
            + "</tr>"
        )
    return (
        f'<section><h2>Quality</h2><p class="meta">score column {_e(q.score)}, '
        f"threshold {_num(q.threshold)}</p><table><tr><th>version and arm</th>"
        "<th>predictions</th><th>labeled</th><th>coverage</th><th>positives</th><th>AUC</th>"
        "<th>log loss</th><th>accuracy</th><th>precision</th><th>recall</th>"
        "<th>calibration error</th></tr>" + "".join(rows) + "</table></section>"
    )


def _features(report: MonitoringReport, ids: dict[str, str]) -> str:
    out = ["<section><h2>Features</h2>"]
    for name, anchor in ids.items():
        per_arm = [(arm, c) for arm in report.arms for c in arm.columns if c.column == name]
        kind = per_arm[0][1].kind
        out.append(f'<article id="{anchor}"><h3>{_e(name)} <small>{kind}</small></h3>')
        for arm, c in per_arm:
            out.append(f"<figure><figcaption>{_caption(arm, c)}</figcaption>")
            out.append(column_html(c))
            out.append("</figure>")
        out.append("</article>")
    out.append("</section>")
    return "".join(out)


def _caption(arm: ArmReport, c: ColumnReport) -> str:
    d = c.drift
    test = f", p {_num(d.p_value)}" if d.p_value is not None else ""
    verdict = '<span class="bad">drifted</span>' if d.drifted else '<span class="ok">stable</span>'
    text = (
        f"{_e(arm.label)}: {_e(d.method)} {_num(d.statistic)}{test}, threshold "
        f"{_num(d.threshold)}: {verdict} &middot; missing {_pct(d.missing_reference)} "
        f"&rarr; {_pct(d.missing_current)}"
    )
    if c.new:
        text += f" &middot; new: {_e(', '.join(c.new))}"
    return text


def column_html(c: ColumnReport) -> str:
    """One column's histograms: an SVG, or a note when there is nothing to draw."""
    return _numeric_svg(c) if c.kind == "numeric" else _categorical_svg(c)


def _numeric_svg(c: ColumnReport) -> str:
    if not c.edges:
        return '<p class="note">The reference has no values to bin.</p>'
    lo, hi = c.edges[0], c.edges[-1]
    width, height = _W - _L - _R, _H - _T - _B
    base = _T + height
    xs = [_L + (v - lo) / ((hi - lo) or 1.0) * width for v in c.edges]
    ref, cur = _shares(c.reference), _shares(c.current)
    top = max([*ref, *cur, 0.0]) or 1.0
    out = [_svg_open(_W, _H, c.column)]
    for cls, shares in (("r", ref), ("c", cur)):
        ys = [base - s / top * height for s in shares]
        out.append(f'<path class="{cls}" d="{_steps(xs, ys, base)}"/>')
    ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    tx = [_L + width * k / 4 for k in range(5)]
    out.append(
        f'<path class="ax" d="M{_L} {_T}V{_n(base)}H{_L + width}'
        + "".join(f"M{_n(x)} {_n(base)}v4" for x in tx)
        + '"/>'
    )
    out.extend(
        f'<text x="{_n(x)}" y="{_n(base + 16)}" text-anchor="middle">{_num(v)}</text>'
        for x, v in zip(tx, ticks, strict=True)
    )
    for k in range(3):
        share = top * k / 2
        y = base - height * k / 2
        out.append(f'<text x="{_L - 4}" y="{_n(y + 4)}" text-anchor="end">{_pct(share)}</text>')
    out.append(
        f'<text class="t" x="{_n(_L + width / 2)}" y="{_H - 8}" text-anchor="middle">'
        f"{_e(c.column)}</text>"
        f'<text class="t" transform="rotate(-90)" x="{_n(height / 2 - base)}" y="13" '
        'text-anchor="middle">share of values</text>'
    )
    out.append(_legend(_W - _R, c))
    out.append("</svg>")
    return "".join(out)


def _categorical_svg(c: ColumnReport) -> str:
    labels = [(v, v in c.new) for v in c.categories]
    ref, cur = list(c.reference), list(c.current)
    if c.reference_other or c.current_other:
        labels.append(("other values", False))
        ref.append(c.reference_other)
        cur.append(c.current_other)
    if not labels:
        return '<p class="note">No values on either side.</p>'
    ref_s, cur_s = _shares(ref), _shares(cur)
    top = max([*ref_s, *cur_s, 0.0]) or 1.0
    width = _W - _LABEL_W - _R
    base = _T + len(labels) * _ROW
    height = base + 44
    out = [_svg_open(_W, height, c.column)]
    for i, ((label, new), r, k) in enumerate(zip(labels, ref_s, cur_s, strict=True)):
        y = _T + i * _ROW
        short = label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1]
        text = _e(short) + ("&hellip;" if short != label else "") + (" (new)" if new else "")
        tip = f"<title>{_e(label)}</title>" if short != label else ""
        cls = ' class="new"' if new else ""
        out.append(
            f'<text{cls} x="{_LABEL_W - 6}" y="{y + 12}" text-anchor="end">{tip}{text}</text>'
            f'<rect class="r" x="{_LABEL_W}" y="{y + 2}" width="{_n(r / top * width)}" '
            f'height="7"/><rect class="c" x="{_LABEL_W}" y="{y + 9}" '
            f'width="{_n(k / top * width)}" height="7"/>'
        )
    tx = [_LABEL_W + width * k / 2 for k in range(3)]
    out.append(
        f'<path class="ax" d="M{_LABEL_W} {_T}V{base}H{_LABEL_W + width}'
        + "".join(f"M{_n(x)} {base}v4" for x in tx)
        + '"/>'
    )
    out.extend(
        f'<text x="{_n(x)}" y="{base + 16}" text-anchor="middle">{_pct(top * k / 2)}</text>'
        for k, x in enumerate(tx)
    )
    out.append(
        f'<text class="t" x="{_n(_LABEL_W + width / 2)}" y="{height - 8}" '
        f'text-anchor="middle">share of values: {_e(c.column)}</text>'
    )
    out.append(_legend(_W - _R, c))
    out.append("</svg>")
    return "".join(out)


def _svg_open(width: int, height: int, column: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="reference and current histograms of {_e(column)}">'
    )


def _legend(right: int, c: ColumnReport) -> str:
    """Two swatches at the top right, with each side's count of values."""
    ref_n = sum(c.reference) + c.reference_other
    cur_n = sum(c.current) + c.current_other
    x = right - 290
    return (
        f'<rect class="r" x="{x}" y="6" width="10" height="10"/>'
        f'<text x="{x + 14}" y="15">reference ({ref_n:,})</text>'
        f'<rect class="c" x="{x + 150}" y="6" width="10" height="10"/>'
        f'<text x="{x + 164}" y="15">current ({cur_n:,})</text>'
    )


def _steps(xs: Sequence[float], ys: Sequence[float], base: float) -> str:
    """A histogram as one closed step outline: a vertical move only where the height
    changes, so flat runs of bins cost nothing."""
    d = [f"M{_n(xs[0])} {_n(base)}"]
    at = _n(base)
    for i, y in enumerate(ys):
        level = _n(y)
        if level != at:
            if i:
                d.append(f"H{_n(xs[i])}")
            d.append(f"V{level}")
            at = level
    d.append(f"H{_n(xs[-1])}V{_n(base)}Z")
    return "".join(d)


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [n / total for n in counts] if total else [0.0] * len(counts)


def _n(value: float) -> str:
    """A coordinate to a tenth of a pixel, without a trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value or value in (float("inf"), float("-inf")):
        return _e(str(value))
    return f"{value:.4g}"


def _pct(share: float) -> str:
    if share == 0:
        return "0%"
    return f"{share * 100:.1f}%" if share < 0.1 else f"{share * 100:.0f}%"
