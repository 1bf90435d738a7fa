"""Monitoring reports: drift verdicts, the histograms behind them and live quality, in one
frozen record rendered three ways (a dict for the dashboard, Rich tables for the terminal,
one self-contained HTML file).

A verdict alone ("amount drifted, KS p = 0.001") does not say what moved; the histograms
do. Both sides are counted on the same bins, the reference profile's, so bars compare one
for one: numbers on its histogram edges (current values beyond them counted in the outer
bins, as the profile counts its own), categories on its top values (with the categories
current brought that the reference never had, when the profile lists all of its values).
The verdicts are :func:`kiln.monitoring.drift`'s own, never recomputed here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput, NotFound
from kiln.monitoring.drift import ColumnDrift, DriftResult, _categories, _numbers, compare

if TYPE_CHECKING:
    from rich.console import Group

    from kiln.monitoring.quality import QualityReport
    from kiln.validation import ColumnProfile, Profile

__all__ = ["ArmReport", "ColumnReport", "MonitoringReport", "report"]

_NEW_SHOWN = 10  # new categories drawn one by one; more are counted with "other"


@dataclass(frozen=True)
class ColumnReport:
    """One column of one version and arm: the verdict and both sides' counts on the same
    bins. Numbers have ``edges`` (``len(reference) + 1`` of them, the reference profile's)
    and no ``categories``; categories have ``categories`` (the reference's top values, then
    ``new`` ones) and no ``edges``. ``*_other`` count the values not drawn one by one."""

    drift: ColumnDrift
    edges: tuple[float, ...]
    categories: tuple[str, ...]
    reference: tuple[int, ...]
    current: tuple[int, ...]
    reference_other: int = 0
    current_other: int = 0
    new: tuple[str, ...] = ()  # categories in current that the reference never had

    @property
    def column(self) -> str:
        return self.drift.column

    @property
    def kind(self) -> str:
        return self.drift.kind

    def to_html(self) -> str:
        """Both sides' histograms as an HTML fragment, as the HTML report draws this
        column: one inline SVG of each side's share of values per bin (reference filled,
        current outlined), or a short note when there is nothing to draw. Every text in
        it is escaped; its parts carry the classes ``r`` (reference), ``c`` (current),
        ``ax`` (axes), ``t`` (titles) and ``new`` (new categories) for the page around it
        to color."""
        from kiln.monitoring._report_html import column_html

        return column_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            **_plain(asdict(self.drift)),
            "edges": _plain(list(self.edges)),
            "categories": list(self.categories),
            "reference_counts": list(self.reference),
            "current_counts": list(self.current),
            "reference_other": self.reference_other,
            "current_other": self.current_other,
            "new": list(self.new),
        }


@dataclass(frozen=True)
class ArmReport:
    """One model version and traffic arm (both None for two plain datasets)."""

    version: int | None
    arm: str | None
    rows: int  # current rows (requests' rows in the window)
    reference_rows: int  # rows the reference profile describes
    drift: DriftResult
    columns: tuple[ColumnReport, ...]

    @property
    def label(self) -> str:
        if self.version is None:
            return "current"
        return f"version {self.version} ({self.arm})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "arm": self.arm,
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "drifted": self.drift.drifted,
            "share_drifted": self.drift.share_drifted,
            "columns": [c.to_dict() for c in self.columns],
        }


@dataclass(frozen=True)
class MonitoringReport:
    """What a deployment served in a window against its reference, per version and arm,
    with live quality where labels came back. Plain values only; render it with
    :meth:`to_dict` (JSON), :meth:`to_rich` (terminal) or :meth:`to_html`."""

    deployment: str | None
    window: str | None  # as asked ("1d"); None when since/until bound it
    since: datetime | None
    until: datetime | None
    reference: str  # what the current traffic was compared with, in words
    arms: tuple[ArmReport, ...]
    quality: QualityReport | None
    quality_note: str | None  # why quality is missing (no labels yet), when it is
    created_at: datetime

    @property
    def drifted(self) -> dict[tuple[int | None, str | None], list[str]]:
        return {(a.version, a.arm): a.drift.drifted for a in self.arms if a.drift.drifted}

    def to_dict(self) -> dict[str, Any]:
        """Valid JSON: times as ISO text, an infinite statistic as None."""
        return {
            "deployment": self.deployment,
            "window": self.window,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "reference": self.reference,
            "created_at": _iso(self.created_at),
            "arms": [a.to_dict() for a in self.arms],
            "quality": _plain(self.quality.to_dict()) if self.quality else None,
            "quality_note": self.quality_note,
        }

    def to_html(self) -> str:
        """One HTML file that needs nothing else: inline CSS and SVG, no script, no URL."""
        from kiln.monitoring._report_html import render

        return render(self)

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_html` to ``path`` whole or not at all (written aside, forced to
        disk, renamed over any earlier report)."""
        target = Path(path)
        if not target.parent.is_dir():
            raise NotFound(f"write_html: folder {str(target.parent)!r} does not exist")
        _replace_atomically(target, self.to_html().encode("utf-8"))
        return target

    def to_rich(self) -> Group:
        """Rich renderables for ``console.print``: a heading, one verdict table per version
        and arm, and the quality table."""
        from kiln.monitoring._report_terminal import render

        return render(self)


