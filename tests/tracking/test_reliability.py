"""Reliability under real processes: concurrent writers, SIGKILL, hostile filters, frozen reads.

Every case uses real child processes (``_workers.py``) against real SQLite / PostgreSQL
stores and a real artifact store; nothing is mocked. Sizes scale with ``KILN_SLOW_SCALE``
(default 1).
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.store import MetadataStore, open_blob_store
from kiln.tracking import RunStatus, TrackingClient

WORKERS = Path(__file__).with_name("_workers.py")
SCALE = max(float(os.environ.get("KILN_SLOW_SCALE", "1") or 1), 0.1)


def scaled(n: int) -> int:
    return max(int(n * SCALE), 1)


def metric_value(worker: int, step: int) -> float:  # mirrors _workers.metric_value
    return worker * 1_000_000 + step * 0.25


# -- child processes ----------------------------------------------------------------------


def child_env(
    db_url: str,
    artifact_uri: str,
    home: Path,
    *,
    heartbeat_timeout_s: float = 60.0,
    flush_interval_s: float = 0.01,
    s3_endpoint: str | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(
        KILN_HOME=str(home),
        KILN_DB_URL=db_url,
        KILN_ARTIFACT_URI=artifact_uri,
        KILN_HEARTBEAT_TIMEOUT_S=str(heartbeat_timeout_s),
        KILN_METRIC_FLUSH_INTERVAL_S=str(flush_interval_s),
        PYTHONUNBUFFERED="1",
    )
    if s3_endpoint:
        env["KILN_S3_ENDPOINT_URL"] = s3_endpoint
    return env


class Child:
    """A ``_workers.py`` process whose stdout lines arrive on a queue."""

    def __init__(self, env: dict[str, str], *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKERS), *map(str, args)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump_out, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # not the half line of a child killed while printing
                self.lines.put(line[:-1])
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def expect(self, prefix: str, timeout_s: float = 60.0) -> list[str]:
        """The fields of the next stdout line starting with ``prefix`` (others are kept)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} line within {timeout_s}s\n{self.report()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)
                raise AssertionError(f"child exited before printing {prefix!r}\n{self.report()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line.split()[1:]

    def drain(self) -> list[str]:
        """Every remaining stdout line, after the process has ended."""
        for thread in self._threads:
            thread.join(timeout=30)
        while True:
            line = self.lines.get_nowait() if not self.lines.empty() else None
            if line is None:
                return self.seen
            self.seen.append(line)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self.drain()

    def wait(self, timeout_s: float = 120.0) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self.drain()
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.drain()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def report(self) -> str:
        return f"rc={self.proc.poll()} stdout={self.seen[-5:]}\nstderr:\n{self.stderr[-4000:]}"


@pytest.fixture
def spawn() -> Iterator[Any]:
    children: list[Child] = []

    def start(env: dict[str, str], *args: object) -> Child:
        child = Child(env, *args)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def flushed_steps(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("FLUSHED ")]


def sqlite_path(db_url: str) -> str:
    return db_url.removeprefix("sqlite:///")


def assert_sqlite_intact(db_url: str) -> None:
    con = sqlite3.connect(sqlite_path(db_url))
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        con.close()


def kiln_tables(engine: sa.Engine) -> dict[str, int]:
    """Row count of every ``kiln_*`` table, read straight from the database."""
    names = sorted(n for n in sa.inspect(engine).get_table_names() if n.startswith("kiln_"))
    with engine.connect() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
            for name in names
        }


# -- 1. concurrent writers ----------------------------------------------------------------


