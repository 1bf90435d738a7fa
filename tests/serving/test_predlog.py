"""The prediction log: nothing appended is lost, files are complete, layout is hive-style."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from kiln.core import InvalidInput
from kiln.serving.predlog import (
    PREDICTION_SCHEMA,
    AnsweredRequests,
    Prediction,
    PredictionLog,
    read_predictions,
)

T0 = datetime(2025, 3, 1, 9, 59, 58, tzinfo=UTC)


def pred(
    i: int, deployment: str = "fraud-api", at: datetime | int = T0, **kw: object
) -> Prediction:
    values: dict[str, object] = {
        "request_id": f"r{i}",
        "deployment": deployment,
        "model": "fraud/3",
        "version": 3,
        "arm": "champion",
        "features": {"amount": i * 0.5, "country": "NL", "missing": None},
        "output": i / 1000,
        "latency_ms": 1.25,
        "at": at,
    }
    values.update(kw)
    return Prediction(**values)  # type: ignore[arg-type]


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def test_rows_appended_are_rows_read_back(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=100, flush_interval_s=0.05)
    log.append(pred(0, output=[0.1, 0.9], fallback=True))
    log.append_many(pred(i) for i in range(1, 1000))
    log.close()

    assert log.rows_appended == log.rows_written == 1000
    assert log.buffered_rows == 0
    assert log.files_written == len(parquet_files(tmp_path)) >= 2
    table = read_predictions(tmp_path)
    assert table.num_rows == 1000
    assert table.schema.names == [
        *PREDICTION_SCHEMA.names,
        "features",
        "output",
        "output_0",
        "output_1",
        "deployment",
        "hour",
    ]
    # Typed columns: inputs as a struct of their own types, one number as a double.
    assert table.schema.field("features").type == pa.struct(
        [("amount", pa.float64()), ("country", pa.string()), ("missing", pa.null())]
    )
    assert table.schema.field("output").type == pa.float64()
    rows = {r["request_id"]: r for r in table.to_pylist()}
    assert set(rows) == {f"r{i}" for i in range(1000)}
    r7 = rows["r7"]
    assert r7["features"] == {"amount": 3.5, "country": "NL", "missing": None}
    assert (r7["row"], r7["output"], r7["output_0"], r7["output_1"]) == (0, 0.007, None, None)
    assert (r7["model"], r7["version"], r7["arm"], r7["latency_ms"]) == (
        "fraud/3",
        3,
        "champion",
        1.25,
    )
    assert r7["at"] == T0 and r7["deployment"] == "fraud-api" and r7["hour"] == "2025-03-01T09"
    assert (r7["fallback"], r7["shadow"]) == (False, False)
    r0 = rows["r0"]
    assert (r0["output"], r0["output_0"], r0["output_1"], r0["fallback"]) == (
        None,
        0.1,
        0.9,
        True,
    )
    # Every file has one schema and says which in its name.
    for path in parquet_files(tmp_path):
        assert pq.read_schema(path).names[: len(PREDICTION_SCHEMA)] == PREDICTION_SCHEMA.names
        assert path.name.startswith(f"part-{log.worker}-")


def batch(
    log: PredictionLog,
    request_id: str,
    inputs: object,
    outputs: object,
    *,
    deployment: str = "fraud-api",
    version: int = 3,
    at: datetime | int = T0,
    **kw: object,
) -> int:
    values: dict[str, object] = {
        "deployment": deployment,
        "model": f"fraud/{version}",
        "version": version,
        "arm": "champion",
        "request_id": request_id,
        "inputs": inputs,
        "outputs": outputs,
        "latency_ms": 2.5,
        "at": at,
    }
    values.update(kw)
    return log.append_batch(**values)  # type: ignore[arg-type]


def sorted_rows(table: pa.Table) -> pa.Table:
    return table.sort_by([("request_id", "ascending"), ("row", "ascending")])


def test_100_row_requests_are_logged_with_exact_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    names = tuple(f"f{j:02d}" for j in range(20))
    matrices = [rng.standard_normal((100, 20)) for _ in range(30)]
    matrices[0][3, 5] = np.nan  # a missing input, as the model saw it
    scores = [rng.random(100) for _ in range(30)]
    with PredictionLog(tmp_path, flush_rows=1_000, flush_interval_s=0.05) as log:
        for i, (m, s) in enumerate(zip(matrices, scores, strict=True)):
            rows = batch(log, f"q{i:02d}", (names, m), s, latency_ms=float(i), shadow=i == 1)
            assert rows == 100
    assert log.rows_written == 3_000

    table = sorted_rows(read_predictions(tmp_path))
    assert table.num_rows == 3_000
    assert table["row"].to_pylist() == list(range(100)) * 30
    assert table["request_id"].to_pylist() == [f"q{i:02d}" for i in range(30) for _ in range(100)]
    assert table["latency_ms"].to_pylist() == [float(i) for i in range(30) for _ in range(100)]
    assert table["shadow"].to_pylist() == [i == 1 for i in range(30) for _ in range(100)]
    assert set(table["at"].to_pylist()) == {T0}
    features = table["features"]
    assert features.type == pa.struct([(n, pa.float64()) for n in names])
    logged = np.column_stack([features.combine_chunks().field(n).to_numpy() for n in names])
    expected = np.concatenate(matrices)
    assert np.array_equal(logged, expected, equal_nan=True)  # bit for bit, NaN kept
    assert np.array_equal(table["output"].to_numpy(), np.concatenate(scores))


def test_columns_of_any_type_and_several_outputs_per_row(tmp_path: Path) -> None:
    amount = np.array([10.5, 20.25, 30.0])
    count = np.array([1, 2, 3], dtype=np.int32)
    country = np.array(["NL", "DE", "FR"])
    embedding = np.arange(6, dtype=np.float32).reshape(3, 2)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    with PredictionLog(tmp_path, flush_interval_s=0.05) as log:
        inputs = {"amount": amount, "count": count, "country": country, "embedding": embedding}
        assert batch(log, "a", inputs, proba) == 3
        batch(log, "b", {"country": np.array(["BE"])}, np.array(["fraud"]), version=4)
        batch(log, "c", {"country": np.array(["NL"])}, [[0.5]], version=5)  # (n, 1): one value
        batch(log, "d", {"country": np.array([], dtype=str)}, np.array([]))  # no rows: nothing
    table = sorted_rows(read_predictions(tmp_path))
    assert table["request_id"].to_pylist() == ["a", "a", "a", "b", "c"]
    features = table.schema.field("features").type
    assert {f.name: f.type for f in features} == {
        "amount": pa.float64(),
        "count": pa.int32(),
        "country": pa.string(),
        "embedding": pa.list_(pa.float32(), 2),
    }
    a = table.slice(0, 3)
    assert a["features"].to_pylist() == [
        {"amount": 10.5, "count": 1, "country": "NL", "embedding": [0.0, 1.0]},
        {"amount": 20.25, "count": 2, "country": "DE", "embedding": [2.0, 3.0]},
        {"amount": 30.0, "count": 3, "country": "FR", "embedding": [4.0, 5.0]},
    ]
    assert a["output_0"].to_pylist() == [0.9, 0.2, 0.5]
    assert a["output_1"].to_pylist() == [0.1, 0.8, 0.5]
    # "fraud" (a string) and 0.5 (a double) in one column read as text.
    assert table["output"].to_pylist() == [None, None, None, "fraud", "0.5"]
    assert table["output_1"].to_pylist() == [0.1, 0.8, 0.5, None, None]


def test_versions_with_different_inputs_read_as_one_table(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=60, flush_rows=1_000_000) as log:
        for i in range(3):
            x = np.array([[i, i + 0.5]])
            batch(log, f"v3-{i}", (("amount", "age"), x), np.array([0.1]), version=3)
            cols = {"amount": np.array([i], dtype=np.int64), "country": np.array(["NL"])}
            batch(log, f"v4-{i}", cols, np.array([0.2]), version=4, arm="canary")
        log.flush()
        # One file per deployment, hour and model version in each write, one schema each.
        assert log.files_written == 2
    schemas = [pq.read_schema(p) for p in parquet_files(tmp_path)]
    assert sorted(s.field("features").type.num_fields for s in schemas) == [2, 2]

    table = sorted_rows(read_predictions(tmp_path))
    assert table.schema.field("features").type == pa.struct(
        [("amount", pa.float64()), ("age", pa.float64()), ("country", pa.string())]
    )
    assert table["features"].to_pylist() == [
        {"amount": float(i), "age": i + 0.5, "country": None} for i in range(3)
    ] + [{"amount": float(i), "age": None, "country": "NL"} for i in range(3)]
    assert table["version"].to_pylist() == [3, 3, 3, 4, 4, 4]
    # DuckDB reads the same files, unifying by name.
    duck = duckdb.execute(
        f"select version, arm, count(*), sum(features.amount), count(features.country) "
        f"from read_parquet('{tmp_path}/**/*.parquet', hive_partitioning = true, "
        "union_by_name = true) where deployment = 'fraud-api' group by all order by all"
    ).fetchall()
    assert duck == [(3, "champion", 3, 3.0, 0), (4, "canary", 3, 3.0, 3)]
    # So does a pyarrow dataset given the unified schema.
    dataset = ds.dataset(
        tmp_path, format="parquet", partitioning="hive", schema=table.schema
    ).to_table()
    assert dataset.num_rows == 6


def test_values_of_mixed_kinds_still_read_as_one_table(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=0.05) as log:
        log.append(pred(1, features={"v": [1.0, 2.0], "s": "NL"}, output=np.array([0.1, 0.9])))
        log.append(pred(2, features={"v": 3.0, "s": {"a": 1}}, output="yes", version=4))
        log.append(pred(3, features={"v": "text", "s": 7}, output=None, version=5))
    table = sorted_rows(read_predictions(tmp_path))
    # What no one type holds is kept as text (JSON where it is not text already).
    assert table["features"].to_pylist() == [
        {"v": "[1.0,2.0]", "s": "NL"},
        {"v": "3", "s": '{"a":1}'},
        {"v": "text", "s": "7"},
    ]
    assert table["output"].to_pylist() == [None, "yes", None]
    assert table["output_1"].to_pylist() == [0.9, None, None]


def test_arrays_are_kept_by_reference_unless_copied(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=60, flush_rows=1_000_000) as log:
        kept = np.array([[1.0, 2.0]])
        copied = np.array([[1.0, 2.0]])
        out = np.array([0.5])
        batch(log, "kept", (("a", "b"), kept), out)
        batch(log, "copied", (("a", "b"), copied), out, copy=True)
        kept[0, 0] = copied[0, 0] = -1.0  # the caller broke its promise
    table = sorted_rows(read_predictions(tmp_path))
    assert table["features"].to_pylist() == [{"a": 1.0, "b": 2.0}, {"a": -1.0, "b": 2.0}]


def test_bad_batches_are_refused_at_append(tmp_path: Path) -> None:
    with PredictionLog(tmp_path) as log:
        one = np.array([1.0])
        cases: list[tuple[object, object, str]] = [
            ({"x": np.array([1.0, 2.0])}, one, "input 'x' has shape"),
            ({"x": np.array([1 + 2j])}, one, "dtype complex128"),
            ({"x": np.array([object()], dtype=object)}, one, "JSON-serializable"),
            ((("a", "a"), np.ones((1, 2))), one, "distinct strings"),
            ((("a",), np.ones((1, 2))), one, "one column per name"),
            ((("a",), np.ones((2, 1))), one, "one row per output"),
            ({}, 5.0, "one entry per row"),
        ]
        for inputs, outputs, message in cases:
            with pytest.raises(InvalidInput, match=message):
                batch(log, "bad", inputs, outputs)
        with pytest.raises(InvalidInput, match="deployment name"):
            batch(log, "bad", {}, one, deployment="../etc")
        with pytest.raises(InvalidInput, match="'at'"):
            batch(log, "bad", {}, one, at="now")
        assert log.rows_appended == 0


def test_partitioned_by_deployment_and_hour(tmp_path: Path) -> None:
    later = T0 + timedelta(seconds=5)  # 10:00:03, the next hour
    epoch_us = (later - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    with PredictionLog(tmp_path, flush_interval_s=0.05, worker="w1") as log:
        log.append_many([pred(0), pred(1, at=later), pred(2, "churn", at=epoch_us)])
        log.append(pred(3, "churn", at=T0.replace(tzinfo=None), shadow=True))

    dirs = {str(p.parent.relative_to(tmp_path)) for p in parquet_files(tmp_path)}
    assert dirs == {
        "deployment=fraud-api/hour=2025-03-01T09",
        "deployment=fraud-api/hour=2025-03-01T10",
        "deployment=churn/hour=2025-03-01T09",
        "deployment=churn/hour=2025-03-01T10",
    }
    assert all(p.name.startswith("part-w1-") for p in parquet_files(tmp_path))
    assert sorted(read_predictions(tmp_path, deployment="churn")["request_id"].to_pylist()) == [
        "r2",
        "r3",
    ]
    assert read_predictions(tmp_path, deployment="churn")["shadow"].to_pylist().count(True) == 1
    since = read_predictions(tmp_path, since=later)
    assert sorted(since["request_id"].to_pylist()) == ["r1", "r2"]
    assert read_predictions(tmp_path, deployment="nothing-here").num_rows == 0
    assert read_predictions(tmp_path / "absent").num_rows == 0
    # DuckDB reads the same layout with its hive partitioning.
    counts = duckdb.execute(
        f"select deployment, hour, count(*) from read_parquet('{tmp_path}/**/*.parquet', "
        "hive_partitioning = true, union_by_name = true) group by all order by all"
    ).fetchall()
    assert counts == [
        ("churn", "2025-03-01T09", 1),
        ("churn", "2025-03-01T10", 1),
        ("fraud-api", "2025-03-01T09", 1),
        ("fraud-api", "2025-03-01T10", 1),
    ]


def test_default_root_is_under_the_offline_dir() -> None:
    with PredictionLog(flush_interval_s=0.05) as log:
        log.append(pred(1))
    expected = Path(os.environ["KILN_HOME"]) / "offline" / "predictions"
    assert log.root == expected
    assert read_predictions()["request_id"].to_pylist() == ["r1"]


def test_concurrent_appenders_lose_nothing(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=250, flush_interval_s=0.01, max_buffered_rows=1000)

    def work(t: int) -> None:
        for i in range(2000):
            log.append(pred(t * 10_000 + i, deployment=f"d{t % 3}"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    ids = read_predictions(tmp_path)["request_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 16_000 == log.rows_written


class SlowLog(PredictionLog):
    """Writes slowly and records how many rows were buffered at each write."""

    peak = 0

    def _write_file(self, directory: Path, name: str, table: pa.Table) -> bool:
        self.peak = max(self.peak, self.buffered_rows)
        time.sleep(0.02)
        return super()._write_file(directory, name, table)


def test_backpressure_blocks_appenders_instead_of_dropping(tmp_path: Path) -> None:
    log = SlowLog(tmp_path, flush_rows=10, flush_interval_s=0.01, max_buffered_rows=50)
    started = time.perf_counter()
    for i in range(400):
        log.append(pred(i))
    elapsed = time.perf_counter() - started
    log.close()
    assert log.peak <= 50
    # 400 rows through a 50-row buffer drained at one file per 20 ms take several writes.
    assert elapsed > 0.1
    assert log.rows_written == 400
    assert sorted(read_predictions(tmp_path)["request_id"].to_pylist()) == sorted(
        f"r{i}" for i in range(400)
    )


def test_async_append_waits_without_blocking_the_event_loop(tmp_path: Path) -> None:
    log = SlowLog(tmp_path, flush_rows=10, flush_interval_s=0.01, max_buffered_rows=40)

    async def main() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        await asyncio.gather(*(log.append_async(pred(i)) for i in range(300)))
        await log.append_many_async([pred(300), pred(301)])
        await asyncio.gather(
            *(
                log.append_batch_async(
                    deployment="fraud-api",
                    model="fraud/3",
                    version=3,
                    arm="champion",
                    request_id=f"b{i}",
                    inputs=(("x",), np.full((7, 1), float(i))),
                    outputs=np.zeros(7),
                    latency_ms=1.0,
                    at=T0,
                )
                for i in range(20)
            )
        )
        done.set()
        await tick_task
        return ticks

    ticks = asyncio.run(main())
    log.close()
    assert ticks > 5  # the loop kept running while appenders waited for room
    assert log.peak <= 40
    assert read_predictions(tmp_path).num_rows == 302 + 140 == log.rows_written


def test_close_writes_everything_and_is_idempotent(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_rows=1_000_000, flush_interval_s=60)
    log.append_many(pred(i) for i in range(10))
    time.sleep(0.05)
    assert log.files_written == 0 and log.buffered_rows == 10
    log.close()
    log.close()
    assert read_predictions(tmp_path).num_rows == 10
    with pytest.raises(InvalidInput, match="closed"):
        log.append(pred(11))


def test_flush_writes_what_was_appended(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_rows=1_000_000, flush_interval_s=60) as log:
        log.append_many(pred(i) for i in range(5))
        log.flush()
        assert log.rows_written == 5 and read_predictions(tmp_path).num_rows == 5


class FlakyLog(PredictionLog):
    failures = 3

    def _write_file(self, directory: Path, name: str, table: pa.Table) -> bool:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        return super()._write_file(directory, name, table)


def test_failed_writes_keep_their_rows_and_retry(tmp_path: Path) -> None:
    log = FlakyLog(tmp_path, flush_rows=5, flush_interval_s=0.01)
    log.append_many(pred(i) for i in range(20))
    deadline = time.monotonic() + 5
    while log.rows_written < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.close()
    assert log.failures == 0
    assert sorted(read_predictions(tmp_path)["request_id"].to_pylist()) == sorted(
        f"r{i}" for i in range(20)
    )
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_flush_raises_when_the_disk_refuses(tmp_path: Path) -> None:
    log = FlakyLog(tmp_path, flush_rows=1_000_000, flush_interval_s=60)
    log.append(pred(1))
    with pytest.raises(OSError, match="No space"):
        log.flush()
    assert log.buffered_rows == 1
    log.failures = 0
    log.close()
    assert read_predictions(tmp_path)["request_id"].to_pylist() == ["r1"]


def test_bad_records_are_refused_at_append(tmp_path: Path) -> None:
    with PredictionLog(tmp_path) as log:
        with pytest.raises(InvalidInput, match="'features'"):
            log.append(pred(1, features={"x": object()}))
        with pytest.raises(InvalidInput, match="'output'"):
            log.append(pred(1, output={1, 2}))
        with pytest.raises(InvalidInput, match="deployment name"):
            log.append(pred(1, deployment="../etc"))
        with pytest.raises(InvalidInput, match="'at'"):
            log.append(pred(1, at="yesterday"))  # type: ignore[arg-type]
        assert log.rows_appended == 0
    with pytest.raises(InvalidInput, match="'max_buffered_rows' parameter"):
        PredictionLog(tmp_path, max_buffered_rows=0)
    with pytest.raises(InvalidInput, match="'worker' parameter"):
        PredictionLog(tmp_path, worker="a/b")


CHILD = """
import sys, time
from datetime import UTC, datetime
from kiln.serving.predlog import Prediction, PredictionLog

