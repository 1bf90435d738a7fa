"""What alerts do: a webhook delivered once to a receiver that was down, refused payloads
given up, a live canary rolled back on a running ``kiln serve``, a retraining flow
started, and ``kiln monitor`` from the command line."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.monitoring import Monitor, Retrain, Rollback, Rule, Webhook, _actions, evaluate, get_event
from kiln.serving.predlog import Prediction, PredictionLog, read_predictions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from _harness import serving

NOW = datetime.now(UTC).replace(microsecond=0)


def rows(n: int, seed: int, amount_mean: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"amount": rng.normal(amount_mean, 20.0, n), "items": rng.integers(1, 6, n)}
    )


def register(seed: int) -> None:
    train = rows(2_000, seed)
    model = LogisticRegression().fit(train, train.amount > 100)
    kiln.models.register("fraud", model, input_example=train[:2], training_data=train)


def serve_shifted(n: int = 1_000) -> None:
    log = PredictionLog(kiln.get_settings().home / "offline" / "predictions", flush_rows=10**6)
    at = NOW - timedelta(minutes=20)
    log.append_many(
        Prediction(
            request_id=f"r{i}",
            deployment="fraud-api",
            model="fraud/1",
            version=1,
            arm="champion",
            features={"amount": float(r.amount), "items": int(r.items)},
            output=0.5,
            latency_ms=1.0,
            at=at + timedelta(milliseconds=i),
        )
        for i, r in enumerate(rows(n, 9, amount_mean=170.0).itertuples())
    )
    log.close()


@pytest.fixture
def shifted() -> None:
    register(1)
    kiln.deployments.create("fraud-api", model="fraud/1")
    serve_shifted()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records every POST; ``status`` answers them."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port = port
        self.status = status
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((dict(self.headers), json.loads(body)))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok" if receiver.status < 400 else b"bad payload")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.stop()


def test_a_webhook_to_a_receiver_that_comes_up_is_delivered_once(
    shifted: None, receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.port}/alerts"
    monitor = Monitor(
        "fraud-api",
        [Rule("psi", feature="amount", above=0.2, actions=[Webhook(url, backoff_s=0.3)])],
    )
    threading.Timer(1.0, receiver.start).start()  # down for the first attempts
    result = evaluate(monitor, now=NOW)
    (event,) = result.opened
    (action,) = get_event(event.id).actions
    assert action.state == "done" and action.attempts >= 2, action
    assert action.result == {"status": 200}
    assert len(receiver.posts) == 1
    headers, payload = receiver.posts[0]
    assert headers["Idempotency-Key"] == f"{event.id}-0"
    assert payload["event_id"] == event.id and payload["feature"] == "amount"
    assert payload["status"] == "firing" and payload["value"] > 0.2

    # Still firing: nothing is sent again.
    evaluate(monitor, now=NOW + timedelta(minutes=1))
    assert len(receiver.posts) == 1


def test_a_webhook_still_down_stays_pending_and_the_next_call_delivers_it(
    shifted: None, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_actions, "WAIT_S", 0.0)  # a cron run does not wait for retries
    url = f"http://127.0.0.1:{receiver.port}/alerts"
    monitor = Monitor(
        "fraud-api",
        [Rule("psi", feature="amount", above=0.2, actions=[Webhook(url, backoff_s=0.2)])],
    )
    (event,) = evaluate(monitor, now=NOW).opened
    (action,) = get_event(event.id).actions
    assert action.state == "pending" and action.attempts == 1
    assert "ConnectError" in action.result["error"]  # type: ignore[index]
    receiver.start()
    time.sleep(0.3)
    assert kiln.monitoring.run_pending() == 1
    assert get_event(event.id).actions[0].state == "done"
    assert kiln.monitoring.run_pending() == 0
    assert len(receiver.posts) == 1


def test_a_refused_payload_is_given_up_at_once_and_attempts_are_bounded(
    shifted: None, receiver: Receiver
) -> None:
    receiver.status = 400
    receiver.start()
    down = f"http://127.0.0.1:{free_port()}/never"
    monitor = Monitor(
        "fraud-api",
        [
            Rule(
                "psi",
                feature="amount",
                above=0.2,
                actions=[
                    Webhook(f"http://127.0.0.1:{receiver.port}/x"),
                    Webhook(down, attempts=3, backoff_s=0.1),
                ],
            )
        ],
    )
    (event,) = evaluate(monitor, now=NOW).opened
    refused, unreachable = get_event(event.id).actions
    assert refused.state == "failed" and refused.attempts == 1
    assert "HTTP 400" in refused.result["error"]  # type: ignore[index]
    assert unreachable.state == "failed" and unreachable.attempts == 3
    assert len(receiver.posts) == 1


def test_an_alert_starts_a_retraining_flow(
    shifted: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "retraining.py").write_text(
        "import kiln\n\n"
        "@kiln.step\n"
        "def fit(days: int, marker: str) -> int:\n"
        "    open(marker, 'w').write(str(days))\n"
        "    return days\n\n"
        "@kiln.flow\n"
        "def retrain(days: int, marker: str) -> int:\n"
        "    return fit(days, marker)\n",
        encoding="utf-8",
    )
    marker = tmp_path / "trained"
    monkeypatch.chdir(work)
    action = Retrain(
        "retraining:retrain", params={"days": 7, "marker": str(marker)}, executor="inline"
    )
    monitor = Monitor("fraud-api", [Rule("psi", feature="amount", above=0.2, actions=[action])])
    (event,) = evaluate(monitor, now=NOW).opened
    (done,) = get_event(event.id).actions
    assert done.state == "done" and done.result is not None
    assert done.result["flow"] == "retraining:retrain" and done.result["pid"] > 0
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.read_text() == "7", Path(done.result["log"]).read_text()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = kiln.flows.list_runs()
        if runs and runs[0].status == "finished":
            break
        time.sleep(0.2)
    assert [r.flow for r in runs] == ["retrain"] and runs[0].status == "finished"


def test_a_flow_that_does_not_load_fails_the_action_by_name(shifted: None) -> None:
    monitor = Monitor(
        "fraud-api",
        [Rule("psi", feature="amount", above=0.2, actions=[Retrain("no_such_module:flow")])],
    )
    (event,) = evaluate(monitor, now=NOW).opened
    (action,) = get_event(event.id).actions
    assert action.state == "failed"
    assert "no_such_module" in action.result["error"]  # type: ignore[index]


def test_an_alert_rolls_back_a_live_canary_on_a_running_server() -> None:
    register(1)
    register(2)
    kiln.deployments.create("fraud-api", model="fraud/1")
    kiln.deployments.canary("fraud-api", model="fraud/2", percent=50)
    shifted = rows(400, 11, amount_mean=175.0)
    data = shifted.values.tolist()
    body = {"dataframe_split": {"columns": ["amount", "items"], "data": data}}
    monitor = Monitor(
        "fraud-api",
        [
            Rule(
                "psi",
                feature="amount",
                above=0.2,
                arm="challenger",
                actions=[Rollback(), "log"],
            )
        ],
        window="10m",
    )
    with serving(["fraud-api"]) as server, server.client() as http:
        answered: dict[str, int] = {}
        for i in range(0, 400, 4):
            chunk = {"dataframe_split": {"columns": ["amount", "items"], "data": data[i : i + 4]}}
            r = http.post("/invocations", json=chunk)
            assert r.status_code == 200, r.text
            arm = r.headers["kiln-arm"]
            answered[arm] = answered.get(arm, 0) + 1
        assert set(answered) == {"champion", "canary"}
        deadline = time.monotonic() + 20
        while True:  # the server writes its log every second
            logged = read_predictions(deployment="fraud-api")
            if logged.num_rows == 400 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert logged.num_rows == 400
        result = evaluate(monitor)
        (event,) = result.opened
        assert event.arm == "canary" and event.version == 2
        rollback, logged_action = get_event(event.id).actions
        assert rollback.state == "done" and logged_action.state == "done"
        assert kiln.deployments.get("fraud-api").traffic.policy == "single"
        (last,) = kiln.deployments.history("fraud-api")[-1:]
        assert last.kind == "rolled_back" and last.actor == "kiln monitor"
        assert event.id in last.reason
        # The running server follows: every answer comes from the champion again.
        deadline = time.monotonic() + 10
        while True:
            arms = {http.post("/invocations", json=body).headers["kiln-arm"] for _ in range(10)}
            if arms == {"champion"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert arms == {"champion"}


def test_the_cli_runs_monitors_once_and_lists_events(
    shifted: None, tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    from kiln.cli import main

    def cli(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    receiver.start()
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[[monitor]]
deployment = "fraud-api"
window = "1h"

[[monitor.rule]]
metric = "psi"
feature = "*"
above = 0.2
actions = ["log", {{ webhook = "http://127.0.0.1:{receiver.port}/hook" }}]
""",
        encoding="utf-8",
    )
    code, out, err = cli("monitor", "run", str(config), "--json")
    assert code == 0, err
    (evaluation,) = json.loads(out)["evaluations"]
    assert [e["feature"] for e in evaluation["opened"]] == ["amount"]
    assert len(receiver.posts) == 1

    code, out, err = cli("monitor", "run", str(config))
    assert code == 0, err
    assert "firing" in out and "psi[*]>0.2" in out

    code, out, err = cli("monitor", "events", "--deployment", "fraud-api", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(e["feature"], e["status"]) for e in listed] == [("amount", "firing")]
    assert [a["state"] for a in listed[0]["actions"]] == ["done", "done"]

    html = tmp_path / "report.html"
    code, out, err = cli("monitor", "report", "fraud-api", "--window", "1h", "--html", str(html),
                         "--json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["html"] == str(html) and html.read_text().lower().startswith("<!doctype html>")
    assert json.dumps(doc).count('"drifted": true') >= 1
    code, out, err = cli("monitor", "report", "fraud-api", "--window", "1h", "--html", str(html))
    assert code == 0, err
    assert "amount" in out and str(html) in " ".join(out.split())
    code, out, err = cli("monitor", "report", "nowhere", "--window", "1h")
    assert code == 2 and "nowhere" in err

    code, out, err = cli("monitor", "run", str(tmp_path / "missing.toml"))
    assert code == 2
    assert "missing.toml" in err and "Traceback" not in err
    code, out, err = cli("monitor", "run", str(config), "--deployment", "other")
    assert code == 2 and "--deployment other: not monitored" in err


def test_monitor_serve_exports_metrics_and_says_where_it_listens(
    shifted: None, tmp_path: Path
) -> None:
    import os
    import subprocess

    config = tmp_path / "monitor.toml"
    config.write_text(
        '[[monitor]]\ndeployment = "fraud-api"\nwindow = "1h"\nevery = "1s"\n'
        '[[monitor.rule]]\nmetric = "psi"\nfeature = "*"\nabove = 0.2\n',
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "kiln", "monitor", "serve", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "metrics on http://127.0.0.1:" in line, line
        url = line.strip().split(" on ")[1].split()[0]
        deadline = time.monotonic() + 30
        while True:
            text = httpx.get(url, timeout=5).text
            if 'alerts_firing{deployment="fraud-api",rule="psi[*]>0.2"} 1.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.3)
        assert (
            'kiln_monitor_value{arm="champion",deployment="fraud-api",feature="amount",'
            'metric="psi",version="1"}'
        ) in text
        assert 'kiln_monitor_evaluations_total{deployment="fraud-api",outcome="ok"}' in text
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0
