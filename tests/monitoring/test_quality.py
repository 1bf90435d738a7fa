"""Live quality from delayed labels: labels by request id or by entity and time join the
logged predictions, and the metrics per version, arm and window equal scikit-learn's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.monitoring.labels import log_labels
from kiln.monitoring.quality import quality
from kiln.serving.predlog import Prediction, PredictionLog

DAY0 = datetime(2026, 11, 1, tzinfo=UTC)
N = 400


def logged() -> pd.DataFrame:
    """400 answered requests over two days, 80% by version 3 (champion), 20% by version 4
    (canary); each with a card, a time, a score and the outcome it will turn out to have."""
    rng = np.random.default_rng(7)
    truth = rng.random(N) < 0.3
    noise = rng.normal(0, 0.25, N)
    canary = rng.random(N) < 0.2
    score = np.clip(np.where(truth, 0.65, 0.35) + noise * np.where(canary, 1.6, 1.0), 0, 1)
    at = [DAY0 + timedelta(minutes=int(m)) for m in np.sort(rng.integers(0, 2 * 1440, N))]
    frame = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(N)],
            "card_id": rng.permutation(N) + 1000,  # one request per card
            "time": at,
            "version": np.where(canary, 4, 3),
            "arm": np.where(canary, "canary", "champion"),
            "score": score,
            "truth": truth.astype(int),
        }
    )
    log = PredictionLog(
        kiln.get_settings().home / "offline" / "predictions", flush_rows=1000, flush_interval_s=60
    )
    log.append_many(
        Prediction(
            request_id=r.request_id,
            deployment="fraud-api",
            model=f"fraud/{r.version}",
            version=int(r.version),
            arm=r.arm,
            features={"card_id": int(r.card_id), "amount": 10.0},
            output=[1 - r.score, r.score],
            latency_ms=1.0,
            at=r.time.to_pydatetime(),
        )
        for r in frame.itertuples()
    )
    log.close()
    return frame


def expected(frame: pd.DataFrame) -> dict[str, float]:
    y, s = frame.truth.to_numpy(), frame.score.to_numpy()
    predicted = (s >= 0.5).astype(int)
    return {
        "auc": metrics.roc_auc_score(y, s),
        "log_loss": metrics.log_loss(y, s, labels=[0, 1]),
        "accuracy": metrics.accuracy_score(y, predicted),
        "precision": metrics.precision_score(y, predicted),
        "recall": metrics.recall_score(y, predicted),
    }


def test_labels_by_request_and_by_entity_give_sklearns_metrics_per_version_arm_and_day() -> None:
    frame = logged()
    by_request = frame.iloc[::2]
    by_entity = frame.iloc[1::2]
    wrong = by_request.assign(truth=1 - by_request.truth)  # logged first, then corrected
    log_labels("fraud-api", wrong[["request_id"]].assign(label=wrong.truth))
    batch = log_labels("fraud-api", by_request[["request_id"]].assign(label=by_request.truth))
    assert batch.rows == len(by_request) and batch.by == "request"
    days_later = by_entity.time + timedelta(days=3)  # a chargeback names the card and a time
    log_labels(
        "fraud-api",
        pd.DataFrame(
            {
                "card_id": by_entity.card_id,
                "event_time": by_entity.time + timedelta(seconds=1),
                "label": by_entity.truth.astype(bool),
                "reported": days_later,
            }
        ),
        keys=["card_id"],
    )
    report = quality("fraud-api", window="1d")
    assert report.score == "output_1"
    rows = {(r.version, r.arm, r.window_start): r for r in report.rows}
    assert {k[:2] for k in rows} == {(3, "champion"), (4, "canary")}
    assert {k[2] for k in rows} == {DAY0, DAY0 + timedelta(days=1)}
    for (version, _arm, start), row in rows.items():
        assert start is not None
        part = frame[(frame.version == version) & (frame.time >= start)]
        part = part[part.time < start + timedelta(days=1)]
        assert row.predictions == row.labeled == len(part) and row.coverage == 1.0
        assert row.positives == int(part.truth.sum())
        want = expected(part)
        for name, value in want.items():
            assert getattr(row, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name
        assert row.calibration_error is not None and 0 <= row.calibration_error <= 1
    whole = {(r.version, r.arm): r for r in quality("fraud-api").rows}
    champion = whole[3, "champion"]
    assert champion.window_start is None and champion.auc is not None
    assert champion.auc > whole[4, "canary"].auc  # the noisier canary ranks worse
    assert champion.auc == pytest.approx(expected(frame[frame.version == 3])["auc"], rel=1e-9)
    table = quality("fraud-api").to_pandas()
    assert {"version", "arm", "auc", "coverage"} <= set(table.columns) and len(table) == 2


def test_predictions_without_labels_count_in_coverage_only() -> None:
    frame = logged()
    some = frame.iloc[:50]
    log_labels("fraud-api", some[["request_id"]].assign(label=some.truth))
    rows = quality("fraud-api").rows
    assert sum(r.predictions for r in rows) == N and sum(r.labeled for r in rows) == 50
    assert quality("fraud-api", threshold=0.9).threshold == 0.9


def test_mistakes_are_named() -> None:
    with pytest.raises(NotFound, match="deployment 'fraud-api' has no logged predictions"):
        quality("fraud-api")
    frame = logged()
    with pytest.raises(NotFound, match="no labels were logged for deployment 'fraud-api'"):
        quality("fraud-api")
    ids = frame[["request_id"]]
    with pytest.raises(InvalidInput, match=r"must hold 0 or 1 .*got 2"):
        log_labels("fraud-api", ids.assign(label=2))
    with pytest.raises(InvalidInput, match="labels need a 'label' column"):
        log_labels("fraud-api", ids)
    with pytest.raises(InvalidInput, match="labels need a 'request_id' column"):
        log_labels("fraud-api", frame[["card_id"]].assign(label=1))
    with pytest.raises(InvalidInput, match="missing: event_time"):
        log_labels("fraud-api", frame[["card_id"]].assign(label=1), keys=["card_id"])
    log_labels("fraud-api", ids.assign(label=frame.truth))
    with pytest.raises(InvalidInput, match="no output column 'output_7' in the prediction log"):
        quality("fraud-api", score="output_7")
    with pytest.raises(InvalidInput, match="threshold must be a number in"):
        quality("fraud-api", threshold="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="The 'window' parameter of quality"):
        quality("fraud-api", window="weekly")
    with pytest.raises(InvalidInput, match="must be a pandas DataFrame, a pyarrow Table"):
        log_labels("fraud-api", "labels.csv")
    log_labels(
        "fraud-api",
        pd.DataFrame({"user_id": [1], "event_time": [DAY0], "label": [1]}),
        keys=["user_id"],
    )
    with pytest.raises(InvalidInput, match="name user_id, which the logged requests do not"):
        quality("fraud-api")
