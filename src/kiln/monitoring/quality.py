"""Live model quality from delayed labels: predictions joined with the labels that came
later, scored per model version, traffic arm and time window.

Labels by request join on ``(request_id, row)``; labels by entity join, in DuckDB, to the
latest served (not shadow) prediction for the same keys at or before the event's time, an
ASOF join, and then count for every model that answered that request (a shadow's answer
is scored too). The metrics are computed with numpy on each group and equal
scikit-learn's on the same pairs (the tests compare them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from kiln.core import InvalidInput, NotFound
from kiln.features.definitions import parse_duration
from kiln.monitoring.labels import EVENT_TIME, LABEL, LOGGED_AT, REQUEST_ID, ROW, read_labels

__all__ = ["QualityReport", "QualityRow", "quality"]

_BINS = 10


@dataclass(frozen=True)
class QualityRow:
    """One model version and arm over one window (``window_start`` None: the whole span)."""

    version: int
    arm: str
    window_start: datetime | None
    predictions: int
    labeled: int
    positives: int
    auc: float | None  # None with one class among the labels
    log_loss: float | None
    accuracy: float | None
    precision: float | None  # None when nothing was predicted positive
    recall: float | None  # None without positives
    calibration_error: float | None  # expected calibration error over 10 score bins

    @property
    def coverage(self) -> float:
        return self.labeled / self.predictions if self.predictions else 0.0


@dataclass(frozen=True)
class QualityReport:
    """Every version, arm and window with predictions, and how many got a label."""

    deployment: str
    threshold: float
    score: str
    rows: tuple[QualityRow, ...]

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{**asdict(r), "coverage": r.coverage} for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            row = asdict(r)
            row["window_start"] = r.window_start.isoformat() if r.window_start else None
            rows.append({**row, "coverage": r.coverage})
        return {
            "deployment": self.deployment,
            "threshold": self.threshold,
            "score": self.score,
            "rows": rows,
        }


def quality(
    deployment: str,
    *,
    window: str | timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    threshold: float = 0.5,
    score: str | None = None,
) -> QualityReport:
    """AUC, log loss, accuracy, precision and recall at ``threshold`` and calibration of
    ``deployment``'s predictions that have labels, per version and arm, per ``window``
    (``"1d"``, ``"6h"``; None: the whole span) of prediction time. ``score`` names the
    output column holding the positive class's probability (``output_1`` when the model
    answers two columns, else ``output``)."""
    from kiln.serving.predlog import read_predictions
    from kiln.serving.specs import check_name

    check_name(deployment)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InvalidInput(f"threshold must be a number in [0, 1]; got {threshold!r}")
    step = None if window is None else parse_duration(window, owner="quality", param="window")
    predictions = read_predictions(deployment=deployment, since=since)
    if until is not None:
        import pyarrow.compute as pc

        predictions = predictions.filter(pc.less(predictions["at"], pa.scalar(until)))
    if predictions.num_rows == 0:
        raise NotFound(f"deployment {deployment!r} has no logged predictions in that span")
    column = _score_column(predictions, score)
    joined = _joined(deployment, predictions, column)
    rows = _grouped(joined, step, float(threshold))
    return QualityReport(deployment, float(threshold), column, tuple(rows))


def _score_column(predictions: pa.Table, score: str | None) -> str:
    outputs = [c for c in predictions.column_names if c == "output" or c.startswith("output_")]
    chosen = score or ("output_1" if "output_1" in outputs else "output")
    if chosen not in outputs:
        raise InvalidInput(
            f"no output column {chosen!r} in the prediction log; it has: "
            f"{', '.join(outputs) or 'none'}"
        )
    kind = predictions.schema.field(chosen).type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise InvalidInput(f"output column {chosen!r} holds {kind}, not a score")
    return chosen


def _joined(deployment: str, predictions: pa.Table, score: str) -> pa.Table:
    """Each prediction with its label (null when none came): version, arm, time, score."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("preds", predictions)
        parts: list[str] = []
        by_request = read_labels(deployment, "request")
        if by_request is not None:
            con.register("request_labels", by_request)
            parts.append(f'SELECT {REQUEST_ID}, "{ROW}", {LABEL}, {LOGGED_AT} FROM request_labels')
        by_entity = read_labels(deployment, "entity")
        if by_entity is not None:
            parts.append(_entity_sql(con, predictions, by_entity))
        if not parts:
            raise NotFound(f"no labels were logged for deployment {deployment!r}")
        labels = " UNION ALL ".join(parts)
        sql = f"""
            WITH labels AS ({labels}),
            latest AS (
                SELECT {REQUEST_ID}, "{ROW}", arg_max({LABEL}, {LOGGED_AT}) AS {LABEL}
                FROM labels GROUP BY {REQUEST_ID}, "{ROW}"
            )
            SELECT p.version, p.arm, p."at", CAST(p."{score}" AS DOUBLE) AS score, l.{LABEL}
            FROM preds p LEFT JOIN latest l USING ({REQUEST_ID}, "{ROW}")
        """
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _entity_sql(con: Any, predictions: pa.Table, labels: pa.Table) -> str:
    """Labels by entity, as the request of the latest served prediction for their keys
    at or before their time (DuckDB's ASOF join)."""
    con.register("entity_labels", labels)
    keys = [c for c in labels.column_names if c not in (EVENT_TIME, LABEL, LOGGED_AT)]
    have: set[str] = set()
    if "features" in predictions.column_names:
        served = predictions.schema.field("features").type
        have = {served.field(i).name for i in range(served.num_fields)}
    missing = [k for k in keys if k not in have]
    if missing:
        raise InvalidInput(
            f"labels by entity name {', '.join(missing)}, which the logged requests do not "
            f"carry; their inputs: {', '.join(sorted(have)) or 'none'}"
        )
    on = " AND ".join(f'CAST(l."{k}" AS VARCHAR) = p."{k}"' for k in keys)
    cols = ", ".join(f'CAST(features."{k}" AS VARCHAR) AS "{k}"' for k in keys)
    return f"""
        SELECT p.{REQUEST_ID}, p."{ROW}", l.{LABEL}, l.{LOGGED_AT}
        FROM entity_labels l ASOF JOIN (
            SELECT {REQUEST_ID}, "{ROW}", "at", {cols} FROM preds WHERE NOT shadow
        ) p ON {on} AND l.{EVENT_TIME} >= p."at"
    """