log = PredictionLog(sys.argv[1], flush_rows=500, flush_interval_s=0.005, worker="child")
i = 0
while True:
    log.append_many(
        Prediction(request_id=f"r{i + k}", deployment=f"d{k % 2}", model="m/1", version=1,
                   arm="champion", features={f"f{j}": float(i + j) for j in range(30)},
                   output=0.5, latency_ms=1.0, at=datetime.now(UTC))
        for k in range(100)
    )
    i += 100
"""


def test_kill_9_leaves_only_complete_files(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)])
    try:
        deadline = time.monotonic() + 20
        while len(parquet_files(tmp_path)) < 8:
            assert child.poll() is None, "the writer process exited"
            assert time.monotonic() < deadline, "the writer process wrote no files"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # A write cut short leaves at most a hidden temporary file; add one for certain.
    hour_dir = parquet_files(tmp_path)[0].parent
    (hour_dir / ".part-child-999999.parquet.tmp").write_bytes(b"PAR1 torn")

    files = parquet_files(tmp_path)
    per_file = sum(pq.read_table(p).num_rows for p in files)  # every file is complete
    table = read_predictions(tmp_path)
    assert table.num_rows == per_file > 0
    ids = table["request_id"].to_pylist()
    assert len(ids) == len(set(ids))
    duck = duckdb.execute(
        f"select count(*) from read_parquet('{tmp_path}/**/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    ).fetchall()
    assert duck == [(per_file,)]


def test_public_names_stay_importable_from_the_module() -> None:
    """The log is split by job into private modules; its users import from one place."""
    import kiln.serving.predlog as predlog

    assert set(predlog.__all__) == {
        "PREDICTION_SCHEMA",
        "AnsweredRequests",
        "BatchInputs",
        "Prediction",
        "PredictionLog",
        "default_root",
        "read_predictions",
    }
    for name in predlog.__all__:
        assert getattr(predlog, name) is not None, name
    assert predlog.read_predictions is read_predictions
    with PredictionLog(flush_interval_s=0.05) as log:
        assert predlog.default_root() == log.root


def requests(log: PredictionLog, first: int, counts: list[int], **kw: Any) -> int | None:
    """Requests ``first``, ``first + 1``... answered together, ``counts`` rows each."""
    total = sum(counts)
    values: dict[str, Any] = {
        "deployment": "fraud-api",
        "model": "fraud/3",
        "version": 3,
        "request_ids": [f"b{first + i:03d}" for i in range(len(counts))],
        "arms": ["champion"] * len(counts),
        "shadows": [False] * len(counts),
        "counts": counts,
        "inputs": (("amount", "age"), np.arange(total * 2, dtype=np.float64).reshape(total, 2)),
        "outputs": np.arange(total) / 100,
        "latency_ms": np.arange(len(counts), dtype=np.float64) + 0.5,
        "at": T0,
    }
    values.update(kw)
    return log.try_append_requests(AnsweredRequests(**values))


def test_requests_answered_together_are_one_entry_and_read_back_per_request(
    tmp_path: Path,
) -> None:
    with PredictionLog(tmp_path, flush_rows=1_000, flush_interval_s=0.05) as log:
        assert requests(log, 0, [1, 3, 1], shadows=[False, True, False]) == 5
        assert requests(log, 3, [1], arms=["canary"]) == 1
        matrix = np.array([[100.0, 200.0]])
        assert batch(log, "single", (("amount", "age"), matrix), np.array([0.5])) == 1
    assert log.rows_written == 7
    assert len(parquet_files(tmp_path)) == 1  # one file: one key, whatever the entry kinds

    table = sorted_rows(read_predictions(tmp_path))
    assert table["request_id"].to_pylist() == [
        "b000", "b001", "b001", "b001", "b002", "b003", "single",
    ]  # fmt: skip
    assert table["row"].to_pylist() == [0, 0, 1, 2, 0, 0, 0]
    assert table["shadow"].to_pylist() == [False, True, True, True, False, False, False]
    assert table["arm"].to_pylist() == ["champion"] * 5 + ["canary", "champion"]
    assert table["latency_ms"].to_pylist()[:6] == [0.5, 1.5, 1.5, 1.5, 2.5, 0.5]
    assert table["fallback"].to_pylist() == [False] * 7
    assert set(table["at"].to_pylist()) == {T0}
    features = table["features"].combine_chunks()
    assert features.field("amount").to_pylist() == [0.0, 2.0, 4.0, 6.0, 8.0, 0.0, 100.0]
    assert table["output"].to_pylist() == [0.0, 0.01, 0.02, 0.03, 0.04, 0.0, 0.5]


def test_requests_answered_together_never_wait_for_room(tmp_path: Path) -> None:
    log = SlowLog(tmp_path, flush_rows=1_000, flush_interval_s=10, max_buffered_rows=4)
    assert requests(log, 0, [2, 2]) == 4
    assert requests(log, 2, [1]) is None  # full: the caller falls back to awaiting room
    log.flush()
    assert requests(log, 2, [1]) == 1
    log.close()
    assert sorted(read_predictions(tmp_path)["request_id"].to_pylist()) == [
        "b000", "b000", "b001", "b001", "b002",
    ]  # fmt: skip


def test_requests_answered_together_are_checked_at_append(tmp_path: Path) -> None:
    with PredictionLog(tmp_path) as log:
        with pytest.raises(InvalidInput, match="do not add up to the 4 rows"):
            requests(
                log, 0, [1, 2], inputs=(("amount", "age"), np.zeros((4, 2))), outputs=np.zeros(4)
            )
        with pytest.raises(InvalidInput, match="of one length"):
            requests(log, 0, [1, 1], arms=["champion"])
        with pytest.raises(InvalidInput, match="one or more each"):
            requests(
                log, 0, [2, 0], inputs=(("amount", "age"), np.zeros((2, 2))), outputs=np.zeros(2)
            )
    assert log.rows_appended == 0
