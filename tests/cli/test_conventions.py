"""Conventions every ``kiln`` command keeps, checked over the whole command tree.

``-h`` is ``--help`` everywhere; a short flag means one long option wherever it appears
(and docs/cli.md lists them); every command that prints a result takes ``--json`` and
prints valid JSON; usage errors are one line; the runs list default is the SDK's; a
dtype Kiln does not know is shown as unknown.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.cli import app, main

ROOT = Path(__file__).resolve().parents[2]
# Commands that print no result to script against: the demo narrates, serve serves.
NO_RESULT = {("demo",), ("serve",), ("ui",)}


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every group and command under ``command`` with its path (the root is ``()``)."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


TREE = list(walk(typer.main.get_command(app)))
COMMANDS = [(path, c) for path, c in TREE if not hasattr(c, "commands")]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def option_names(command: Any) -> list[tuple[list[str], list[str]]]:
    """(short flags, long flags) of each option a command declares (help excluded)."""
    found = []
    for param in command.params:
        if param.param_type_name != "option":
            continue
        flags = [*param.opts, *param.secondary_opts]
        found.append(
            ([f for f in flags if not f.startswith("--")], [f for f in flags if f.startswith("--")])
        )
    return found


# -- -h -------------------------------------------------------------------------------------


def test_the_tree_is_the_one_the_docs_describe() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"deploy", "deployments create", "runs list", "models delete", "serve"} <= paths
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("path", [p for p, _ in TREE], ids=lambda p: " ".join(p) or "kiln")
def test_dash_h_is_help_everywhere(capsys: pytest.CaptureFixture[str], path: tuple[str]) -> None:
    code, short, err = run_cli(capsys, *path, "-h")
    assert (code, err) == (0, "")
    assert "Usage: kiln" in short
    code, long, err = run_cli(capsys, *path, "--help")
    assert (code, err) == (0, "")
    assert short == long


# -- short flags ----------------------------------------------------------------------------


def short_flag_meanings() -> dict[str, set[tuple[str, ...]]]:
    meanings: dict[str, set[tuple[str, ...]]] = {}
    for _, command in COMMANDS:
        for shorts, longs in option_names(command):
            for short in shorts:
                meanings.setdefault(short, set()).add(tuple(longs))
    return meanings


def test_a_short_flag_means_one_long_option_in_every_command() -> None:
    meanings = short_flag_meanings()
    assert meanings, "no short flags found: the walk is broken"
    clashes = {short: longs for short, longs in meanings.items() if len(longs) != 1}
    assert clashes == {}
    assert "-h" not in meanings  # -h is help, and nothing else, everywhere


def test_the_short_flag_table_in_the_docs_is_complete_and_right() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("## Short flags", 1)[1].split("\n## ", 1)[0]
    documented = dict(re.findall(r"^\| `(-\w)` \| `(--[\w-]+)` \|", section, flags=re.M))
    actual = {short: longs.pop()[0] for short, longs in short_flag_meanings().items()}
    assert documented == {"-h": "--help", **actual}


# -- --json ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [p for p, _ in COMMANDS if p not in NO_RESULT], ids=lambda p: " ".join(p)
)
def test_every_command_that_prints_a_result_takes_json(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    assert any("--json" in longs for _, longs in option_names(command)), " ".join(path)


def test_rename_download_and_db_upgrade_print_what_they_did_as_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    upgraded = ok_json(capsys, "db", "upgrade")
    assert upgraded["action"] == "upgraded" and upgraded["revision"]

    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roc.svg").write_text("<svg/>")
    (tmp_path / "report.html").write_text("<html/>")
    with kiln.start_run(experiment="fraud", name="lgbm") as run:
        run.log_artifact(tmp_path / "report.html")
        run.log_artifacts(tmp_path / "plots", "plots")

    renamed = ok_json(capsys, "experiments", "rename", "fraud", "fraud-v2")
    assert renamed["action"] == "renamed" and renamed["from"] == "fraud"
    assert renamed["experiment"]["name"] == "fraud-v2"
    assert [e["name"] for e in ok_json(capsys, "experiments", "list")] == ["fraud-v2"]

    dst = tmp_path / "out"
    got = ok_json(capsys, "runs", "download", run.id, "plots", "--dst", str(dst))
    assert (got["action"], got["run_id"]) == ("downloaded", run.id)
    assert got["path"] == str(dst / "plots")
    assert [f["path"] for f in got["files"]] == ["plots/roc.svg"]
    assert (dst / "plots" / "roc.svg").read_text() == "<svg/>"
    everything = ok_json(capsys, "runs", "download", run.id, "--dst", str(tmp_path / "all"))
    assert sorted(f["path"] for f in everything["files"]) == ["plots/roc.svg", "report.html"]


def _register_fraud() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(50, 2)), columns=["amount", "age"])
    y = (x["amount"] > 0).astype(int)
    for c in (1.0, 0.1):
        kiln.models.register("fraud", LogisticRegression(C=c).fit(x, y), input_example=x[:5])
    kiln.models.set_alias("fraud", "champion", 1)


def test_deletes_print_what_they_did_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    _register_fraud()
    ok_json(capsys, "deployments", "create", "fraud-api", "--model", "fraud@champion")
    deleted = ok_json(capsys, "deployments", "delete", "fraud-api", "--yes")
    assert deleted["action"] == "deleted"
    assert deleted["deployment"]["name"] == "fraud-api"
    assert deleted["deployment"]["model"] == "fraud@champion"
    assert kiln.deployments.list() == []

    assert ok_json(capsys, "models", "delete", "fraud/2") == {
        "action": "deleted",
        "model": "fraud",
        "version": 2,
    }
    assert [v.version for v in kiln.models.list_versions("fraud")] == [1]
    kiln.models.delete_alias("fraud", "champion")
    assert ok_json(capsys, "models", "delete", "fraud", "--yes") == {
        "action": "deleted",
        "model": "fraud",
        "versions": 1,
    }
    assert kiln.models.list_models() == []


# -- kiln deployments create and its shortcut -----------------------------------------------


def test_deployments_create_and_the_deploy_shortcut_are_one_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register_fraud()
    code, out, err = run_cli(
        capsys, "deployments", "create", "a", "-m", "fraud@champion", "--timeout-ms", "250"
    )
    assert code == 0, err
    assert "a (revision 1): created, serving fraud@champion" in out
    made = ok_json(capsys, "deploy", "b", "--model", "fraud/2", "--max-batch-size", "8")
    assert (made["name"], made["model"], made["revision"]) == ("b", "fraud/2", 1)
    assert made["batching"]["max_batch_size"] == 8
    a, b = kiln.deployments.get("a"), kiln.deployments.get("b")
    assert (a.timeout_ms, b.timeout_ms) == (250.0, 1000.0)  # the SDK's default, not a copy
    sdk = inspect.signature(kiln.deployments.create).parameters
    assert a.max_body_bytes == b.max_body_bytes == sdk["max_body_bytes"].default
    updated = ok_json(capsys, "deployments", "create", "a", "--update", "--timeout-ms", "90")
    assert (updated["timeout_ms"], updated["revision"]) == (90.0, 2)
    shortcut, create = dict(COMMANDS)[("deploy",)], dict(COMMANDS)[("deployments", "create")]
    assert [p.opts for p in shortcut.params] == [p.opts for p in create.params]


# -- --limit --------------------------------------------------------------------------------


def test_runs_list_defaults_to_the_sdk_limit(capsys: pytest.CaptureFixture[str]) -> None:
    sdk_default = inspect.signature(kiln.runs.search).parameters["limit"].default
    assert sdk_default == kiln.runs.DEFAULT_LIMIT
    command = dict(COMMANDS)[("runs", "list")]
    limit = next(p for p in command.params if p.name == "limit")
    assert limit.get_default(typer.Context(command)) == sdk_default

    for i in range(101):  # more than the 100 the command used to stop at
        with kiln.start_run(experiment="many", name=f"r{i}"):
            pass
    assert len(ok_json(capsys, "runs", "list")) == 101
    assert len(ok_json(capsys, "runs", "list", "--limit", "7")) == 7


# -- one-line errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("runs", "list", "--bogus"),
        ("runs", "lst"),
        ("nope",),
        ("runs", "list", "--limit", "many"),
        ("runs", "list", "--limit", "0"),
        ("deployments", "canary", "x"),
        ("runs", "show"),
        ("deploy", "-f", "user_stats:f0"),
    ],
    ids=" ".join,
)
def test_usage_errors_are_one_line_with_status_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("kiln: error: ") and err.count("\n") == 1, err
    assert "Usage:" not in err and "╭" not in err and "Traceback" not in err
    assert "-h'" in err  # names where to read more


def test_a_real_process_reports_a_usage_error_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "models", "show"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "kiln: error: Missing argument 'ref'. (see 'kiln models show -h')\n"


# -- dtypes ---------------------------------------------------------------------------------


class Phase(kiln.models.PythonModel):
    def predict(self, model_input: Any) -> Any:
        return model_input["amount"].to_numpy() * 1j


class Records(kiln.models.PythonModel):
    def predict(self, model_input: Any) -> Any:
        return np.array([{"score": 1.0}] * len(model_input), dtype=object)


@pytest.mark.parametrize(
    ("model", "stored", "shown"),
    [(Phase(), "complex128", "unknown (complex128)"), (Records(), "object", "unknown (object)")],
)
def test_a_dtype_kiln_does_not_know_is_shown_as_unknown(
    capsys: pytest.CaptureFixture[str], model: Any, stored: str, shown: str
) -> None:
    example = pd.DataFrame({"amount": [1.0, 2.0]})
    kiln.models.register("odd", model, input_example=example)
    outputs = ok_json(capsys, "models", "show", "odd")["signature"]["outputs"]
    assert [o["dtype"] for o in outputs] == [stored]  # scripts get the stored name
    code, out, err = run_cli(capsys, "models", "show", "odd")
    assert code == 0, err
    assert shown in out
    assert "string" not in out
    assert re.search(r"amount\s+│\s+float64", out)  # known dtypes as they are
