"""The prediction log's ``entities`` column: the entity keys a request's features were looked
up with, kept beside (never among) the model inputs, and null for files without them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from kiln.core import InvalidInput
from kiln.serving._runtime import _joined_entities, _key_column, _Served
from kiln.serving.predlog import AnsweredRequests, Prediction, PredictionLog, read_predictions

T0 = datetime(2025, 3, 1, 10, 0, 0, tzinfo=UTC)
NAMES = ("x", "n")


def _batch(log: PredictionLog, request_id: str, rows: int, **kw: object) -> int:
    matrix = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2)
    return log.append_batch(
        deployment="fraud-api",
        model="fraud/1",
        version=1,
        arm="champion",
        request_id=request_id,
        inputs=(NAMES, matrix),
        outputs=np.full(rows, 0.5),
        latency_ms=1.0,
        at=T0,
        **kw,  # type: ignore[arg-type]
    )


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("request_id", "ascending"), ("row", "ascending")])


def test_entities_round_trip_beside_the_features(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=0.05) as log:
        entities = {"user_id": np.array([7, 8, 9]), "code": np.array(["a", "b", "c"])}
        assert _batch(log, "q1", 3, entities=entities) == 3
        log.append_batch(
            deployment="fraud-api", model="fraud/1", version=1, arm="champion",
            request_id="q2", inputs={"x": np.array([1.5]), "n": np.array([4])},
            outputs=np.array([0.1]), latency_ms=1.0, at=T0,
            entities={"user_id": np.array([10]), "code": np.array(["d"])},
        )  # fmt: skip
        log.append(
            Prediction(
                request_id="q3", deployment="fraud-api", model="fraud/1", version=1,
                arm="champion", features={"x": 2.5, "n": 5}, output=0.2, latency_ms=1.0,
                at=T0, entities={"user_id": 11, "code": "e"},
            )
        )  # fmt: skip
    table = _sorted(read_predictions(tmp_path))
    assert table.column_names.index("entities") == table.column_names.index("features") + 1
    entities_ = table["entities"].combine_chunks()
    assert entities_.type == pa.struct([("user_id", pa.int64()), ("code", pa.string())])
    assert entities_.to_pylist() == [
        {"user_id": 7, "code": "a"},
        {"user_id": 8, "code": "b"},
        {"user_id": 9, "code": "c"},
        {"user_id": 10, "code": "d"},
        {"user_id": 11, "code": "e"},
    ]
    features = table["features"].combine_chunks()
    assert [f.name for f in features.type] == ["x", "n"]  # the model inputs only
    assert features.field("x").to_pylist() == [0.0, 2.0, 4.0, 1.5, 2.5]
    assert features.field("n").to_pylist() == [1.0, 3.0, 5.0, 4.0, 5.0]
    duck = duckdb.execute(
        f"select request_id, entities.user_id from read_parquet('{tmp_path}/**/*.parquet', "
        "hive_partitioning = true, union_by_name = true) order by 1, 2"
    ).fetchall()
    assert duck == [("q1", 7), ("q1", 8), ("q1", 9), ("q2", 10), ("q3", 11)]


def test_files_without_entities_read_as_null(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=0.05) as log:
        _batch(log, "old", 2)
        log.flush()
        _batch(log, "new", 1, entities={"user_id": np.array(["7"])})
    table = _sorted(read_predictions(tmp_path))
    assert table["request_id"].to_pylist() == ["new", "old", "old"]
    assert table["entities"].to_pylist() == [{"user_id": "7"}, None, None]
    assert table["features"].combine_chunks().field("x").to_pylist() == [0.0, 0.0, 2.0]


def test_requests_answered_together_carry_their_entities(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=0.05) as log:
        answered = AnsweredRequests(
            deployment="fraud-api",
            model="fraud/1",
            version=1,
            request_ids=["b0", "b1"],
            arms=["champion", "champion"],
            shadows=[False, False],
            counts=[1, 2],
            inputs=(NAMES, np.arange(6, dtype=np.float64).reshape(3, 2)),
            outputs=np.array([0.1, 0.2, 0.3]),
            latency_ms=np.array([1.0, 2.0]),
            at=T0,
            entities={"user_id": np.array([1, 2, 2])},
        )
        assert log.try_append_requests(answered) == 3
    table = _sorted(read_predictions(tmp_path))
    assert table["entities"].to_pylist() == [{"user_id": 1}, {"user_id": 2}, {"user_id": 2}]
    assert table["features"].combine_chunks().field("n").to_pylist() == [1.0, 3.0, 5.0]


def test_entities_are_checked_at_append(tmp_path: Path) -> None:
    with PredictionLog(tmp_path) as log:
        with pytest.raises(InvalidInput, match=r"entity key 'user_id' has shape \(1,\)"):
            _batch(log, "short", 2, entities={"user_id": np.array([1])})
        with pytest.raises(InvalidInput, match="entity keys must be named by strings"):
            _batch(log, "unnamed", 1, entities={7: np.array([1])})
        with pytest.raises(InvalidInput, match="'entities' must map entity keys to columns"):
            _batch(log, "listed", 1, entities=[np.array([1])])
        with pytest.raises(InvalidInput, match="'entities' must be a dict"):
            log.append(
                Prediction(
                    request_id="p", deployment="fraud-api", model="fraud/1", version=1,
                    arm="champion", features={"x": 1.0}, output=0.2, latency_ms=1.0, at=T0,
                    entities=[1],  # type: ignore[arg-type]
                )
            )  # fmt: skip
    assert log.rows_written == 0


def test_a_batch_joins_its_requests_entities(tmp_path: Path) -> None:
    """How the server joins the entity keys of requests answered together."""

    def served(entities: dict[str, np.ndarray] | None) -> _Served:
        return _Served("fraud-api", "r", "champion", False, entities)

    assert _joined_entities([served(None), served(None)], [1, 1]) is None
    both = _joined_entities(
        [served({"user_id": _key_column([1, 2])}), served({"user_id": _key_column([3])})], [2, 1]
    )
    assert both is not None and both["user_id"].tolist() == [1, 2, 3]
    assert both["user_id"].dtype == np.int64
    # A v2 request in the batch has no keys; a client sent the key as text.
    mixed = _joined_entities(
        [
            served({"user_id": _key_column([1])}),
            served(None),
            served({"user_id": _key_column(["2"])}),
        ],
        [1, 2, 1],
    )
    assert mixed is not None and mixed["user_id"].tolist() == [1, None, None, "2"]
    assert _key_column([2**70]).tolist() == [str(2**70)]
    with PredictionLog(tmp_path, flush_interval_s=0.05) as log:
        _batch(log, "m", 4, entities=mixed)
    logged = _sorted(read_predictions(tmp_path))["entities"].to_pylist()
    assert logged == [{"user_id": "1"}, {"user_id": None}, {"user_id": None}, {"user_id": "2"}]
