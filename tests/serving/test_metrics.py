"""Serving metrics: labelled series in the text format, summed across worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, values
from prometheus_client.parser import text_string_to_metric_families

from kiln.core import ConfigError, InvalidInput
from kiln.serving.metrics import (
    ServingMetrics,
    mark_process_dead,
    prepare_multiproc_dir,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(body: bytes) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_series_carry_deployment_version_and_arm() -> None:
    m = ServingMetrics()
    m.observe_request("fraud-api", 3, "champion", "ok", 0.0007)
    m.observe_request("fraud-api", 3, "champion", "ok", 0.003)
    m.observe_request("fraud-api", 4, "canary", "timeout", 0.2)
    m.observe_error("fraud-api", 4, "exception")
    m.observe_batch("fraud-api", 3, 17)
    m.set_queue_depth("fraud-api", 3, 5)
    m.set_breaker("fraud-api", 4, "open")
    m.set_breaker("fraud-api", 3, "half_open")
    m.count_fallback("fraud-api", 4)
    m.observe_shadow("fraud-api", 5, "ok", 0.004)
    m.count_logged("fraud-api", 3)
    m.set_log_backlog(12)

    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=")
    got = samples(body)
    dv3 = {"deployment": "fraud-api", "version": "3"}
    dv4 = {"deployment": "fraud-api", "version": "4"}
    assert got[key("kiln_serving_requests_total", **dv3, arm="champion", outcome="ok")] == 2
    assert got[key("kiln_serving_requests_total", **dv4, arm="canary", outcome="timeout")] == 1
    assert got[key("kiln_serving_errors_total", **dv4, kind="timeout")] == 1
    assert got[key("kiln_serving_errors_total", **dv4, kind="exception")] == 1
    latency = "kiln_serving_request_duration_seconds_bucket"
    assert got[key(latency, **dv3, arm="champion", le="0.0005")] == 0
    assert got[key(latency, **dv3, arm="champion", le="0.001")] == 1
    assert got[key(latency, **dv3, arm="champion", le="5.0")] == 2
    assert got[key(latency, **dv3, arm="champion", le="+Inf")] == 2
    assert got[key("kiln_serving_batch_size_sum", **dv3)] == 17
    assert got[key("kiln_serving_queue_depth", **dv3)] == 5
    assert got[key("kiln_serving_breaker_state", **dv4)] == 2
    assert got[key("kiln_serving_breaker_state", **dv3)] == 1
    assert got[key("kiln_serving_fallbacks_total", **dv4)] == 1
    shadow = {"deployment": "fraud-api", "version": "5"}
    assert got[key("kiln_serving_shadow_requests_total", **shadow, outcome="ok")] == 1
    assert got[key("kiln_serving_shadow_duration_seconds_count", **shadow)] == 1
    assert got[key("kiln_serving_prediction_log_rows_total", deployment="fraud-api")] == 3
    assert got[key("kiln_serving_prediction_log_backlog")] == 12


def test_each_server_has_its_own_registry() -> None:
    a, b = ServingMetrics(), ServingMetrics()
    a.observe_request("x", 1, "champion", "ok", 0.01)
    assert key("kiln_serving_requests_total", deployment="x", version="1", arm="champion",
               outcome="ok") in samples(a.render()[0])  # fmt: skip
    assert b'deployment="x"' not in b.render()[0]
    assert REGISTRY.get_sample_value("kiln_serving_requests_total") is None


def test_unknown_outcome_and_breaker_state_are_refused() -> None:
    m = ServingMetrics()
    with pytest.raises(InvalidInput, match="unknown outcome 'okay'; known: ok, fallback"):
        m.observe_request("x", 1, "champion", "okay", 0.01)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown breaker state 'shut'"):
        m.set_breaker("x", 1, "shut")  # type: ignore[arg-type]


WORKER = """
import os, sys
from kiln.serving.metrics import ServingMetrics

