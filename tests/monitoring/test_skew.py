"""Training-serving skew through a live ``kiln serve``: Kiln's own path shows none, and an
online value changed behind the store's back or a transformation changed on one path is
found, named and measured."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.features import (
    Entity,
    FeatureView,
    Field,
    OnDemandFeatureView,
    ParquetSource,
    RequestSource,
)
from kiln.serving.predlog import Prediction, PredictionLog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from _harness import serving

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR_AGO = NOW - timedelta(hours=1)
USERS = [1, 2, 3, 4, 5]
X = [0.1, 0.2, 0.3, 0.4, 0.5]
N = [10, 20, 30, 40, 50]
DEPLOYMENT = "fraud-api"


def _write_source(tmp_path: Path, x: list[float]) -> None:
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(USERS, pa.int64()),
                "event_timestamp": pa.array([HOUR_AGO] * len(USERS), pa.timestamp("us", "UTC")),
                "x": pa.array(x, pa.float64()),
                "n": pa.array(N, pa.int64()),
            }
        ),
        tmp_path / "users.parquet",
    )


def _deploy(tmp_path: Path) -> kiln.FeatureStore:
    """A view (x, n) keyed by user, an on-demand feature and a model that also takes a
    request field; materialized and deployed with its features."""
    _write_source(tmp_path, X)
    user = Entity("user", ["user_id"])
    doubled = OnDemandFeatureView(
        "doubled",
        sources=[RequestSource("request", [Field("amount", "float64")])],
        schema=[Field("amount2", "float64")],
        function=lambda df: pd.DataFrame({"amount2": df["amount"] * 2.0}),
    )
    fs = kiln.FeatureStore()
    stats = FeatureView("stats", entities=[user], source=ParquetSource("users.parquet"))
    fs.apply([user, stats, doubled], base=tmp_path)
    assert fs.materialize(end=NOW).ok
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "x": rng.random(40),
            "n": rng.integers(0, 60, 40),
            "amount2": rng.random(40) * 10,
            "fee": rng.random(40),
        }
    )
    model = LogisticRegression().fit(train, (np.arange(40) % 2).astype(int))
    kiln.models.register("fraud", model, input_example=train[:4])
    kiln.deployments.create(
        DEPLOYMENT, model="fraud/1", features=["stats:x", "stats:n", "doubled:amount2"]
    )
    return fs


def _serve(requests: int) -> dict[str, int]:
    """``requests`` native requests, one row each, cycling through the users; returns
    each request id's user. The server's log is written when it stops."""
    users = {}
    with serving([DEPLOYMENT]) as server, server.client() as http:
        for i in range(requests):
            user = USERS[i % len(USERS)]
            r = http.post(
                f"/deployments/{DEPLOYMENT}/predict",
                json={
                    "entities": {"user_id": user},
                    "request": {"amount": float(i), "fee": 0.5},
                    "request_id": f"r{i:03d}",
                },
            )
            assert r.status_code == 200, r.text
            users[f"r{i:03d}"] = user
    return users


def test_kilns_own_path_shows_no_skew(tmp_path: Path) -> None:
    _deploy(tmp_path)
    _serve(50)
    result = kiln.monitoring.skew(DEPLOYMENT, window="1h")
    assert result.requests == result.rows == result.served_requests == 50
    assert result.without_entities == 0
    assert result.skewed == [] and result.skew_rate == 0.0
    assert [(f.feature, f.source) for f in result.features] == [("x", "stats:x"), ("n", "stats:n")]
    for row in result.features:
        assert row.compared == result.requests == 50
        assert row.skewed == 0 and row.examples == () and row.models == ("fraud/1",)
        assert row.mean_abs_diff == row.max_abs_diff == 0.0
    assert set(result.skipped) == {"amount2", "fee"}
    assert "on demand" in result.skipped["amount2"]
    assert "request field" in result.skipped["fee"]
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["skewed"] == []
    assert list(result.to_pandas().feature) == ["x", "n"]

    # A smaller sample compares fewer requests.
    small = kiln.monitoring.skew(DEPLOYMENT, window="1h", sample=10, seed=3)
    assert small.requests == small.rows == 10 and small["x"].compared == 10
    assert small.served_requests == 50

    # Entity keys are logged beside the features, never as one: drift of the served
    # traffic compares the model inputs only.
    reference = pd.DataFrame({"user_id": USERS * 8, "x": X * 8, "n": N * 8})
    drifted = kiln.monitoring.drift(DEPLOYMENT, window="1h", reference=reference)
    assert {c.column for c in drifted.results[1, "champion"].columns} == {"x", "n"}


def test_an_online_value_changed_behind_the_stores_back_is_named(tmp_path: Path) -> None:
    fs = _deploy(tmp_path)
    # User 3's x is overwritten online, as a buggy writer would: newer, and different.
    view = fs.get("stats")
    assert isinstance(view, FeatureView)
    fs.online.write(
        "stats",
        fs._online_version("stats"),
        pa.table(
            {
                "user_id": pa.array([3], pa.int64()),
                "event_ts": pa.array([HOUR_AGO + timedelta(seconds=1)], pa.timestamp("us", "UTC")),
                "x": [0.8],
                "n": [30],
            }
        ),
        join_keys=view.join_keys,
        features=view.feature_names,
    )
    users = _serve(25)
    result = kiln.monitoring.skew(DEPLOYMENT, window="1h")
    assert result.skewed == ["x"]
    x = result["x"]
    assert x.compared == 25 and x.skewed == 5 and x.skew_rate == pytest.approx(0.2)
    assert result.skew_rate == pytest.approx(0.2)
    assert x.null_mismatch == 0
    assert x.mean_abs_diff == pytest.approx(0.5) and x.max_abs_diff == pytest.approx(0.5)
    assert len(x.examples) == 5
    for example in x.examples:
        assert users[example["request_id"]] == 3
        assert example["entities"] == {"user_id": 3}
        assert example["served"] == 0.8 and example["offline"] == 0.3
        assert example["model"] == "fraud/1" and example["row"] == 0
        assert HOUR_AGO < example["at"] <= datetime.now(UTC)
    assert result["n"].skewed == 0

    # The sample is drawn by request id: the same for the same seed.
    until = datetime.now(UTC)

    def sampled(seed: int) -> list[str]:
        one = kiln.monitoring.skew(DEPLOYMENT, window="1h", until=until, sample=15, seed=seed)
        assert one.requests == 15
        return [e["request_id"] for e in one["x"].examples]

    assert sampled(7) == sampled(7)
    assert {tuple(sampled(seed)) for seed in range(6)} != {tuple(sampled(7))}
    exported = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert exported["features"][0]["examples"][0]["entities"] == {"user_id": 3}


def test_a_transformation_changed_on_the_offline_path_is_named(tmp_path: Path) -> None:
    _deploy(tmp_path)
    _serve(20)
    # The offline source now holds x transformed (doubled); serving read the old values.
    _write_source(tmp_path, [v * 2 for v in X])
    result = kiln.monitoring.skew(DEPLOYMENT, window="1h")
    assert result.skewed == ["x"] and result.skew_rate == 1.0
    x = result["x"]
    assert x.skewed == x.compared == 20
    assert x.max_abs_diff == pytest.approx(0.5) and x.mean_abs_diff == pytest.approx(0.3)
    first = x.examples[0]
    user = first["entities"]["user_id"]
    assert (
        first["offline"]
        == pytest.approx(2 * first["served"])
        == pytest.approx(2 * X[USERS.index(user)])
    )
    # A monitor's skew rules fire on it: the deployment's rate, and the feature's by name.
    monitor = kiln.monitoring.Monitor(
        DEPLOYMENT,
        [
            kiln.monitoring.Rule("skew_rate", above=0.01),
            kiln.monitoring.Rule("skew_rate", feature="*", above=0.01, name="per-feature"),
        ],
    )
    evaluation = kiln.monitoring.evaluate(monitor)
    fired = sorted((e.rule, e.feature, e.value) for e in evaluation.opened)
    assert fired == [("per-feature", "x", 1.0), ("skew_rate>0.01", None, 1.0)]
    assert evaluation.problems == {}


def test_bad_input_is_refused_with_the_argument_named(tmp_path: Path) -> None:
    _deploy(tmp_path)
    with pytest.raises(NotFound, match="'no-such-api'"):
        kiln.monitoring.skew("no-such-api", window="1h")
    with pytest.raises(InvalidInput, match="skew of a deployment needs window="):
        kiln.monitoring.skew(DEPLOYMENT)
    for param, value in (("sample", 0), ("sample", True), ("seed", 1.5), ("tolerance", -1.0)):
        with pytest.raises(InvalidInput, match=f"The '{param}' parameter of skew must be"):
            kiln.monitoring.skew(DEPLOYMENT, window="1h", **{param: value})
    with pytest.raises(InvalidInput, match="'window' parameter of skew"):
        kiln.monitoring.skew(DEPLOYMENT, window="soon")
    with pytest.raises(NotFound, match=f"deployment '{DEPLOYMENT}' served nothing between"):
        kiln.monitoring.skew(DEPLOYMENT, window="1h")

    kiln.deployments.create("plain-api", model="fraud/1")
    with pytest.raises(InvalidInput, match="'plain-api' looks up no online features"):
        kiln.monitoring.skew("plain-api", window="1h")

    # Requests logged without entity keys (a v2 request) cannot be recomputed.
    log = PredictionLog(kiln.get_settings().home / "offline" / "predictions")
    log.append(
        Prediction(
            request_id="v2-1",
            deployment=DEPLOYMENT,
            model="fraud/1",
            version=1,
            arm="champion",
            features={"x": 0.1, "n": 10, "amount2": 1.0, "fee": 0.5},
            output=0.3,
            latency_ms=1.0,
            at=datetime.now(UTC),
        )
    )
    log.close()
    with pytest.raises(NotFound, match=r"none of the 1 requests .* carries entity keys"):
        kiln.monitoring.skew(DEPLOYMENT, window="1h")