@pytest.mark.slow
def test_eight_processes_log_concurrently_and_lose_nothing(
    db_url: str, tracking_client: TrackingClient, tmp_path: Path, spawn: Any
) -> None:
    """Eight writers race on a fresh store (schema creation included); every value lands."""
    n = scaled(3000)
    workers = 8
    go = tmp_path / "go"
    env = child_env(db_url, str(tmp_path / "artifacts"), tmp_path / "child-home")
    children = [spawn(env, "concurrent", i, n, go) for i in range(workers)]
    for child in children:
        child.expect("READY")
    go.touch()
    run_ids = {}
    for i, child in enumerate(children):
        assert child.wait() == 0, child.report()
        assert "DONE" in child.seen, child.report()
        run_ids[i] = next(line.split()[1] for line in child.seen if line.startswith("RUN "))
        for bad in ("database is locked", "Traceback", "could not write metrics"):
            assert bad not in child.stderr, child.report()

    for i, run_id in run_ids.items():
        record = kiln.runs.get(run_id, client=tracking_client)
        assert record.status == RunStatus.FINISHED
        assert record.name == f"worker-{i}"
        assert record.metrics == {"loss": metric_value(i, n - 1)}
        history = kiln.runs.metric_history(run_id, "loss", client=tracking_client)
        assert len(history) == n
        assert [p.step for p in history] == list(range(n))
        assert [p.value for p in history] == [metric_value(i, s) for s in range(n)]
        expected_params: dict[str, Any] = {"worker": i, "n": n}
        expected_tags = {"worker": str(i)}
        if i % 2 == 0:
            checkpoints = [s for s in range(n) if s % 500 == 499]
            expected_params.update({f"checkpoint_{s}": s for s in checkpoints})
            if checkpoints:
                expected_tags["progress"] = str(checkpoints[-1])
        assert dict(record.params) == expected_params
        assert dict(record.tags) == expected_tags

    found = kiln.runs.search("concurrency", limit=None, client=tracking_client)
    assert sorted(r.id for r in found) == sorted(run_ids.values())
    counts = kiln_tables(tracking_client.meta.engine)
    assert counts["kiln_metrics"] == workers * n
    assert counts["kiln_latest_metrics"] == workers
    assert counts["kiln_experiments"] == 1


def test_concurrent_experiment_create_is_idempotent(
    db_url: str, tracking_client: TrackingClient, tmp_path: Path, spawn: Any
) -> None:
    """Processes creating the same experiments at once all succeed and agree on one row each."""
    names = [f"shared-{i}" for i in range(3)]
    go = tmp_path / "go"
    env = child_env(db_url, str(tmp_path / "artifacts"), tmp_path / "child-home")
    children = [spawn(env, "create_experiments", ",".join(names), go) for _ in range(4)]
    for child in children:
        child.expect("READY")
    go.touch()
    created = set()
    for child in children:
        assert child.wait() == 0, child.report()
        created |= {line.split()[1] for line in child.seen if line.startswith("CREATED ")}
    records = kiln.experiments.list(client=tracking_client)
    assert sorted(r.name for r in records) == names
    assert created == {r.id for r in records}
    assert [r.run_count for r in records] == [0] * 2 + [4]


def test_values_no_store_can_hold_are_refused_and_block_nothing(
    db_url: str,
    tracking_client: TrackingClient,
    tmp_path: Path,
    spawn: Any,
) -> None:
    """A bad step or timestamp is refused when logged; it never poisons later writes."""
    env = child_env(db_url, str(tmp_path / "artifacts"), tmp_path / "child-home")
    child = spawn(env, "out_of_range_values")
    rc = child.wait()
    (run_id,) = (line.split()[1] for line in child.seen if line.startswith("RUN "))
    verdicts = [
        line for line in child.seen if line.split()[0] in ("ACCEPTED", "REJECTED", "RAISED")
    ]
    assert verdicts == [
        "REJECTED step",
        "REJECTED timestamp",
        "REJECTED negative-timestamp",
        "REJECTED infinite-timestamp",
    ], child.report()
    assert rc == 0, child.report()
    record = kiln.runs.get(run_id, client=tracking_client)
    assert record.status == RunStatus.FINISHED
    assert dict(record.metrics) == {"ok": 2.0}


# -- 2. SIGKILL while logging metrics -----------------------------------------------------