m = ServingMetrics(multiproc_dir=sys.argv[1])
n, depth, breaker = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for _ in range(n):
    m.observe_request("fraud-api", 3, "champion", "ok", 0.002)
m.observe_batch("fraud-api", 3, n)
m.set_queue_depth("fraud-api", 3, depth)
m.set_breaker("fraud-api", 3, breaker)
print(os.getpid())
"""


def start_worker(
    directory: Path, n: int, depth: int, breaker: str, *, env_set: bool
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if env_set:  # as `kiln serve --workers` starts them: the variable set before import
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(directory), str(n), str(depth), breaker],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def pid_of(worker: subprocess.Popen[str]) -> int:
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0
    return int(out)


def test_workers_in_separate_processes_are_summed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = prepare_multiproc_dir(tmp_path / "prom")
    (directory / "counter_999999.db").write_bytes(b"stale")  # from an earlier server
    directory = prepare_multiproc_dir(directory)
    assert list(directory.iterdir()) == []

    # Two workers at once, one started with the variable set, one given only the directory.
    workers = [
        start_worker(directory, 3, 2, "closed", env_set=True),
        start_worker(directory, 4, 5, "open", env_set=False),
    ]
    pid_a, pid_b = (pid_of(w) for w in workers)

    # Rendering in this process switches it to multiprocess mode: undo that afterwards.
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    parent = ServingMetrics(multiproc_dir=directory)
    dv = {"deployment": "fraud-api", "version": "3"}
    got = samples(parent.render()[0])
    assert got[key("kiln_serving_requests_total", **dv, arm="champion", outcome="ok")] == 7
    latency = "kiln_serving_request_duration_seconds_bucket"
    assert got[key(latency, **dv, arm="champion", le="0.0025")] == 7
    assert got[key("kiln_serving_batch_size_count", **dv)] == 2
    assert got[key("kiln_serving_batch_size_sum", **dv)] == 7
    assert got[key("kiln_serving_queue_depth", **dv)] == 7  # livesum
    assert got[key("kiln_serving_breaker_state", **dv)] == 2  # livemax

    mark_process_dead(pid_b, directory)
    got = samples(parent.render()[0])
    assert got[key("kiln_serving_requests_total", **dv, arm="champion", outcome="ok")] == 7
    assert got[key("kiln_serving_queue_depth", **dv)] == 2
    assert got[key("kiln_serving_breaker_state", **dv)] == 0
    mark_process_dead(pid_a, directory)
    assert key("kiln_serving_queue_depth", **dv) not in samples(parent.render()[0])

    with pytest.raises(ConfigError, match="pass multiproc_dir"):
        ServingMetrics()
    with pytest.raises(ConfigError, match="one directory only"):
        ServingMetrics(multiproc_dir=tmp_path)


def test_multiproc_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        ServingMetrics(multiproc_dir=tmp_path / "absent")


def test_latencies_observed_together_render_as_observed_one_by_one() -> None:
    """A batch's latencies go into the histogram in one call, bucket by bucket."""
    import numpy as np

    seconds = np.array([0.0001, 0.0005, 0.0007, 0.001, 0.004, 0.3, 7.0, 0.0005])
    one, many = ServingMetrics(), ServingMetrics()
    for s in seconds:
        one.observe_request("fraud-api", "fraud/3", "champion", "ok", float(s))
    many.observe_answered("fraud-api", "fraud/3", "champion", seconds[:5])
    many.observe_answered("fraud-api", "fraud/3", "champion", seconds[5:])
    many.observe_answered("fraud-api", "fraud/3", "champion", seconds[:0])
    got, want = samples(many.render()[0]), samples(one.render()[0])
    assert got == pytest.approx(want)
    labels = {"deployment": "fraud-api", "version": "fraud/3", "arm": "champion"}
    assert got[key("kiln_serving_request_duration_seconds_count", **labels)] == 8
    assert got[key("kiln_serving_requests_total", **labels, outcome="ok")] == 8