def report(
    deployment: str | None = None,
    *,
    reference: Any = None,
    current: Any = None,
    window: str | timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: Sequence[str] | None = None,
    method: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    quality: bool = True,
) -> MonitoringReport:
    """A report of ``deployment``'s traffic in ``window`` (or ``since``/``until``): the
    drift of each version and arm against ``reference`` (as :func:`kiln.monitoring.drift`
    takes it: ``"training"`` by default, a profile or data, or an earlier span such as
    ``"7d"``), the histograms of both sides, and live quality when labels were logged
    (``quality=False`` skips it).

    ``report(reference=df_a, current=df_b)`` reports on two datasets instead.
    """
    if not isinstance(quality, bool):
        raise InvalidInput(f"quality must be True or False; got {quality!r}")
    if deployment is None:
        return _datasets_report(
            reference, current, window, since, until, columns, method, thresholds
        )
    if current is not None:
        raise InvalidInput(
            "a report of a deployment compares what it served: give window= or since=, not current="
        )
    if window is None and since is None:
        raise InvalidInput(
            f"the report of deployment {deployment!r} needs window= (e.g. '1d') or since="
        )
    return _deployment_report(
        deployment,
        "training" if reference is None else reference,
        window,
        since,
        until,
        columns,
        method,
        thresholds,
        quality,
    )


def _datasets_report(
    reference: Any,
    current: Any,
    window: str | timedelta | None,
    since: datetime | None,
    until: datetime | None,
    columns: Sequence[str] | None,
    method: str | Mapping[str, str] | None,
    thresholds: Mapping[str, float] | None,
) -> MonitoringReport:
    from kiln.validation import Profile, read_table

    if reference is None or current is None:
        raise InvalidInput(
            "report takes a deployment name, or reference= and current= (two datasets)"
        )
    if window is not None or since is not None or until is not None:
        raise InvalidInput("window=, since= and until= select a deployment's traffic")
    ref = reference if isinstance(reference, Profile) else read_table(reference, "reference")
    cur = read_table(current, "current")
    result = compare(ref, cur, columns=columns, method=method, thresholds=thresholds)
    arm = _arm(None, None, result, _profile_of(ref, result), cur)
    return MonitoringReport(
        deployment=None,
        window=None,
        since=None,
        until=None,
        reference=_describe(reference),
        arms=(arm,),
        quality=None,
        quality_note=None,
        created_at=datetime.now(UTC),
    )


def _deployment_report(
    deployment: str,
    reference: Any,
    window: str | timedelta | None,
    since: datetime | None,
    until: datetime | None,
    columns: Sequence[str] | None,
    method: str | Mapping[str, str] | None,
    thresholds: Mapping[str, float] | None,
    with_quality: bool,
) -> MonitoringReport:
    from kiln.monitoring.drift import drift
    from kiln.monitoring.served import (
        _between,
        _by_version_and_arm,
        _earlier_span,
        _reference_of,
        _served_columns,
    )
    from kiln.serving.predlog import read_predictions
    from kiln.validation import Profile

    served = drift(
        deployment,
        reference=reference,
        window=window,
        since=since,
        until=until,
        columns=columns,
        method=method,
        thresholds=thresholds,
    )
    # the same rows drift compared: its window's bounds, shadow answers left out
    back = _earlier_span(reference)
    first = served.since - back if back is not None else served.since
    logged = read_predictions(deployment=deployment, since=first)
    logged = logged.filter(pc.invert(logged["shadow"]))
    parts = _by_version_and_arm(_between(logged, served.since, served.until))
    before = _between(logged, served.since - back, served.since) if back is not None else None
    profiles: dict[tuple[int, tuple[str, ...]], Profile] = {}  # given data, profiled once
    arms = []
    for key in sorted(served.results):
        result = served.results[key]
        version, arm = key
        part = parts[key]
        if before is not None:
            earlier = before.filter(
                pc.and_(pc.equal(before["version"], version), pc.equal(before["arm"], arm))
            )
            ref_profile = _profile_of(_served_columns(earlier, outputs=True), result)
            cur = _served_columns(part, outputs=True)
        else:
            ref = _reference_of(str(part["model"][0].as_py()), reference)
            if not isinstance(ref, Profile):
                same = (id(ref), tuple(c.column for c in result.columns))
                if same not in profiles:
                    profiles[same] = _profile_of(ref, result)
                ref = profiles[same]
            ref_profile = ref
            cur = _served_columns(part, outputs=False)
        arms.append(_arm(version, arm, result, ref_profile, cur))
    quality_report, note = (
        _quality(deployment, served.since, served.until) if with_quality else (None, None)
    )
    return MonitoringReport(
        deployment=deployment,
        window=None if window is None else str(window),
        since=served.since,
        until=served.until,
        reference=_describe(reference),
        arms=tuple(arms),
        quality=quality_report,
        quality_note=note,
        created_at=datetime.now(UTC),
    )