def test_sigkill_while_logging_keeps_flushed_values_and_reaps_the_run(
    db_url: str, tmp_path: Path, spawn: Any
) -> None:
    timeout_s = 1.0
    artifacts = str(tmp_path / "artifacts")
    reader = TrackingClient.open(
        db_url, artifacts, heartbeat_timeout_s=timeout_s, metric_flush_interval_s=0.05
    )
    env = child_env(
        db_url,
        artifacts,
        tmp_path / "child-home",
        heartbeat_timeout_s=timeout_s,
        flush_interval_s=0.02,
    )
    child = spawn(env, "flush_loop", 50)
    run_id = child.expect("RUN")[0]
    child.expect("FLUSHED")

    # Alive for longer than the timeout: the heartbeat keeps it RUNNING.
    time.sleep(timeout_s * 1.5)
    child.expect("FLUSHED")
    assert kiln.runs.get(run_id, client=reader).status == RunStatus.RUNNING
    for _ in range(random.randint(1, 5)):
        child.expect("FLUSHED")
    child.kill()
    last = max(flushed_steps(child.seen))
    assert last >= 99

    if db_url.startswith("sqlite"):
        assert_sqlite_intact(db_url)
        fresh = TrackingClient(
            meta=MetadataStore(db_url),
            blobs=open_blob_store(artifacts),
            heartbeat_timeout_s=timeout_s,
        )
        with kiln.start_run("after-crash", client=fresh) as run:  # the store still takes writes
            run.log_metric("ok", 1.0)
        assert kiln.runs.get(run.id, client=fresh).status == RunStatus.FINISHED
        fresh.meta.dispose()

    history = kiln.runs.metric_history(run_id, "loss", client=reader)
    steps = [p.step for p in history]
    assert steps == list(range(len(steps))), "the history has gaps or duplicates"
    assert steps[-1] >= last
    assert [p.value for p in history] == [metric_value(0, s) for s in steps]
    record = kiln.runs.get(run_id, client=reader)
    assert record.metrics["loss"] == metric_value(0, steps[-1])  # latest agrees with history

    deadline = time.monotonic() + timeout_s + 10
    while record.status == RunStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
        record = kiln.runs.get(run_id, client=reader)
    assert record.status == RunStatus.KILLED
    assert record.end_time is not None
    assert record.error and "heartbeat" in record.error
    killed = kiln.runs.search(filter="attributes.status = 'KILLED'", client=reader)
    assert run_id in [r.id for r in killed]
    running = kiln.runs.search(filter="attributes.status = 'RUNNING'", client=reader)
    assert run_id not in [r.id for r in running]
    # Reaping loses nothing either.
    assert len(kiln.runs.metric_history(run_id, "loss", client=reader)) == len(history)


# -- 3. SIGKILL in the middle of an artifact upload ---------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def kill_mid_upload(
    child: Child, tmp_dir: Path | None, rng: random.Random, *, at_write: bool
) -> None:
    """SIGKILL ``child`` somewhere inside ``log_artifact``.

    ``at_write`` (local store only): wait until a new temporary blob file appears in
    ``tmp_dir``, so the kill lands while the blob's bytes are being written; otherwise
    sleep a random part of one upload's duration.
    """
    child.expect("UPLOADING")
    t0 = time.monotonic()
    child.expect("LOGGED")
    upload_s = time.monotonic() - t0
    before = set(tmp_dir.iterdir()) if tmp_dir is not None else set()
    child.expect("UPLOADING")
    if at_write and tmp_dir is not None:
        deadline = time.monotonic() + 30
        while not set(tmp_dir.iterdir()) - before and time.monotonic() < deadline:
            time.sleep(0.0005)
    else:
        time.sleep(rng.uniform(0, upload_s))
    child.kill()


