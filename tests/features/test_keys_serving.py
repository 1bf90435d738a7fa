"""Entity keys through a live ``kiln serve``: the native endpoint finds the row the
offline path finds, for int and string keys given either way, and refuses what does not
convert with a 400 naming the key."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.features import Entity, FeatureView, ParquetSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from _harness import serving

NOW = datetime.now(UTC).replace(microsecond=0)


def _register(name: str, column: str) -> None:
    x = pd.DataFrame({column: np.linspace(0.0, 1.0, 20)})
    model = LogisticRegression().fit(x, (np.arange(20) % 2).astype(int))
    kiln.models.register(name, model, input_example=x[:4])


def _apply(tmp_path: Path) -> kiln.FeatureStore:
    hour_ago = pa.array([NOW - timedelta(hours=1)] * 3, pa.timestamp("us", "UTC"))
    users = pa.table(
        {"user_id": pa.array([1, 2, 3]), "event_timestamp": hour_ago, "x": [0.1, 0.2, 0.3]}
    )
    codes = pa.table(
        {"code": pa.array(["7", "8", "abc"]), "event_timestamp": hour_ago, "y": [0.7, 0.8, 0.9]}
    )
    pq.write_table(users, tmp_path / "users.parquet")
    pq.write_table(codes, tmp_path / "codes.parquet")
    user, code = Entity("user", ["user_id"]), Entity("code", ["code"])
    fs = kiln.FeatureStore()
    fs.apply(
        [
            user,
            code,
            FeatureView("stats", entities=[user], source=ParquetSource("users.parquet")),
            FeatureView("codes", entities=[code], source=ParquetSource("codes.parquet")),
        ],
        base=tmp_path,
    )
    assert fs.materialize(end=NOW).ok
    return fs


def _features(http: Any, deployment: str, entities: dict[str, Any]) -> Any:
    r = http.post(
        f"/deployments/{deployment}/predict",
        json={"entities": entities, "return_features": True},
    )
    return r.status_code, r.json()


def test_native_endpoint_converts_keys_as_the_offline_path_does(tmp_path: Path) -> None:
    fs = _apply(tmp_path)
    _register("by_user", "x")
    _register("by_code", "y")
    kiln.deployments.create("users-api", model="by_user/1", features=["stats:x"])
    kiln.deployments.create("codes-api", model="by_code/1", features=["codes:y"])
    spine = pd.DataFrame({"user_id": ["2"], "code": [8], "event_timestamp": [NOW]})
    offline = fs.get_historical_features(spine, ["stats:x", "codes:y"]).to_pandas()
    assert offline[["x", "y"]].values.tolist() == [[0.2, 0.8]]

    with serving(["users-api", "codes-api"]) as server, server.client() as http:
        for given in (2, "2", 2.0, "002"):
            status, body = _features(http, "users-api", {"user_id": given})
            assert status == 200, body
            assert body["features"]["x"] == [0.2]
        for given in ("8", 8):
            status, body = _features(http, "codes-api", {"code": given})
            assert status == 200, body
            assert body["features"]["y"] == [0.8]
        status, body = _features(http, "users-api", [{"user_id": 1}, {"user_id": "abc"}])
        assert status == 400
        assert "entity key 'user_id', row 1: 'abc' does not convert to int64" in body["error"]
        status, body = _features(http, "users-api", {"user_id": "7.0"})
        assert status == 400 and "'7.0'" in body["error"]
        status, body = _features(http, "users-api", {"user_id": 7.5})
        assert status == 400 and "user_id" in body["error"]
        # Refusals are the client's: the next request is answered.
        status, body = _features(http, "users-api", {"user_id": "3"})
        assert status == 200 and body["features"]["x"] == [0.3]
