"""Schemathesis against a running ``kiln serve``, driven by the server's own /openapi.json.

Valid and invalid requests (``--mode all``: the coverage phase's boundary and negative
cases, then fuzzing) for every operation of two deployments, one with a fallback. No
answer may be a 5xx, every answer must match the status codes, content types and
schemas the document declares, and every 4xx must be ``{"error": "..."}``.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
from _harness import register_controlled, register_linear, serving

import kiln
from kiln.serving import Fallback

# A custom check, loaded by the schemathesis process through SCHEMATHESIS_HOOKS; it also
# writes every status it sees, so the test can tell that invalid inputs reached the server.
HOOKS = textwrap.dedent(
    '''
    import os

    import schemathesis

    @schemathesis.check
    def error_is_json(ctx, response, case):
        """Every 4xx answer is a JSON object with an "error" string (MLflow's
        {"error_code", "message"} on /invocations)."""
        status = response.status_code
        with open(os.environ["KILN_TEST_STATUSES"], "a") as fh:
            fh.write(f"{status}\\n")
        if 400 <= status < 500:
            try:
                doc = response.json()
            except Exception as exc:
                raise AssertionError(f"{status} is not JSON: {response.text[:200]!r}") from exc
            key = "message" if case.path == "/invocations" else "error"
            if not isinstance(doc, dict) or not isinstance(doc.get(key), str):
                raise AssertionError(f"{status} has no {key!r} string: {response.text[:200]!r}")
            if key == "message" and not isinstance(doc.get("error_code"), str):
                raise AssertionError(f"{status} has no MLflow error_code: {response.text[:200]!r}")
    '''
)

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "error_is_json",
)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    # fraud-api: a logistic regression, answered by a constant while it fails (a null
    # float reaches it as NaN, which it refuses); risk-api: a plain model, no fallback.
    register_linear("fraud")
    register_controlled("risk", 1.0, tmp_path / "flags")
    kiln.deployments.create("fraud-api", model="fraud/1", fallback=Fallback(value=0.0))
    kiln.deployments.create("risk-api", model="risk/1", max_body_bytes=64 * 1024)
    hooks = tmp_path / "st_hooks.py"
    hooks.write_text(HOOKS)
    statuses = tmp_path / "statuses.txt"
    reports = tmp_path / "reports"
    with serving(["fraud-api", "risk-api"], args=["--default", "fraud-api"]) as server:
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--max-time",
            "12",
            "--request-timeout",
            "5",
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--workers",
            "2",
            "--no-color",
            "--report",
            "json",
            "--report-dir",
            str(reports),
        ]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": str(hooks), "KILN_TEST_STATUSES": str(statuses)}
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
        alive = server.process.poll() is None
    assert run.returncode == 0, f"{run.stdout[-12000:]}\n{run.stderr[-3000:]}"
    assert alive, server.output()[-3000:]
    report = orjson.loads(next(reports.glob("*.json")).read_bytes())
    assert report["operations"]["tested"] == report["operations"]["total"] >= 17, report
    assert report["operations"]["errored"] == 0, report
    assert report["phases"]["coverage"]["status"] == "success", report["phases"]
    assert report["test_cases"]["generated"] >= 300, report["test_cases"]
    seen = collections.Counter(int(s) for s in statuses.read_text().split())
    assert not [s for s in seen if s >= 500], seen
    # Both valid and invalid inputs reached the server.
    assert seen[200] > 0 and seen[400] > 0 and seen[404] > 0, seen
