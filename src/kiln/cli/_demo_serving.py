"""The demo's deployment step: serve the champion, canary a challenger at 10%, judge it.

The server is ``kiln serve``, started as its own process on 127.0.0.1 (the command users
run), so the demo's client and the server share nothing but HTTP and the store. Traffic
goes to the native endpoint, which looks up the fraud features online for each
transaction's user and merchant. The latencies and scores shown are the server's own,
read back from its prediction log once it has stopped; the verdict is the guard's over
those same numbers, and the server's own guard acts on them while the traffic runs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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
from kiln.serving import Guard
from kiln.serving.guards import ArmStats, judge, psi
from kiln.serving.predlog import read_predictions

__all__ = [
    "CANARY_PERCENT",
    "DEPLOYMENT",
    "CanaryReport",
    "bodies_of",
    "canary_guard",
    "kiln_serve",
    "send",
    "serve_canary",
    "wait_logged",
]

DEPLOYMENT = "fraud-api"
CANARY_PERCENT = 10.0
WARM_UP_REQUESTS = 200
LATENCY_FACTOR = 3.0
LATENCY_FLOOR_MS = 250.0
"""The canary's p95 may be :data:`LATENCY_FACTOR` times the champion's, measured on the same
server just before the canary starts, and never less than this objective, one a fraud API
would set: the comparison is of the two models under the same load, and a scheduling stall
of some tens of ms on a shared laptop (a p95 over about a hundred requests is one slow
request in twenty) is not the model's doing."""
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
_SETTINGS_ENV = {
    "home": "KILN_HOME",
    "db_url": "KILN_DB_URL",
    "artifact_uri": "KILN_ARTIFACT_URI",
    "online_url": "KILN_ONLINE_URL",
    "offline_dir": "KILN_OFFLINE_DIR",
    "s3_endpoint_url": "KILN_S3_ENDPOINT_URL",
    "heartbeat_timeout_s": "KILN_HEARTBEAT_TIMEOUT_S",
    "metric_flush_interval_s": "KILN_METRIC_FLUSH_INTERVAL_S",
}


@dataclass(frozen=True, kw_only=True)
class CanaryReport:
    """What the canary did, as the server logged it, and what the guard made of it."""

    url: str
    requests: int
    """Requests the client sent: the champion's warm-up, then the canary's traffic."""
    failed: int
    """Requests not answered with 200."""
    split: Mapping[str, int]
    """Requests the server answered while the canary ran, by arm (``champion``, ``canary``)."""
    verdict: str
    reasons: tuple[str, ...]
    events: tuple[str, ...]
    """The deployment's history since the canary started (``canary_started``, ...)."""
    offline_psi: float
    """The shift of the challenger's validation scores against the champion's."""
    champion_p95_ms: float
    """The champion's p95 on the server over the warm-up, alone on the deployment."""
    guard: Guard


# -- kiln serve as a child process -------------------------------------------------------------


def _server_env() -> dict[str, str]:
    """This process's settings as the ``KILN_*`` variables the server resolves its own from.

    Settings given in code (``kiln.configure``) are not in the environment otherwise.
    """
    env = dict(os.environ)
    settings = kiln.get_settings()
    for name, variable in _SETTINGS_ENV.items():
        value = getattr(settings, name)
        if value is None or value == "":
            env.pop(variable, None)
        else:
            env[variable] = str(value)
    return env