def check_artifacts_verify(client: TrackingClient, experiment: str, dst: Path) -> int:
    """Every listed artifact row downloads and hash-verifies; return how many there were."""
    total = 0
    for record in kiln.runs.search(experiment, limit=None, client=client):
        for art in kiln.runs.list_artifacts(record.id, client=client):
            assert art.digest is not None
            local = kiln.runs.download_artifacts(
                record.id, art.path, dst / record.id, client=client
            )
            assert local.stat().st_size == art.size
            assert sha256_file(local) == art.digest
            total += 1
    return total


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_sigkill_during_artifact_upload_leaves_no_partial_artifact(
    backend: str, sqlite_url: str, tmp_path: Path, spawn: Any, request: pytest.FixtureRequest
) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    rounds = max(scaled(2), 2)  # round 0 dies inside a blob write, later ones at random
    if backend == "local":
        size = scaled(64 << 20)
        root = tmp_path / "artifacts"
        artifact_uri, endpoint, bucket = str(root), None, ""
    else:
        size = scaled(24 << 20)
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        artifact_uri = f"s3://{bucket}/blobs"
        root = tmp_path / "unused"
    client = TrackingClient.open(sqlite_url, artifact_uri, s3_endpoint_url=endpoint)
    env = child_env(sqlite_url, artifact_uri, tmp_path / "child-home", s3_endpoint=endpoint)

    in_flight: list[Path] = []
    for r in range(rounds):
        work = tmp_path / f"work-{r}"
        work.mkdir()
        child = spawn(env, "artifact_loop", size, work)
        child.expect("RUN")
        tmp_dir = root / "tmp" if backend == "local" else None
        kill_mid_upload(child, tmp_dir, rng, at_write=r == 0)
        logged = sum(line.startswith("LOGGED ") for line in child.seen)
        (run_id,) = (line.split()[1] for line in child.seen if line.startswith("RUN "))
        rows = kiln.runs.list_artifacts(run_id, client=client)
        assert logged <= len(rows) <= logged + 1, f"seed={seed}"
        in_flight.append(work / "model.bin")

    assert_sqlite_intact(sqlite_url)
    if backend == "local":  # round 0 died while writing a blob: its temporary file is left
        assert any((root / "tmp").iterdir()), f"no kill landed inside a blob write (seed={seed})"
    assert check_artifacts_verify(client, "artifacts", tmp_path / "downloads") >= rounds

    # The blob store holds only complete blobs, each under its own hash.
    if backend == "local":
        assert {p.name for p in root.iterdir()} <= {"sha256", "tmp"}
        blobs = [p for p in (root / "sha256").rglob("*") if p.is_file()]
        for path in blobs:
            assert sha256_file(path) == path.name, f"partial blob {path} (seed={seed})"
            assert path.relative_to(root / "sha256").parts == (
                path.name[:2],
                path.name[2:4],
                path.name,
            )
    else:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for obj in page.get("Contents", [])
        ]
        blobs = keys
        for key in keys:
            assert key.startswith("blobs/sha256/"), key
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1], f"seed={seed}"
    assert len(blobs) >= rounds

    # Whatever was in flight when the process died can be logged again and reads back whole.
    with kiln.start_run("artifacts", name="retry", client=client) as run:
        for i, src in enumerate(in_flight):
            run.log_artifact(src, artifact_path=f"retry{i}")
    for i, src in enumerate(in_flight):
        got = kiln.runs.download_artifacts(
            run.id, f"retry{i}/model.bin", tmp_path / "retry", client=client
        )
        assert sha256_file(got) == sha256_file(src)


# -- 4. SQL injection through filter and order_by -----------------------------------------

