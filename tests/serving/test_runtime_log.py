"""The runtime's prediction logging in-process: batches in one piece, requests on their own
when the log's buffer is full, and nothing lost either way."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from _harness import frame, register_linear

import kiln
from kiln.registry import PythonModel
from kiln.serving._runtime import Runtime
from kiln.serving.predlog import AnsweredRequests, PredictionLog, read_predictions
from kiln.tracking import default_client


class SlowLog(PredictionLog):
    """Writes slowly, so a small buffer fills while requests keep coming."""

    def _write_file(self, directory: Path, name: str, table: pa.Table) -> bool:
        time.sleep(0.02)
        return super()._write_file(directory, name, table)


def serve_and_log(log: PredictionLog, requests: int, clients: int) -> None:
    async def main() -> None:
        runtime = Runtime(["fraud-api"], client=default_client(), predlog=log)
        await runtime.start()
        try:

            async def client(c: int) -> None:
                for i in range(c, requests, clients):
                    row = np.array([[float(i), 2.0, -1.0, 0.5]])
                    answer = await runtime.infer("fraud-api", row, request_id=f"q{i:04d}")
                    assert answer.request_id == f"q{i:04d}" and not answer.fallback

            await asyncio.gather(*(client(c) for c in range(clients)))
        finally:
            await runtime.stop()

    asyncio.run(main())
    log.close()


def test_a_full_buffer_sends_requests_to_wait_for_room_and_none_is_lost(tmp_path: Path) -> None:
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    log = SlowLog(tmp_path / "log", flush_rows=4, flush_interval_s=0.01, max_buffered_rows=8)
    refused: list[bool] = []
    batch_append = log.try_append_requests

    def watched(answered: AnsweredRequests) -> int | None:
        rows = batch_append(answered)
        refused.append(rows is None)
        return rows

    log.try_append_requests = watched  # type: ignore[method-assign]
    serve_and_log(log, requests=300, clients=16)
    assert any(refused)  # the buffer was full at times: those requests waited on their own

    logged = read_predictions(tmp_path / "log", deployment="fraud-api")
    assert sorted(logged.column("request_id").to_pylist()) == [f"q{i:04d}" for i in range(300)]
    f0 = sorted(f["f0"] for f in logged.column("features").to_pylist())
    assert f0 == [float(i) for i in range(300)]


def test_batches_are_logged_in_one_piece_with_each_request_its_own_row(tmp_path: Path) -> None:
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    log = PredictionLog(tmp_path / "log", flush_rows=10_000, flush_interval_s=5)
    appended: list[int] = []
    batch_append = log.try_append_requests

    def counted(answered: AnsweredRequests) -> int | None:
        appended.append(len(answered.request_ids))
        return batch_append(answered)

    log.try_append_requests = counted  # type: ignore[method-assign]
    serve_and_log(log, requests=200, clients=16)

    assert sum(appended) == 200 and max(appended) > 1  # several requests per entry
    logged = read_predictions(tmp_path / "log", deployment="fraud-api")
    assert logged.num_rows == 200
    assert sorted(logged.column("request_id").to_pylist()) == [f"q{i:04d}" for i in range(200)]
    assert set(logged.column("arm").to_pylist()) == {"champion"}


def test_a_batch_shared_by_two_deployments_is_logged_request_by_request(tmp_path: Path) -> None:
    """One model version serves both, so their requests share batches; each request is
    still logged under its own deployment."""
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    kiln.deployments.create("fraud-eu", model="fraud/1")
    log = PredictionLog(tmp_path / "log", flush_rows=10_000, flush_interval_s=5)

    async def main() -> None:
        runtime = Runtime(["fraud-api", "fraud-eu"], client=default_client(), predlog=log)
        await runtime.start()
        try:
            rows = np.array([[1.0, 2.0, -1.0, 0.5]])
            await asyncio.gather(
                *(
                    runtime.infer(name, rows, request_id=f"{name}-{i}")
                    for i in range(50)
                    for name in ("fraud-api", "fraud-eu")
                )
            )
        finally:
            await runtime.stop()

    asyncio.run(main())
    log.close()
    for name in ("fraud-api", "fraud-eu"):
        logged = read_predictions(tmp_path / "log", deployment=name)
        assert sorted(logged.column("request_id").to_pylist()) == sorted(
            f"{name}-{i}" for i in range(50)
        )


class Unloggable(PythonModel):
    """Answers with objects the prediction log cannot store (no JSON form)."""

    def predict(self, model_input: Any) -> Any:
        out = np.empty(len(model_input), dtype=object)
        out[:] = [Opaque() for _ in range(len(model_input))]
        return out


class Opaque:
    """A value with no JSON form."""


def test_a_batch_the_log_refuses_is_answered_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kiln.models.register("odd", Unloggable(), input_example=frame(5))
    kiln.deployments.create("odd-api", model="odd/1")
    log = PredictionLog(tmp_path / "log", flush_rows=10_000, flush_interval_s=5)

    async def main() -> None:
        runtime = Runtime(["odd-api"], client=default_client(), predlog=log)
        await runtime.start()
        try:
            rows = frame(1).to_numpy()
            answers = await asyncio.gather(
                *(runtime.infer("odd-api", rows, request_id=f"o{i}") for i in range(20))
            )
            assert all(isinstance(a.outputs[0], Opaque) and not a.fallback for a in answers)
        finally:
            await runtime.stop()

    asyncio.run(main())
    log.close()
    assert log.rows_appended == 0
    refusals = [r.getMessage() for r in caplog.records if "not logged" in r.getMessage()]
    assert refusals and all("JSON-serializable" in m for m in refusals)
    assert len(refusals) < 20  # once per batch, not once per request
