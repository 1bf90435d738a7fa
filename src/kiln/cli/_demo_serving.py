"""The demo's deployment step: serve the champion, canary a challenger at 10%, judge it.

The server is the real one (``kiln serve``'s app under uvicorn, on 127.0.0.1 in a
background thread); traffic goes over HTTP to the native endpoint, which looks up the
fraud features online for each transaction's user and merchant.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

import kiln
from kiln.core import Conflict, KilnError, free_local_port
from kiln.registry import ModelVersion
from kiln.serving import Guard, ServeConfig, build_app
from kiln.serving.guards import ArmStats, judge

__all__ = ["DEPLOYMENT", "serve_canary"]

DEPLOYMENT = "fraud-api"
CANARY_PERCENT = 10.0
GUARD = Guard(max_error_rate=0.01, max_p95_ms=250.0, max_psi=0.25, min_requests=30)


@contextmanager
def _server(deployment: str) -> Iterator[str]:
    import uvicorn

    port = free_local_port()
    app = build_app(ServeConfig(deployments=(deployment,), poll_s=0.2))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="kiln-demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _deploy(model: str, service: str) -> None:
    try:
        kiln.deployments.create(DEPLOYMENT, model=model, service=service)
    except Conflict:  # the demo ran before in this home: start from the champion again
        current = kiln.deployments.get(DEPLOYMENT)
        if current.traffic.policy != "single":
            kiln.deployments.rollback(DEPLOYMENT, reason="kiln demo starts over")
        kiln.deployments.update(DEPLOYMENT, model=model, service=service)


def _bodies(rows: pd.DataFrame, request_columns: tuple[str, ...]) -> list[dict[str, Any]]:
    entities = rows[["user_id", "merchant_id"]].to_dict(orient="records")
    request = rows[list(request_columns)].to_dict(orient="records")
    return [
        {"entities": e, "request": r, "request_id": f"demo-{i}"}
        for i, (e, r) in enumerate(zip(entities, request, strict=True))
    ]


def serve_canary(
    console: Console,
    *,
    model_name: str,
    challenger: ModelVersion,
    service: str,
    rows: pd.DataFrame,
    request_columns: tuple[str, ...],
    requests: int = 1_000,
) -> dict[str, Any]:
    """Deploy ``model_name@champion``, canary ``challenger`` at 10%, send traffic, judge."""
    _deploy(f"{model_name}@champion", service)
    sample = rows.sample(n=min(requests, len(rows)), replace=len(rows) < requests, random_state=7)
    bodies = _bodies(sample, request_columns)
    answers: list[tuple[str, int, float, float]] = []  # arm, version, ms, score
    failures = Counter[int]()
    with _server(DEPLOYMENT) as url:
        started = time.time()
        kiln.deployments.canary(
            DEPLOYMENT, model=challenger.ref, percent=CANARY_PERCENT, guard=GUARD,
            reason="kiln demo: the runner-up takes 10% of traffic",
        )  # fmt: skip
        with httpx.Client(base_url=url, timeout=10.0) as http:
            _wait_for_version(http, challenger.version)

            def send(body: dict[str, Any]) -> None:
                start = time.perf_counter()
                r = http.post(f"/deployments/{DEPLOYMENT}/predict", json=body)
                ms = (time.perf_counter() - start) * 1000.0
                if r.status_code != 200:
                    failures[r.status_code] += 1
                    return
                doc = r.json()
                score = float(np.asarray(doc["predictions"], dtype=float).reshape(-1)[-1])
                answers.append((doc["arm"], int(doc["version"]), ms, score))

            with (
                Progress(
                    TextColumn("[progress.description]{task.description:<22}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    console=console,
                ) as progress,
                ThreadPoolExecutor(8) as pool,
            ):
                task = progress.add_task("Sending traffic", total=len(bodies))
                for _ in pool.map(send, bodies):
                    progress.advance(task)
    return _report(console, answers, failures, started, challenger)


def _wait_for_version(http: httpx.Client, version: int, timeout_s: float = 10.0) -> None:
    """Until the server lists ``version`` among the deployment's (it polls for changes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        versions = http.get(f"/v2/models/{DEPLOYMENT}").json().get("versions", [])
        if str(version) in versions:
            return
        time.sleep(0.05)
    raise KilnError(f"the demo server did not pick up the canary within {timeout_s:g} s")


def _report(
    console: Console,
    answers: list[tuple[str, int, float, float]],
    failures: Counter[int],
    started: float,
    challenger: ModelVersion,
) -> dict[str, Any]:
    by_arm: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for arm, version, ms, score in answers:
        by_arm[arm].append((version, ms, score))
    total = max(1, len(answers))
    table = Table(title=f"Traffic on '{DEPLOYMENT}' with a {CANARY_PERCENT:g}% canary")
    for column in ("arm", "version", "requests", "share", "p50 ms", "p95 ms", "mean score"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    stats: dict[str, ArmStats] = {}
    for arm in ("champion", "canary"):
        got = by_arm.get(arm, [])
        arm_stats = ArmStats(seed=7)
        for _, ms, score in got:
            arm_stats.record(ms, predictions=[score])
        stats[arm] = arm_stats
        if not got:
            continue
        latencies = np.array([g[1] for g in got])
        table.add_row(
            arm,
            ", ".join(sorted({str(g[0]) for g in got})),
            f"{len(got):,}",
            f"{len(got) / total:.1%}",
            f"{np.percentile(latencies, 50):.1f}",
            f"{np.percentile(latencies, 95):.1f}",
            f"{np.mean([g[2] for g in got]):.4f}",
        )
    console.print(table)
    if failures:
        console.print(f"[red]Failed requests[/]: {dict(failures)}")
    verdict = judge(GUARD, stats["champion"], stats["canary"], started, time.time())
    since = datetime.fromtimestamp(started - 1.0, UTC)
    server_events = [e for e in kiln.deployments.history(DEPLOYMENT) if e.at >= since]
    kinds = [e.kind for e in server_events]
    colour = {"rollback": "red", "promote": "green"}.get(verdict.action, "yellow")
    console.print(
        f"[bold]Guard verdict[/] for {challenger.ref}: [{colour}]{verdict.action}[/] — "
        + "; ".join(verdict.reasons)
    )
    if "guard_breach" in kinds:
        console.print("The server rolled the canary back on its own: " + kinds[-1])
    else:
        console.print(
            f"The canary keeps {CANARY_PERCENT:g}% of traffic; promote it with "
            f"[cyan]kiln deployments promote {DEPLOYMENT}[/] or end it with "
            f"[cyan]kiln deployments rollback {DEPLOYMENT}[/]"
        )
    return {
        "requests": len(answers),
        "failed": sum(failures.values()),
        "split": {arm: len(v) for arm, v in by_arm.items()},
        "verdict": verdict.action,
        "events": kinds,
    }