HOSTILE_FILTERS = [
    "params.x = '1'; DROP TABLE kiln_runs; --'",
    "params.x = '1' OR 1=1",
    "params.x = '1' or '1'='1'",
    "params.x = 1 OR 1=1 --",
    "metrics.`a; drop table kiln_metrics` > 0",
    'metrics."a; drop table kiln_metrics --" > 0',
    "tags.t = 'x'' OR ''1''=''1'",
    "tags.t = 'x'' OR 1=1 --'",
    "tags.t = 'x\\' OR 1=1 --'",
    "attributes.name = 'a' UNION SELECT id FROM kiln_runs",
    "attributes.name = 'a' UNION SELECT id FROM kiln_runs --",
    "attributes.name = 'a'); DELETE FROM kiln_runs; --",
    "attributes.name = 'x'; DELETE FROM kiln_params",
    "attributes.name IN ('a', (SELECT id FROM kiln_runs))",
    "attributes.status = 'FINISHED' AND 1=1",
    "attributes.status = 'RUNNING''; DROP TABLE kiln_tags; --'",
    "attributes.experiment = 'inj'' OR ''a''=''a'",
    "attributes.`status; DROP TABLE kiln_runs` = 'x'",
    "attributes.start_time > 0 OR 1=1",
    "params.`x' OR '1'='1` = '1'",
    "params.x = '%' OR params.x LIKE '%'",
    "params.x LIKE '%''; DROP TABLE kiln_runs; --'",
    "tags.t IN ('x', 'y') OR 1=1",
    "tags.t NOT IN ('x') ; DROP TABLE kiln_tags",
    "metrics.m > 0 AND (SELECT 1) = 1",
    "metrics.m > 0x10",
    "metrics.m > 1e999",
    "metrics.m > -1e999",
    "/* */ metrics.m > 0",
    "metrics.m > 0 /* comment */",
    "metrics.m > 0 -- comment",
    "params.x = 'é'' OR 1=1 -- ✓'",
    "attributes.start_time > '1970-01-01''; DROP TABLE kiln_runs; --'",
    "attributes.id = 'a' " + "AND params.x = '1' " * 200,
]

# Values the database itself cannot take: InvalidInput (or a literal reading), never a
# driver error such as OverflowError or psycopg's DataError.
EDGE_FILTERS = [
    "attributes.start_time > 1e300",
    "attributes.start_time > -1e300",
    "attributes.start_time > 1e999",
    "attributes.end_time IN (1, 1e300)",
    "attributes.start_time > 9223372036854775807",
    "tags.t = 'x\x00'' OR 1=1'",
    "tags.`t\x00` = 'x'",
    "params.x = 'a\x00'",
    "attributes.name = 'a\x00'' OR 1=1 --'",
]

HOSTILE_ORDERS = [
    "metrics.x; DROP TABLE kiln_runs",
    "metrics.x DESC; DROP TABLE kiln_runs",
    "metrics.x, (SELECT 1)",
    "params.x ASC NULLS FIRST",
    "attributes.start_time; DELETE FROM kiln_metrics",
    "attributes.`start_time; DROP TABLE kiln_runs`",
    "attributes.experiment_id",
    "metrics.`x; DROP TABLE kiln_runs`",
    "-params.`x'); DROP TABLE kiln_params; --`",
    'tags.`t" DESC; DROP TABLE kiln_tags; --`',
    "(SELECT name FROM sqlite_master)",
    "1",
    "CASE WHEN 1=1 THEN 1 END",
]


def seed_runs(client: TrackingClient) -> dict[str, str]:
    ids = {}
    for name, x, t, m in [("a", "1", "x", 0.5), ("b", "2", "y", 2.0), ("c", "1", "z", -1.0)]:
        with kiln.start_run("inj", name=name, client=client) as run:
            run.log_params({"x": x})
            run.set_tag("t", t)
            run.log_metric("m", m)
            run.log_metric("x", m * 2)
            ids[name] = run.id
    return ids


