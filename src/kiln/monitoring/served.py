"""Drift of what a deployment served: the prediction log's inputs (and predictions) in a
window, per model version and traffic arm, against a reference.

The reference is, by default, each version's reference profile (the training data's,
kept when it was registered or saved): the training rows are never read again. A profile
or data given as ``reference`` applies to every version; a duration (``"7d"``) takes the
same version and arm's traffic in that span before the window, and then the predictions
are compared too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput, NotFound
from kiln.features.definitions import parse_duration
from kiln.monitoring.drift import DriftResult, compare

__all__ = ["ServedDrift", "served_drift"]


@dataclass(frozen=True)
class ServedDrift:
    """Per model version and arm, the drift of its traffic in the window."""

    deployment: str
    since: datetime
    until: datetime
    results: Mapping[tuple[int, str], DriftResult]  # (version, arm) -> columns compared

    @property
    def drifted(self) -> dict[tuple[int, str], list[str]]:
        return {key: r.drifted for key, r in self.results.items() if r.drifted}

    def to_pandas(self) -> Any:
        import pandas as pd

        frames = [
            r.to_pandas().assign(version=version, arm=arm)
            for (version, arm), r in sorted(self.results.items())
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def served_drift(
    deployment: str,
    *,
    reference: Any,
    window: str | timedelta | None,
    since: datetime | None,
    until: datetime | None,
    columns: Sequence[str] | None,
    method: str | Mapping[str, str] | None,
    thresholds: Mapping[str, float] | None,
) -> ServedDrift:
    from kiln.serving.predlog import read_predictions
    from kiln.serving.specs import check_name

    check_name(deployment)
    start, end = window_bounds(window, since, until, owner="drift")
    back = _earlier_span(reference)
    first = start - back if back is not None else start
    logged = read_predictions(deployment=deployment, since=first)
    logged = logged.filter(pc.invert(logged["shadow"]))
    in_window = _between(logged, start, end)
    if in_window.num_rows == 0:
        raise _served_nothing(deployment, start, end)
    results: dict[tuple[int, str], DriftResult] = {}
    for (version, arm), current in _by_version_and_arm(in_window).items():
        model = str(current["model"][0].as_py())
        if back is not None:
            earlier = _between(logged, start - back, start)
            earlier = earlier.filter(
                pc.and_(pc.equal(earlier["version"], version), pc.equal(earlier["arm"], arm))
            )
            if earlier.num_rows == 0:
                raise NotFound(
                    f"version {version} ({arm}) of {deployment!r} served nothing in the "
                    f"{reference} before {start.isoformat()} to compare with"
                )
            ref: Any = _served_columns(earlier, outputs=True)
            cur = _served_columns(current, outputs=True)
        else:
            ref = _reference_of(model, reference)
            cur = _served_columns(current, outputs=False)
        results[(version, arm)] = compare(
            ref, cur, columns=columns, method=method, thresholds=thresholds
        )
    return ServedDrift(deployment, start, end, results)


def _reference_of(model: str, reference: Any) -> Any:
    if isinstance(reference, str) and reference == "training":
        from kiln.registry.models import reference_profile

        return reference_profile(model)
    return reference


def _earlier_span(reference: Any) -> timedelta | None:
    """The span before the window that ``reference`` names, when it names one (a
    timedelta, or text the duration parser reads: ``"7d"``, ``"90m"``, ``"1500ms"``)."""
    if isinstance(reference, timedelta):
        return parse_duration(reference, owner="drift", param="reference")
    if not isinstance(reference, str) or reference == "training":
        return None
    try:
        return parse_duration(reference, owner="drift", param="reference")
    except InvalidInput:  # not a duration: a path to reference data
        return None


def window_bounds(
    window: str | timedelta | None,
    since: datetime | None,
    until: datetime | None,
    *,
    owner: str,
) -> tuple[datetime, datetime]:
    """The ``[since, until)`` a monitoring function of a deployment reads: ``until``
    (default now) back ``window``, or from ``since``. ``owner`` names the function in
    errors."""
    end = _aware(until, "until") or datetime.now(UTC)
    span = parse_duration(window, owner=owner, param="window") if window is not None else None
    start = _aware(since, "since") or (end - span if span is not None else None)
    if start is None:
        raise InvalidInput(f"{owner} of a deployment needs window= (e.g. '1h') or since=")
    return start, end


def _served_nothing(deployment: str, start: datetime, end: datetime) -> NotFound:
    return NotFound(
        f"deployment {deployment!r} served nothing between {start.isoformat()} and "
        f"{end.isoformat()}"
    )


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime; got {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _between(table: pa.Table, start: datetime, end: datetime) -> pa.Table:
    at = table["at"]
    return table.filter(
        pc.and_(pc.greater_equal(at, pa.scalar(start)), pc.less(at, pa.scalar(end)))
    )


def _by_version_and_arm(table: pa.Table) -> dict[tuple[int, str], pa.Table]:
    keys = table.select(["version", "arm"]).group_by(["version", "arm"]).aggregate([])
    out = {}
    for version, arm in zip(keys["version"].to_pylist(), keys["arm"].to_pylist(), strict=True):
        mask = pc.and_(pc.equal(table["version"], version), pc.equal(table["arm"], arm))
        out[(int(version), str(arm))] = table.filter(mask)
    return out


def _served_columns(table: pa.Table, *, outputs: bool) -> pa.Table:
    """The model inputs as columns (the ``features`` struct flattened), with the
    prediction columns when ``outputs``."""
    columns: dict[str, pa.ChunkedArray] = {}
    if "features" in table.column_names:
        struct = table["features"]
        kind = struct.type
        for i in range(kind.num_fields):
            columns[kind.field(i).name] = pc.struct_field(struct, [i])
    if outputs:
        for name in table.column_names:
            if name == "output" or name.startswith("output_"):
                columns[name] = table[name]
    return pa.table(columns)