def _grouped(joined: pa.Table, step: timedelta | None, threshold: float) -> list[QualityRow]:
    version = joined["version"].to_numpy()
    arm = np.asarray(joined["arm"].to_pylist(), dtype=object)
    at = joined["at"].cast(pa.int64()).to_numpy()  # µs since the epoch
    score = joined["score"].to_numpy(zero_copy_only=False)
    label = joined[LABEL].to_numpy(zero_copy_only=False)
    width = int(step.total_seconds() * 1_000_000) if step is not None else 0
    bucket = at - at % width if width else np.zeros_like(at)
    index: dict[tuple[int, str, int], list[int]] = {}
    for i, key in enumerate(zip(version.tolist(), arm.tolist(), bucket.tolist(), strict=True)):
        index.setdefault(key, []).append(i)
    rows = []
    for (v, a, b), positions in sorted(index.items()):
        idx = np.asarray(positions)
        y, s = label[idx], score[idx]
        has = ~np.isnan(y)
        start = b if width else None
        rows.append(_row(int(v), str(a), start, len(idx), y[has], s[has], threshold))
    return rows


def _row(
    version: int,
    arm: str,
    start_us: int | None,
    predictions: int,
    y: np.ndarray,
    s: np.ndarray,
    threshold: float,
) -> QualityRow:
    from datetime import UTC

    start = None if start_us is None else datetime.fromtimestamp(start_us / 1e6, UTC)
    n = len(y)
    if n == 0:
        return QualityRow(
            version, arm, start, predictions, 0, 0, None, None, None, None, None, None
        )
    positives = int(y.sum())
    predicted = s >= threshold
    tp = int((predicted & (y == 1)).sum())
    return QualityRow(
        version=version,
        arm=arm,
        window_start=start,
        predictions=predictions,
        labeled=n,
        positives=positives,
        auc=auc(y, s),
        log_loss=log_loss(y, s),
        accuracy=float((predicted == (y == 1)).mean()),
        precision=tp / int(predicted.sum()) if predicted.any() else None,
        recall=tp / positives if positives else None,
        calibration_error=calibration_error(y, s),
    )


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the ROC curve: the Mann-Whitney statistic over average ranks (ties count
    half), as scikit-learn's ``roc_auc_score``."""
    from scipy.stats import rankdata

    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(y: np.ndarray, s: np.ndarray) -> float | None:
    """Mean negative log-likelihood, scores clipped to [eps, 1 - eps] as scikit-learn does;
    None when the scores are not probabilities."""
    if s.size == 0 or s.min() < 0 or s.max() > 1:
        return None
    eps = np.finfo(np.float64).eps
    p = np.clip(s, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration_error(y: np.ndarray, s: np.ndarray) -> float | None:
    """Expected calibration error: over 10 equal-width score bins, the share-weighted gap
    between the mean score and the rate of positives."""
    if s.size == 0 or s.min() < 0 or s.max() > 1:
        return None
    bins = np.minimum((s * _BINS).astype(np.int64), _BINS - 1)
    count = np.bincount(bins, minlength=_BINS)
    mean_score = np.bincount(bins, weights=s, minlength=_BINS)
    rate = np.bincount(bins, weights=y, minlength=_BINS)
    used = count > 0
    gap = np.abs(mean_score[used] - rate[used]) / count[used]
    return float((gap * count[used]).sum() / len(s))
