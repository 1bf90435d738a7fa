"""MLflow's search-runs REST call on the dashboard benchmark's runs: run by
`benchmarks/ui.py` with the interpreter of MLflow's own environment (``--mlflow-python``).

    python benchmarks/_mlflow_runs.py [--runs 100000] [--seed 1] [--repeat 7] [--page-size 50]
        [--workdir DIR] [--budget-s 1200] [--request-timeout-s 300] [--slow-s 10]

It makes an MLflow tracking store in SQLite (the schema created by MLflow's own
``SqlAlchemyStore``), stores the runs of ``benchmarks/ui.py`` in one experiment with plain
SQL inserts into MLflow's tables (the same seeded generator, random calls in the same
order, so every value matches Kiln's side; the rows and tags ``mlflow.start_run`` writes),
then starts ``mlflow server --workers 1`` on 127.0.0.1 (its job runner for GenAI jobs off:
``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``) and times
``POST /api/2.0/mlflow/runs/search`` for the four queries Kiln's side times: a cold first
request, then ``--repeat`` more (one kept-alive connection; the time is the request and
reading its body, not parsing the JSON). Page 3 follows ``next_page_token`` twice (the
first page's token from the filtered query timed before), then the third page's request is
the one timed. Each answer is checked against the runs expected from the generator; a
difference is reported in ``errors``.

Bounded in time: a query whose cold request takes over ``--slow-s`` is not repeated (that
one answer is its figure); a request with no answer within ``--request-timeout-s`` is
given up (the query is reported in ``timeouts``) and the server restarted, since its one
worker is still busy with it; no request starts once ``--budget-s`` is spent. The server is
stopped at the end, also on error or SIGTERM.

Prints one JSON line: ``version``, ``sqlite`` (the SQLite library's version), ``runs``,
``page_size``, ``slow_s``, ``request_timeout_s``, ``populate_s``, ``timings`` (median
seconds per query), ``samples``, ``cold``, ``timeouts`` (seconds waited in vain),
``matches`` (runs the filter matches) and ``errors``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

EXPERIMENT = "bench-search"
FILTER = "metrics.val_auc > 0.9"
QUERIES: dict[str, dict[str, Any]] = {
    "first_page": {},
    "filtered_sorted": {"filter": FILTER, "order_by": ["metrics.val_auc DESC"]},
    "param_sorted": {"order_by": ["params.p3 DESC"]},
    "filtered_page_3": {"filter": FILTER, "order_by": ["metrics.val_auc DESC"], "page": 3},
}


def generate(n: int, seed: int) -> list[tuple[dict[str, int], dict[str, float]]]:
    """benchmarks/ui.py's ``populate``: the same generator, calls in the same order."""
    rng = random.Random(seed)
    runs = []
    for _ in range(n):
        params = {f"p{j}": rng.randint(1, 100) for j in range(10)}
        metrics = {"val_auc": rng.uniform(0.5, 1.0), **{f"m{j}": rng.random() for j in range(4)}}
        runs.append((params, metrics))
    return runs


def populate(
    db: Path, artifacts: Path, runs: list[tuple[dict[str, int], dict[str, float]]]
) -> None:
    """MLflow's schema from its store, then the rows ``mlflow.start_run`` would write."""
    store = SqlAlchemyStore(f"sqlite:///{db}", str(artifacts))
    experiment_id = store.create_experiment(EXPERIMENT, artifact_location=str(artifacts / "1"))
    store.engine.dispose()
    base_ms = int(time.time() * 1000) - len(runs) * 10
    run_rows, param_rows, metric_rows, latest_rows, tag_rows = [], [], [], [], []
    for i, (params, metrics) in enumerate(runs):
        run_id = uuid.uuid4().hex
        name = f"r{i}"
        start = base_ms + i * 10  # newest first is r{n-1} first, as on Kiln's side
        run_rows.append(
            (run_id, name, "UNKNOWN", "", "", "bench", "FINISHED", start, start + 5, "",
             "active", f"{artifacts}/1/{run_id}/artifacts", int(experiment_id))
        )  # fmt: skip
        param_rows.extend((key, str(value), run_id) for key, value in params.items())
        for key, value in metrics.items():
            metric_rows.append((key, value, start + 1, run_id, 0, 0))
            latest_rows.append((key, value, start + 1, 0, 0, run_id))
        tag_rows.extend(
            [
                ("mlflow.user", "bench", run_id),
                ("mlflow.source.name", "ui.py", run_id),
                ("mlflow.source.type", "LOCAL", run_id),
                ("mlflow.runName", name, run_id),
            ]
        )
    with sqlite3.connect(db) as con:
        con.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
            "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
            "artifact_uri, experiment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            run_rows,
        )
        con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", param_rows)
        con.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            metric_rows,
        )
        con.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            latest_rows,
        )
        con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
    con.close()