def test_hostile_filters_and_orders_are_rejected_or_literal(
    tracking_client: TrackingClient,
) -> None:
    ids = seed_runs(tracking_client)
    engine = tracking_client.meta.engine
    before = kiln_tables(engine)
    assert {"kiln_runs", "kiln_params", "kiln_tags", "kiln_metrics"} <= set(before)

    outcomes = {}
    for text in HOSTILE_FILTERS:
        try:
            found = kiln.runs.search("inj", filter=text, client=tracking_client)
        except InvalidInput as exc:
            assert str(exc), text
            outcomes[text] = "rejected"
            continue
        # Treated as a literal comparison: nothing outside what a plain reading matches.
        legit = {ids["a"], ids["b"], ids["c"]}
        assert {r.id for r in found} <= legit, text
        outcomes[text] = sorted(r.name for r in found)
    for text in HOSTILE_ORDERS:
        for order_by in ([text], text):
            try:
                found = kiln.runs.search("inj", order_by=order_by, client=tracking_client)
            except InvalidInput:
                outcomes[text] = "rejected"
                continue
            # A quoted name is a literal key no run has: the order falls back to newest first.
            assert [r.id for r in found] == [ids["c"], ids["b"], ids["a"]], text
    with pytest.raises(NotFound):
        kiln.runs.search("inj'; DROP TABLE kiln_runs; --", client=tracking_client)

    # Literal readings give literal answers.
    assert outcomes["metrics.`a; drop table kiln_metrics` > 0"] == []
    assert outcomes["tags.t = 'x'' OR ''1''=''1'"] == []
    assert outcomes["metrics.m > -1e999"] == ["a", "b", "c"]
    assert outcomes["params.x = '1' OR 1=1"] == "rejected"
    assert outcomes["params.x = '1'; DROP TABLE kiln_runs; --'"] == "rejected"
    assert outcomes["metrics.x; DROP TABLE kiln_runs"] == "rejected"

    assert kiln_tables(engine) == before
    assert sorted(
        r.name for r in kiln.runs.search("inj", order_by=["metrics.x"], client=tracking_client)
    ) == ["a", "b", "c"]


@pytest.mark.parametrize("text", EDGE_FILTERS)
def test_values_the_database_cannot_take_are_invalid_input(
    text: str, tracking_client: TrackingClient
) -> None:
    ids = seed_runs(tracking_client)
    before = kiln_tables(tracking_client.meta.engine)
    try:
        found = kiln.runs.search("inj", filter=text, client=tracking_client)
    except InvalidInput:
        pass
    else:
        assert {r.id for r in found} <= set(ids.values())
    assert kiln_tables(tracking_client.meta.engine) == before


# -- 5. frozen records ---------------------------------------------------------------------


def test_records_are_frozen_snapshots(tracking_client: TrackingClient) -> None:
    with kiln.start_run("frozen", client=tracking_client, tags={"stage": "one"}) as run:
        run.log_params({"lr": 0.1})
        run.log_metric("loss", 1.0)
        snapshot = run.record()
        read = kiln.runs.get(run.id, client=tracking_client)
        (searched,) = kiln.runs.search("frozen", client=tracking_client)
        run.log_params({"layers": 3})
        run.set_tags({"stage": "two", "extra": "yes"})
        run.log_metric("loss", 0.5)
        run.log_metric("acc", 0.9)
        run.flush()

    for record in (snapshot, read, searched):
        assert record.status == RunStatus.RUNNING
        assert record.end_time is None
        assert dict(record.params) == {"lr": 0.1}
        assert dict(record.tags) == {"stage": "one"}
        assert dict(record.metrics) == {"loss": 1.0}
        for mapping in (record.params, record.tags, record.metrics, record.environment):
            with pytest.raises(TypeError):
                mapping["lr"] = 2  # type: ignore[index]
            with pytest.raises((TypeError, AttributeError)):
                del mapping["lr"]  # type: ignore[attr-defined]
        with pytest.raises(AttributeError):
            record.status = RunStatus.FAILED  # type: ignore[misc]
        with pytest.raises(AttributeError):
            record.params = {}  # type: ignore[misc]

    now = kiln.runs.get(run.id, client=tracking_client)
    assert now.status == RunStatus.FINISHED
    assert dict(now.params) == {"lr": 0.1, "layers": 3}
    assert dict(now.tags) == {"stage": "two", "extra": "yes"}
    assert dict(now.metrics) == {"loss": 0.5, "acc": 0.9}
    # A record's mappings are copies: changing what a dict() of it returns changes nothing.
    copy = dict(snapshot.params)
    copy["lr"] = 99
    assert snapshot.params["lr"] == 0.1