def _quality(
    deployment: str, since: datetime, until: datetime
) -> tuple[QualityReport | None, str | None]:
    """Live quality over the report's span, or why there is none: a report is still
    worth reading before any label came back, or for a model that answers no score."""
    from kiln.monitoring.quality import quality

    try:
        return quality(deployment, since=since, until=until), None
    except (NotFound, InvalidInput) as exc:
        return None, str(exc)


def _profile_of(reference: Any, result: DriftResult) -> Profile:
    from kiln.validation import Profile, profile

    if isinstance(reference, Profile):
        return reference
    return profile(reference, columns=[c.column for c in result.columns])


def _arm(
    version: int | None, arm: str | None, result: DriftResult, ref: Profile, cur: pa.Table
) -> ArmReport:
    columns = tuple(_column(c, ref[c.column], cur.column(c.column)) for c in result.columns)
    return ArmReport(version, arm, cur.num_rows, ref.rows, result, columns)


def _column(verdict: ColumnDrift, ref: ColumnProfile, cur: pa.ChunkedArray) -> ColumnReport:
    if verdict.kind == "numeric":
        if ref.histogram is None:  # a reference with no values: nothing to bin on
            return ColumnReport(verdict, (), (), (), ())
        edges = np.asarray(ref.histogram.edges, dtype=np.float64)
        values, _ = _numbers(cur)
        values = values[np.isfinite(values)]  # as the profile's histogram counts
        counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
        return ColumnReport(
            verdict,
            tuple(float(e) for e in edges),
            (),
            tuple(int(c) for c in ref.histogram.counts),
            tuple(int(c) for c in counts),
        )
    listed = dict(ref.top)
    complete = ref.distinct_exact and len(ref.top) == ref.distinct
    found, _ = _categories(cur)
    new: list[str] = []
    if complete:  # a value the reference lacks is new, not one of its unlisted ones
        unseen = [v for v in found if v not in listed]
        new = sorted(unseen, key=lambda v: (-found[v], v))[:_NEW_SHOWN]
    shown = [*listed, *new]
    current = [int(found.get(v, 0)) for v in shown]
    return ColumnReport(
        verdict,
        (),
        tuple(shown),
        tuple(int(listed.get(v, 0)) for v in shown),
        tuple(current),
        reference_other=max(ref.present - sum(listed.values()), 0),
        current_other=int(sum(found.values())) - sum(current),
        new=tuple(new),
    )


def _describe(reference: Any) -> str:
    from kiln.monitoring.served import _earlier_span
    from kiln.validation import Profile

    if reference is None or (isinstance(reference, str) and reference == "training"):
        return "each version's training profile"
    span = _earlier_span(reference)
    if span is not None:
        return f"the same version and arm's traffic in the {reference} before the window"
    if isinstance(reference, Profile):
        return f"profile of {reference.source}" if reference.source else "a profile"
    if isinstance(reference, str | os.PathLike):
        return str(reference)
    return f"given data ({type(reference).__name__})"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _plain(value: Any) -> Any:
    """``value`` with non-finite floats as None and datetimes as ISO text (JSON has
    neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _replace_atomically(target: Path, data: bytes) -> None:
    # kiln.store.write_atomically publishes Parquet tables and never replaces a file; a
    # report is text that a rerun should replace, so it is renamed over the old one.
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(target.parent, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