@contextmanager
def kiln_serve(
    deployments: Sequence[str], *, log: Path, ready_timeout_s: float = READY_TIMEOUT_S
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``kiln serve`` on 127.0.0.1 and a free port until the block ends, however it ends.

    Yields the server's URL and process once ``/v2/health/ready`` answers 200. The server's
    output goes to ``log``. At the end the server gets SIGTERM (it drains and flushes its
    prediction log), and is killed if it has not exited after :data:`STOP_TIMEOUT_S`.
    """
    port = free_local_port()
    command = [
        sys.executable,
        "-m",
        "kiln",
        "serve",
        *deployments,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--poll",
        "0.2",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=_server_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, log, ready_timeout_s)
        yield url, process
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise KilnError(
                f"kiln serve exited with status {process.returncode} before it was ready: "
                f"{_last_line(log)} (full output in {log})"
            )
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise KilnError(
                f"kiln serve was not ready after {timeout_s:g} s: {_last_line(log)} "
                f"(full output in {log})"
            )
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1] if lines else "no output"


# -- the canary ------------------------------------------------------------------------------


def _deploy(model: str, service: str) -> None:
    try:
        kiln.deployments.create(DEPLOYMENT, model=model, service=service)
    except Conflict:  # the demo ran before in this home: start from the champion again
        current = kiln.deployments.get(DEPLOYMENT)
        if current.traffic.policy != "single":
            kiln.deployments.rollback(DEPLOYMENT, reason="kiln demo starts over")
        kiln.deployments.update(DEPLOYMENT, model=model, service=service)


def bodies_of(
    rows: pd.DataFrame, request_columns: tuple[str, ...], prefix: str
) -> list[dict[str, Any]]:
    entities = rows[["user_id", "merchant_id"]].to_dict(orient="records")
    request = rows[list(request_columns)].to_dict(orient="records")
    return [
        {"entities": e, "request": r, "request_id": f"{prefix}-{i}"}
        for i, (e, r) in enumerate(zip(entities, request, strict=True))
    ]


def _offline_shift(model_name: str, challenger: ModelVersion, x: pd.DataFrame) -> float:
    """PSI of the challenger's scores against the champion's on the same validation rows."""
    champion = kiln.models.load(f"{model_name}@champion").predict(x)
    other = kiln.models.load(challenger.ref).predict(x)
    return psi(np.asarray(champion)[:, -1], np.asarray(other)[:, -1])


def serve_canary(
    console: Console,
    *,
    model_name: str,
    challenger: ModelVersion,
    service: str,
    rows: pd.DataFrame,
    request_columns: tuple[str, ...],
    features: tuple[str, ...],
    requests: int = 1_000,
) -> CanaryReport:
    """Deploy ``model_name@champion``, canary ``challenger`` at 10%, send traffic, judge."""
    _deploy(f"{model_name}@champion", service)
    offline_psi = _offline_shift(model_name, challenger, rows[list(features)])
    total = requests + WARM_UP_REQUESTS
    sample = rows.sample(n=total, replace=len(rows) < total, random_state=7)
    warm_up = bodies_of(sample[:WARM_UP_REQUESTS], request_columns, "demo-warm-up")
    bodies = bodies_of(sample[WARM_UP_REQUESTS:], request_columns, "demo")
    log = kiln.get_settings().home / "demo" / "serve.log"
    with ExitStack() as server:
        with console.status("Starting kiln serve..."):
            url, process = server.enter_context(kiln_serve([DEPLOYMENT], log=log))
        console.print(
            f"[bold]Serving[/] {DEPLOYMENT} with [cyan]kiln serve[/] at {url} "
            f"(process {process.pid}; its output: {log})",
            soft_wrap=True,
        )
        warm_started = datetime.now(UTC)
        failures, _ = send(console, url, warm_up, "Champion alone")
        champion_p95 = _logged_p95(warm_started, len(warm_up) - sum(failures.values()))
        guard = canary_guard(champion_p95)
        console.print(_guard_line(challenger, guard, champion_p95, offline_psi), soft_wrap=True)
        started = datetime.now(UTC)
        deployment = kiln.deployments.canary(
            DEPLOYMENT, model=challenger.ref, percent=CANARY_PERCENT, guard=guard,
            reason="kiln demo: the runner-up takes 10% of traffic",
        )  # fmt: skip
        canary_failures, client_ms = send(
            console, url, bodies, "Sending traffic", version=challenger.version
        )
        failures.update(canary_failures)
        with console.status("Stopping kiln serve (it flushes its prediction log)..."):
            server.close()
    return _report(
        console,
        url=url,
        sent=len(warm_up) + len(bodies),
        failures=failures,
        client_ms=client_ms,
        started=started,
        revision=deployment.revision,
        challenger=challenger,
        guard=guard,
        champion_p95_ms=champion_p95,
        offline_psi=offline_psi,
    )


def canary_guard(champion_p95_ms: float) -> Guard:
    """The guard for the demo's canary, given the champion's p95 on this server.

    It judges what makes a challenger unfit to serve: failed requests (a healthy model
    fails none; client mistakes never count) and a p95, measured by the server, well beyond
    the champion's under the same load. The shift of its scores against the champion's
    (PSI) is left out on purpose: the challenger is another model, whose scores differ from
    the champion's by design, so that shift would fail every healthy canary.
    """
    limit = max(LATENCY_FLOOR_MS, math.ceil(LATENCY_FACTOR * champion_p95_ms))
    return Guard(max_error_rate=0.01, max_p95_ms=float(limit), max_psi=None, min_requests=50)


def _logged_p95(since: datetime, answered: int) -> float:
    """The p95 of the server's own latencies since ``since``, once its log has them all."""
    latency = wait_logged(since, answered)["latency_ms"].to_numpy()
    return float(np.percentile(latency, 95))


def wait_logged(since: datetime, answered: int, timeout_s: float = 15.0) -> Any:
    """The server's prediction log since ``since``, once it holds ``answered`` answers
    (the server writes it every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        table = read_predictions(deployment=DEPLOYMENT, since=since)
        if table.num_rows >= answered:
            return table
        if time.monotonic() > deadline:
            raise KilnError(
                f"the server logged {table.num_rows} of the {answered} answers it gave in "
                f"{timeout_s:g} s; its prediction log is what the demo reads back"
            )
        time.sleep(0.2)


def send(
    console: Console,
    url: str,
    bodies: list[dict[str, Any]],
    description: str,
    *,
    version: int | None = None,
) -> tuple[Counter[str], list[float]]:
    """Post every body from 8 threads (once the server serves ``version``, if given).

    Returns the failed requests by HTTP status (or the error of a request that got no
    answer: a server gone mid-traffic is reported like any failure), and round-trip ms.
    """
    failures = Counter[str]()
    client_ms: list[float] = []
    with httpx.Client(base_url=url, timeout=10.0) as http:
        if version is not None:
            _wait_for_version(http, version)

        def send(body: dict[str, Any]) -> None:
            start = time.perf_counter()
            try:
                r = http.post(f"/deployments/{DEPLOYMENT}/predict", json=body)
            except httpx.TransportError as exc:
                failures[type(exc).__name__] += 1
                return
            client_ms.append((time.perf_counter() - start) * 1000.0)
            if r.status_code != 200:
                failures[str(r.status_code)] += 1

        pool = ThreadPoolExecutor(8)
        try:
            with Progress(
                TextColumn("[progress.description]{task.description:<22}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
            ) as progress:
                task = progress.add_task(description, total=len(bodies))
                for _ in pool.map(send, bodies):
                    progress.advance(task)
        finally:  # on Ctrl-C, requests not yet sent are dropped rather than awaited
            pool.shutdown(wait=True, cancel_futures=True)
    return failures, client_ms


def _guard_line(
    challenger: ModelVersion, guard: Guard, champion_p95_ms: float, offline_psi: float
) -> str:
    return (
        f"[bold]Guard[/] on the {CANARY_PERCENT:g}% canary {challenger.ref}, from its "
        f"{guard.min_requests}th request: error rate <= {guard.max_error_rate:.0%}, and p95 "
        f"latency on the server <= {guard.max_p95_ms:g} ms ({LATENCY_FACTOR:g}x the "
        f"champion's {champion_p95_ms:.1f} ms over {WARM_UP_REQUESTS} requests just now, at "
        f"least {LATENCY_FLOOR_MS:g} ms). Score shift (PSI) is not judged: the canary is "
        f"another model, and on the validation rows its scores already shift by PSI "
        f"{offline_psi:.2f} from the champion's, which says the models differ, not that one "
        "is broken."
    )


def _wait_for_version(http: httpx.Client, version: int, timeout_s: float = 10.0) -> None:
    """Until the server lists ``version`` among the deployment's (it polls for changes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            versions = http.get(f"/v2/models/{DEPLOYMENT}").json().get("versions", [])
        except httpx.TransportError as exc:
            raise KilnError(f"kiln serve stopped answering at {http.base_url}: {exc}") from None
        if str(version) in versions:
            return
        time.sleep(0.05)
    raise KilnError(f"kiln serve did not pick up the canary within {timeout_s:g} s")


@dataclass(frozen=True)
class _Served:
    """One arm's answers as the server logged them."""

    versions: tuple[int, ...]
    latency_ms: np.ndarray
    scores: np.ndarray
    fallback: np.ndarray
    """Per request: a fallback answered, so the model itself failed."""

    def stats(self) -> ArmStats:
        """What the server's guard recorded for this arm, rebuilt from its log."""
        out = ArmStats(seed=7)
        rows = zip(
            self.latency_ms.tolist(), self.fallback.tolist(), self.scores.tolist(), strict=True
        )
        for ms, failed, score in rows:
            out.record(ms, error=failed, predictions=[score])
        return out


def _served(since: datetime) -> dict[str, _Served]:
    """The server's prediction log of this canary, by arm."""
    table = read_predictions(deployment=DEPLOYMENT, since=since)
    outputs = [name for name in table.column_names if name.startswith("output")]
    if not table.num_rows or not outputs:
        return {}
    arms = np.asarray(table["arm"].to_numpy(zero_copy_only=False), dtype=object)
    versions = table["version"].to_numpy()
    latency = table["latency_ms"].to_numpy()
    scores = table[outputs[-1]].to_numpy(zero_copy_only=False).astype(np.float64)
    fallback = table["fallback"].to_numpy(zero_copy_only=False).astype(bool)
    out = {}
    for arm in sorted(set(arms.tolist())):
        mask = arms == arm
        out[arm] = _Served(
            versions=tuple(sorted(set(versions[mask].tolist()))),
            latency_ms=latency[mask],
            scores=scores[mask],
            fallback=fallback[mask],
        )
    return out


def _report(
    console: Console,
    *,
    url: str,
    sent: int,
    failures: Counter[str],
    client_ms: list[float],
    started: datetime,
    revision: int,
    challenger: ModelVersion,
    guard: Guard,
    champion_p95_ms: float,
    offline_psi: float,
) -> CanaryReport:
    served = _served(started)
    total = max(1, sum(len(s.latency_ms) for s in served.values()))
    table = Table(
        title=f"Traffic on '{DEPLOYMENT}' with a {CANARY_PERCENT:g}% canary, as the server "
        "logged it",
        title_justify="left",
    )
    for column in ("arm", "version", "requests", "share", "p50 ms", "p95 ms", "mean score"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in ("champion", "canary"):
        got = served.get(arm)
        if got is None:
            continue
        table.add_row(
            arm,
            ", ".join(str(v) for v in got.versions),
            f"{len(got.latency_ms):,}",
            f"{len(got.latency_ms) / total:.1%}",
            f"{np.percentile(got.latency_ms, 50):.2f}",
            f"{np.percentile(got.latency_ms, 95):.2f}",
            f"{np.nanmean(got.scores):.4f}",
        )
    table.caption = (
        "ms: each request's time with the model on the server (batch queue and predict), "
        f"from its prediction log; the client's round trip over HTTP had p50 "
        f"{np.percentile(client_ms, 50):.1f} ms"
        if client_ms
        else None
    )
    table.caption_justify = "left"
    console.print(table)
    failed = sum(failures.values())
    if failed:
        console.print(f"[red]Failed requests[/]: {dict(failures)}")
    else:
        console.print(f"Failed requests: 0 of {sent:,}")
    empty = ArmStats()
    verdict = judge(
        guard,
        served["champion"].stats() if "champion" in served else empty,
        served["canary"].stats() if "canary" in served else empty,
        started.timestamp(),
        time.time(),
    )
    events = [e for e in kiln.deployments.history(DEPLOYMENT) if e.revision >= revision]
    colour = {"rollback": "red", "pass": "green", "promote": "green"}.get(verdict.action, "yellow")
    console.print(
        f"[bold]Guard verdict[/] for {challenger.ref}: [{colour}]{verdict.action}[/] — "
        + "; ".join(verdict.reasons),
        soft_wrap=True,
    )
    breach = next((e for e in events if e.kind == "guard_breach"), None)
    if breach is not None:
        console.print(
            f"The server's guard rolled the canary back while traffic ran: {breach.reason}",
            soft_wrap=True,
        )
    else:
        console.print(
            f"The canary keeps {CANARY_PERCENT:g}% of traffic; promote it with "
            f"[cyan]kiln deployments promote {DEPLOYMENT}[/] or end it with "
            f"[cyan]kiln deployments rollback {DEPLOYMENT}[/]",
            soft_wrap=True,
        )
    return CanaryReport(
        url=url,
        requests=sent,
        failed=failed,
        split={arm: len(s.latency_ms) for arm, s in served.items()},
        verdict=verdict.action,
        reasons=verdict.reasons,
        events=tuple(e.kind for e in events),
        offline_psi=offline_psi,
        champion_p95_ms=champion_p95_ms,
        guard=guard,
    )
