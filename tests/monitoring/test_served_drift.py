"""Drift of served traffic: a deployment's logged inputs in a window, per version and arm,
against each version's reference profile or an earlier window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.serving.predlog import Prediction, PredictionLog

NOW = datetime.now(UTC)


def rows(n: int, seed: int, amount_mean: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(amount_mean, 20.0, n),
            "items": rng.integers(1, 6, n),
            "category": rng.choice(["grocery", "travel", "online"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def register(version_seed: int) -> None:
    train = rows(2_000, version_seed)
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


def test_each_version_and_arm_is_compared_with_its_training_profile() -> None:
    register(1)
    register(2)
    serve(rows(300, 12, amount_mean=140.0), version=1, arm="champion", hours_ago=0.5)
    serve(rows(300, 11), version=2, arm="canary", hours_ago=0.5)
    result = kiln.monitoring.drift("fraud-api", window="1h")
    assert set(result.results) == {(1, "champion"), (2, "canary")}
    assert result.drifted == {(1, "champion"): ["amount"]}
    champion = result.results[1, "champion"]
    assert {c.column for c in champion.columns} == {"amount", "items", "category"}
    assert champion["amount"].method == "ks" and champion["amount"].reference_count == 2_000
    table = result.to_pandas()
    assert set(table.version) == {1, 2} and len(table) == 6


def test_against_an_earlier_window_the_predictions_are_compared_too() -> None:
    register(1)
    serve(rows(300, 20), version=1, arm="champion", hours_ago=5)
    serve(rows(300, 21, amount_mean=140.0), version=1, arm="champion", hours_ago=0.5)
    result = kiln.monitoring.drift("fraud-api", window="60m", reference="6h")
    same = kiln.monitoring.drift("fraud-api", window="3600000ms", reference=timedelta(hours=6))
    assert same.drifted == result.drifted  # any duration the parser reads, text or not
    drifted = result.drifted[1, "champion"]
    assert "amount" in drifted and "output" in drifted  # more high scores than before
    assert "category" not in drifted
    since = kiln.monitoring.drift("fraud-api", since=NOW - timedelta(hours=6), until=NOW)
    assert since.results[1, "champion"]["amount"].current_count == 600


def test_mistakes_are_named() -> None:
    register(1)
    with pytest.raises(NotFound, match="served nothing between"):
        kiln.monitoring.drift("fraud-api", window="1h")
    serve(rows(50, 30), version=1, arm="champion", hours_ago=0.5)
    with pytest.raises(InvalidInput, match="needs window="):
        kiln.monitoring.drift("fraud-api")
    with pytest.raises(InvalidInput, match="not current="):
        kiln.monitoring.drift("fraud-api", window="1h", current=rows(10, 1))
    with pytest.raises(InvalidInput, match="takes a deployment name, or reference= and current="):
        kiln.monitoring.drift(reference=rows(10, 1))
    with pytest.raises(NotFound, match=r"served nothing in the 3h before"):
        kiln.monitoring.drift("fraud-api", window="1h", reference="3h")
    serve(rows(50, 31), version=9, arm="canary", hours_ago=0.5)
    with pytest.raises(NotFound, match=r"fraud/9|no registered model|version"):
        kiln.monitoring.drift("fraud-api", window="1h")