def expected(
    runs: list[tuple[dict[str, int], dict[str, float]]], page_size: int
) -> dict[str, list[Any]]:
    """What each query must answer: run names in order (p3 values for the param sort, whose
    ties MLflow breaks its own way). MLflow compares params as text, so ``params.p3 DESC``
    puts '99' before '100'."""
    newest = list(range(len(runs) - 1, -1, -1))
    matching = sorted(
        (i for i in newest if runs[i][1]["val_auc"] > 0.9),
        key=lambda i: runs[i][1]["val_auc"],
        reverse=True,
    )
    by_p3 = sorted((str(p["p3"]) for p, _ in runs), reverse=True)
    return {
        "first_page": [f"r{i}" for i in newest[:page_size]],
        "filtered_sorted": [f"r{i}" for i in matching[:page_size]],
        "param_sorted": by_p3[:page_size],
        "filtered_page_3": [f"r{i}" for i in matching[2 * page_size : 3 * page_size]],
        "matches": [len(matching)],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``mlflow server`` with 1 worker on 127.0.0.1 in a process group of its own, so that
    stopping it stops its web server process too."""

    def __init__(self, db: Path, artifacts: Path, log: Path) -> None:
        self.db, self.artifacts, self.log = db, artifacts, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
            f"sqlite:///{self.db}", "--default-artifact-root", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        # mlflow starts its web server by name: this environment's scripts come first. Its
        # job runner (8 processes for GenAI jobs, nothing to do with runs) is left off, so
        # it takes no CPU from the server being measured.
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.wait_ready(self.proc)

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"mlflow server exited with {proc.returncode}:\n{self.tail()}")
            try:
                con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                con.request("GET", "/health")
                ok = con.getresponse().status == 200
                con.close()
                if ok:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"mlflow server not ready after {timeout_s:g} s:\n{self.tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            # uvicorn waits for the request in progress: a query past its limit would keep
            # it for minutes, so the group is killed after a short grace
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:  # the group is gone already
            proc.wait()
            return
        with contextlib.suppress(ProcessLookupError):  # what is left of its group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def tail(self) -> str:
        return self.log.read_bytes()[-3000:].decode(errors="replace")


@contextmanager
def mlflow_server(db: Path, artifacts: Path, log: Path) -> Iterator[Server]:
    """A started server, stopped on the way out whatever happened."""
    server = Server(db, artifacts, log)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class Client:
    """One kept-alive connection, as a browser or SDK keeps one; every request has its own
    time limit."""

    def __init__(self, port: int) -> None:
        self.con = http.client.HTTPConnection("127.0.0.1", port)

    def call(self, method: str, path: str, body: bytes | None, timeout_s: float) -> bytes:
        self.con.timeout = timeout_s
        if self.con.sock is not None:
            self.con.sock.settimeout(timeout_s)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.con.request(method, path, body=body, headers=headers)
        response = self.con.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300].decode(errors='replace')}")
        return data

    def search(self, body: dict[str, Any], timeout_s: float) -> tuple[float, bytes]:
        payload = json.dumps(body).encode()
        start = time.perf_counter()
        data = self.call("POST", "/api/2.0/mlflow/runs/search", payload, timeout_s)
        return time.perf_counter() - start, data

    def close(self) -> None:
        self.con.close()


def request_body(experiment_id: str, spec: dict[str, Any], page_size: int) -> dict[str, Any]:
    body: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": page_size}
    if "filter" in spec:
        body["filter"] = spec["filter"]
    if "order_by" in spec:
        body["order_by"] = spec["order_by"]
    return body


def answer(data: bytes, key: str) -> list[Any]:
    runs = json.loads(data).get("runs", [])
    if key == "param_sorted":
        return [
            next((p["value"] for p in r["data"].get("params", []) if p["key"] == "p3"), None)
            for r in runs
        ]
    return [r["info"]["run_name"] for r in runs]


class OutOfTime(Exception):
    """A request got no answer within its limit (``limit_s``), or the budget was spent
    before it (``limit_s`` None)."""

    def __init__(self, message: str, limit_s: float | None) -> None:
        super().__init__(message)
        self.limit_s = limit_s


class Measurement:
    """The four queries against one server, restarted after a request past its limit (the
    single worker would otherwise still be busy with it)."""

    def __init__(self, server: Server, args: argparse.Namespace, want: dict[str, list[Any]]):
        self.server, self.args, self.want = server, args, want
        self.deadline = time.monotonic() + args.budget_s
        self.client = Client(server.port)
        self.next_token: dict[str, str] = {}  # request body -> its answer's next_page_token
        self.cold: dict[str, float] = {}
        self.samples: dict[str, list[float]] = {}
        self.timeouts: dict[str, float] = {}
        self.errors: list[str] = []

    def search(self, body: dict[str, Any]) -> tuple[float, bytes]:
        limit = min(self.args.request_timeout_s, self.deadline - time.monotonic())
        if limit <= 0:
            raise OutOfTime("the time budget was spent before this request", None)
        try:
            elapsed, data = self.client.search(body, limit)
        except TimeoutError:
            self.client.close()
            self.server.stop()
            self.server.start()
            self.client = Client(self.server.port)
            raise OutOfTime(f"no answer within {limit:.0f} s", limit) from None
        token = json.loads(data).get("next_page_token")
        if token:
            self.next_token[json.dumps(body, sort_keys=True)] = token
        return elapsed, data

    def experiment_id(self) -> str:
        path = f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
        got = json.loads(self.client.call("GET", path, None, 60))
        return str(got["experiment"]["experiment_id"])

    def page_body(self, body: dict[str, Any], page: int) -> dict[str, Any]:
        """Follow ``next_page_token`` to the page (a page already fetched is not fetched
        again: the first page of a query timed before gives its token)."""
        for _ in range(page - 1):
            token = self.next_token.get(json.dumps(body, sort_keys=True))
            if token is None:
                self.search(body)
                token = self.next_token.get(json.dumps(body, sort_keys=True))
            if token is None:
                raise RuntimeError("no next_page_token before the page asked for")
            body = {**body, "page_token": token}
        return body

    def run(self) -> None:
        experiment_id = self.experiment_id()
        for key, spec in QUERIES.items():
            body = request_body(experiment_id, spec, self.args.page_size)
            try:
                body = self.page_body(body, spec.get("page", 1))
                self.cold[key], data = self.search(body)
                got = answer(data, key)
                if got != self.want[key]:
                    self.errors.append(f"{key}: the answer differs from the runs expected")
                if self.cold[key] > self.args.slow_s:
                    # minutes a request: the one answer is the figure, not repeated
                    self.samples[key] = [self.cold[key]]
                    continue
                self.samples[key] = [self.search(body)[0] for _ in range(self.args.repeat)]
            except OutOfTime as exc:
                if key not in self.cold and exc.limit_s is not None:
                    self.timeouts[key] = exc.limit_s
                self.errors.append(f"{key}: {exc}")
                self.samples.pop(key, None)
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                self.errors.append(f"{key}: {type(exc).__name__}: {exc}")
                self.samples.pop(key, None)
                self.client.close()  # a failed request leaves the connection unusable
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--workdir", type=Path, help="a folder for the store (default: temporary)")
    parser.add_argument("--budget-s", type=float, default=1200.0, help="bound on the timed part")
    parser.add_argument("--request-timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--slow-s", type=float, default=10.0, help="a query slower than this is not repeated"
    )
    args = parser.parse_args()
    # a SIGTERM from the caller unwinds through the finally blocks, stopping the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        db, artifacts = root / "mlflow.db", root / "artifacts"
        if db.exists():
            db.unlink()
        runs = generate(args.runs, args.seed)
        want = expected(runs, args.page_size)
        started = time.perf_counter()
        populate(db, artifacts, runs)
        populate_s = time.perf_counter() - started
        print(f"MLflow store: {args.runs:,} runs in {populate_s:.1f} s", file=sys.stderr)
        with mlflow_server(db, artifacts, root / "server.log") as server:
            measured = Measurement(server, args, want)
            measured.run()
    result = {
        "version": mlflow.__version__,
        "sqlite": sqlite3.sqlite_version,
        "runs": args.runs,
        "page_size": args.page_size,
        "slow_s": args.slow_s,
        "request_timeout_s": args.request_timeout_s,
        "populate_s": populate_s,
        "timings": {key: statistics.median(s) for key, s in measured.samples.items()},
        "samples": measured.samples,
        "cold": measured.cold,
        "timeouts": measured.timeouts,
        "matches": want["matches"][0],
        "errors": measured.errors,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
