"""``kiln deploy`` and ``kiln deployments`` on SQLite and PostgreSQL (``KILN_DB_URL``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.cli import main
from kiln.core import reset_settings


@pytest.fixture(autouse=True)
def registry(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """fraud/1, fraud/2 and fraud/3 (which needs a 'risk' field); fraud@champion -> 1."""
    monkeypatch.setenv("KILN_DB_URL", db_url)
    reset_settings()
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(100, 2)), columns=["amount", "age"])
    y = (x["amount"] > 0).astype(int)
    kiln.models.register("fraud", LogisticRegression().fit(x, y), input_example=x[:5])
    kiln.models.register("fraud", LogisticRegression(C=0.1).fit(x, y), input_example=x[:5])
    wider = x.assign(risk=rng.normal(size=100))
    kiln.models.register("fraud", LogisticRegression().fit(wider, y), input_example=wider[:5])
    kiln.models.set_alias("fraud", "champion", 1)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    return out


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """A user mistake: exit status 2 and one line on stderr, no traceback."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("kiln: error: ") and err.count("\n") == 1, err
    return err


def test_deploy_show_list_and_update(capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(
        capsys,
        "deploy",
        "fraud-api",
        "--model",
        "fraud@champion",
        "--max-batch-size",
        "16",
        "--timeout-ms",
        "250",
        "--fallback-value",
        "0.5",
        "--tag",
        "team=risk",
        "--reason",
        "launch",
    )
    assert "fraud-api (revision 1): created, serving fraud@champion" in out
    shown = json.loads(ok(capsys, "deployments", "show", "fraud-api", "--json"))
    assert shown["batching"]["max_batch_size"] == 16
    assert shown["timeout_ms"] == 250.0
    assert shown["fallback"] == {"model": None, "value": 0.5}
    assert shown["tags"] == {"team": "risk"}
    assert shown["request"] == {"amount": "float64", "age": "float64"}
    assert shown["versions"] == {"champion": "fraud/1", "challenger": None}
    assert "fraud@champion -> fraud/1" in ok(capsys, "deployments", "show", "fraud-api")
    listed = json.loads(ok(capsys, "deployments", "list", "--json"))
    assert [d["name"] for d in listed] == ["fraud-api"]
    assert "single: fraud@champion" in ok(capsys, "deployments", "list")

    out = ok(capsys, "deploy", "fraud-api", "--update", "--max-wait-ms", "3", "--timeout-ms", "90")
    assert "revision 2" in out and "batching, timeout_ms" in out
    updated = kiln.deployments.get("fraud-api")
    assert (updated.batching.max_batch_size, updated.batching.max_wait_ms) == (16, 3.0)
    assert updated.timeout_ms == 90.0
    out = ok(
        capsys,
        "deploy",
        "fraud-api",
        "--update",
        "--request-field",
        "amount:float64",
        "--request-field",
        "age:float64",
        "--request-field",
        "risk:float64",
        "--json",
    )
    assert json.loads(out)["request"]["risk"] == "float64"


def test_rollout_commands_and_history(capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "deploy", "fraud-api", "--model", "fraud@champion")
    out = ok(
        capsys,
        "deployments",
        "canary",
        "fraud-api",
        "--model",
        "fraud/2",
        "--percent",
        "10",
        "--sticky-key",
        "age",
        "--max-p95-ms",
        "20",
        "--min-requests",
        "50",
        "--auto-promote",
    )
    assert "canary: 10% to fraud/2, sticky on age" in out
    guard = kiln.deployments.get("fraud-api").traffic.guard
    assert guard is not None and (guard.max_p95_ms, guard.min_requests) == (20.0, 50)
    assert guard.auto_promote is True
    out = ok(capsys, "deployments", "rollback", "fraud-api", "--reason", "too slow")
    assert "rolled back; single: fraud@champion" in out
    ok(capsys, "deployments", "ab", "fraud-api", "--model", "fraud/2", "--sticky-key", "age")
    ok(capsys, "deployments", "rollback", "fraud-api")
    ok(capsys, "deployments", "shadow", "fraud-api", "--model", "fraud/2")
    ok(capsys, "deployments", "rollback", "fraud-api")
    out = ok(capsys, "deployments", "blue-green", "fraud-api", "--model", "fraud/2", "--guard")
    assert "blue-green: on green (fraud/2)" in out
    assert kiln.deployments.get("fraud-api").traffic.guard == kiln.deployments.Guard()
    assert "on blue" in ok(capsys, "deployments", "switch-back", "fraud-api")
    out = ok(capsys, "deployments", "promote", "fraud-api", "--reason", "green is fine", "--json")
    assert json.loads(out)["model"] == "fraud@champion"
    assert kiln.models.resolve("fraud@champion").version == 2

    history = json.loads(ok(capsys, "deployments", "history", "fraud-api", "--json"))
    assert [e["kind"] for e in history] == [
        "created",
        "canary_started",
        "rolled_back",
        "ab_started",
        "rolled_back",
        "shadow_started",
        "rolled_back",
        "switched",
        "switched_back",
        "promoted",
    ]
    assert history[2]["reason"] == "too slow"
    table = ok(capsys, "deployments", "history", "fraud-api")
    assert "promoted" in table and "green is fine" in table


def test_user_mistakes_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "needs --model" in refused(capsys, "deploy", "fraud-api")
    ok(capsys, "deploy", "fraud-api", "--model", "fraud@champion")
    assert "already exists" in refused(capsys, "deploy", "fraud-api", "--model", "fraud/2")
    err = refused(
        capsys, "deployments", "canary", "fraud-api", "--model", "fraud/3", "--percent", "10"
    )
    assert "missing request field 'risk' (float64)" in err
    err = refused(
        capsys, "deployments", "canary", "fraud-api", "--model", "fraud/2", "--percent", "150"
    )
    assert "'percent' parameter of canary" in err
    assert "did you mean fraud-api" in refused(capsys, "deployments", "show", "fraud-ap")
    assert "no rollout to roll back" in refused(capsys, "deployments", "rollback", "fraud-api")
    assert "pass --yes" in refused(capsys, "deployments", "delete", "fraud-api")
    assert "not both" in refused(
        capsys,
        "deploy",
        "x",
        "--model",
        "fraud/1",
        "--fallback-model",
        "fraud/2",
        "--fallback-value",
        "0",
    )
    assert "must be JSON" in refused(
        capsys, "deploy", "x", "--model", "fraud/1", "--fallback-value", "deny"
    )
    assert "NAME:DTYPE" in refused(
        capsys, "deploy", "x", "--model", "fraud/1", "--request-field", "amount"
    )
    assert "at least one option" in refused(capsys, "deploy", "fraud-api", "--update")
    out = ok(capsys, "deployments", "delete", "fraud-api", "--yes", "--reason", "retired")
    assert "deleted deployment fraud-api" in out
    assert kiln.deployments.list() == []
    history = json.loads(ok(capsys, "deployments", "history", "fraud-api", "--json"))
    assert [e["kind"] for e in history] == ["created", "deleted"]
