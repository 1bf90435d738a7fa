"""``kiln models`` over models registered with the SDK, under each test's own KILN_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.cli import main


@dataclass(frozen=True)
class Registry:
    v1_run: str
    v2_run: str
    sweep_run: str
    v1_files: dict[str, str]


@pytest.fixture
def registry() -> Registry:
    """fraud/1 and fraud/2 from tracked runs (fraud/2 under a sweep), churn/1 from no run."""
    rng = np.random.default_rng(7)
    X = pd.DataFrame({"amount": rng.normal(size=300), "hour": rng.integers(0, 24, size=300)})
    y = ((X["amount"] + rng.normal(scale=0.3, size=300)) > 0).astype(int)

    with kiln.start_run("fraud-exp", name="logreg-c1") as run:
        run.log_params({"C": 1.0, "penalty": "l2"})
        run.log_metric("val_auc", 0.81)
        run.log_input("dataset", "ds-1", name="train")
        model = LogisticRegression(C=1.0).fit(X, y)
        v1 = kiln.models.register("fraud", model, input_example=X[:5], run=run)
    v1_run = run.id

    with (
        kiln.start_run("fraud-exp", name="sweep") as sweep,
        kiln.start_run(name="logreg-c0.1") as run,
    ):
        run.log_params({"C": 0.1, "penalty": "l2"})
        run.log_metric("val_auc", 0.86)
        run.log_input("dataset", "ds-1", name="train")
        model = LogisticRegression(C=0.1).fit(X, y)
        kiln.models.register(
            "fraud",
            model,
            input_example=X[:5],
            run=run,
            description="tuned [bold]",
            tags={"team": "risk"},
        )
    v2_run = run.id

    churn_X = pd.DataFrame({"tenure": rng.normal(size=100), "plan": rng.integers(0, 3, size=100)})
    churn_y = (churn_X["tenure"] > 0).astype(int)
    churn = LogisticRegression().fit(churn_X, churn_y)
    kiln.models.register("churn", churn, input_example=churn_X[:3], method="predict_proba")
    return Registry(
        v1_run=v1_run,
        v2_run=v2_run,
        sweep_run=sweep.id,
        v1_files={f.path: f.digest for f in v1.files},
    )


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("kiln: error: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def tree_depths(out: str) -> list[tuple[int, str]]:
    """(depth, text) per line of a printed Rich tree; each level indents four columns."""
    lines = []
    for line in out.splitlines():
        stripped = line.lstrip(" │├└─")
        if stripped:
            lines.append(((len(line) - len(stripped)) // 4, stripped))
    return lines


def depth_of(tree: list[tuple[int, str]], prefix: str) -> int:
    found = [depth for depth, text in tree if text.startswith(prefix)]
    assert len(found) == 1, (prefix, tree)
    return found[0]


# -- list, show, versions -------------------------------------------------------------------


def test_list_on_an_empty_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys, "models", "list") == []
    code, out, err = run_cli(capsys, "models", "list")
    assert code == 0, err
    assert "0 models" in out


def test_list(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    data = run_json(capsys, "models", "list")
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in data] == [
        ("churn", 1, {}),
        ("fraud", 2, {"champion": 1}),
    ]
    assert all(m["updated_at"] for m in data)

    code, out, err = run_cli(capsys, "models", "list")
    assert code == 0, err
    assert "2 models" in out
    assert "champion→1" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert set(rows) == {"churn", "fraud"}
    assert rows["fraud"].split("│")[2].strip() == "2"


def test_show(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 2)
    data = run_json(capsys, "models", "show", "fraud@champion")
    assert (data["ref"], data["flavor"], data["run_id"]) == ("fraud/2", "sklearn", registry.v2_run)
    assert data["aliases"] == ["champion"]
    assert data["description"] == "tuned [bold]"
    assert data["tags"] == {"team": "risk"}
    assert [(c["name"], c["dtype"]) for c in data["signature"]["inputs"]] == [
        ("amount", "float64"),
        ("hour", "int64"),
    ]
    assert data["metrics"] == {"val_auc": 0.86}
    assert "scikit-learn" in data["environment"]["packages"]

    code, out, err = run_cli(capsys, "models", "show", "fraud@champion")
    assert code == 0, err
    for text in ("model fraud/2", registry.v2_run, "champion", "team=risk", "tuned [bold]"):
        assert text in out
    assert "inputs (columns)" in out and "outputs" in out
    signature = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if (cells := [c.strip() for c in line.split("│")[1:-1]]) and len(cells) == 3
    }
    assert signature["amount"] == ["float64", "-"]
    assert signature["hour"] == ["int64", "-"]
    assert signature["(tensor)"] == ["int64", "[-1]"]
    for text in ("python", "scikit-learn", "val_auc", "0.86", "metrics snapshot"):
        assert text in out


def test_show_without_a_version_is_the_latest_and_lists_short_digests(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    assert run_json(capsys, "models", "show", "fraud")["version"] == 2
    data = run_json(capsys, "models", "show", "fraud/1")
    assert {f["path"]: f["digest"] for f in data["files"]} == registry.v1_files

    code, out, err = run_cli(capsys, "models", "show", "fraud/1")
    assert code == 0, err
    files = out[out.index("files (2)") :]
    for path, digest in registry.v1_files.items():
        row = next(line for line in files.splitlines() if path in line)
        assert row.split("│")[3].strip() == digest[:12]


def test_show_of_a_probability_model(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    data = run_json(capsys, "models", "show", "churn")
    assert data["run_id"] is None
    assert data["signature"]["outputs"] == [{"name": None, "dtype": "float64", "shape": [-1, 2]}]
    code, out, err = run_cli(capsys, "models", "show", "churn/1")
    assert code == 0, err
    assert "tenure" in out and "plan" in out
    assert "[-1, 2]" in out


def test_versions(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    kiln.models.set_alias("fraud", "challenger", 2)
    data = run_json(capsys, "models", "versions", "fraud")
    assert [(v["version"], v["aliases"], v["run_id"]) for v in data] == [
        (2, ["challenger"], registry.v2_run),
        (1, ["champion"], registry.v1_run),
    ]

    code, out, err = run_cli(capsys, "models", "versions", "fraud")
    assert code == 0, err
    assert "fraud: 2 versions" in out
    first_cells = [line.split("│")[1].strip() for line in out.splitlines() if "│" in line]
    assert [c for c in first_cells if c] == ["2", "1"]  # newest first
    assert out.index("challenger") < out.index("champion")
    assert "sklearn" in out and "KiB" in out


# -- aliases and rollback -------------------------------------------------------------------


def test_alias_moves_what_load_resolves(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    code, out, err = run_cli(capsys, "models", "alias", "fraud", "champion", "1")
    assert code == 0, err
    assert out.strip() == "fraud@champion: none -> 1"
    assert kiln.models.resolve("fraud@champion").version == 1

    code, out, err = run_cli(
        capsys, "models", "alias", "fraud", "champion", "2", "--reason", "better val_auc"
    )
    assert code == 0, err
    assert out.strip() == "fraud@champion: 1 -> 2"
    assert kiln.models.resolve("fraud@champion").version == 2

    code, out, err = run_cli(capsys, "models", "alias", "fraud", "champion", "2")
    assert code == 0, err
    assert out.strip() == "fraud@champion: already 2"
    assert len(kiln.models.alias_history("fraud", "champion")) == 2  # nothing recorded

    data = run_json(capsys, "models", "alias", "fraud", "challenger", "1")
    assert (data["alias"], data["action"], data["to_version"], data["changed"]) == (
        "challenger",
        "set",
        1,
        True,
    )


def test_rollback_and_history(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    kiln.models.set_alias("fraud", "champion", 2, reason="better val_auc")

    code, out, err = run_cli(capsys, "models", "rollback", "fraud", "champion", "-r", "drift")
    assert code == 0, err
    assert out.strip() == "fraud@champion: 2 -> 1 (rolled back)"
    assert kiln.models.resolve("fraud@champion").version == 1

    code, _, err = run_cli(capsys, "models", "rollback", "fraud", "champion")
    assert code == 2
    assert_one_line_error(err, "no earlier target")
    assert kiln.models.resolve("fraud@champion").version == 1

    history = run_json(capsys, "models", "alias", "fraud", "--history")
    assert [(e["action"], e["from_version"], e["to_version"], e["reason"]) for e in history] == [
        ("set", None, 1, ""),
        ("set", 1, 2, "better val_auc"),
        ("rollback", 2, 1, "drift"),
    ]
    assert all(e["actor"] for e in history)

    code, out, err = run_cli(capsys, "models", "alias", "fraud", "--history")
    assert code == 0, err
    assert "fraud alias history" in out
    rows = [
        [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.startswith("│") and "champion" in line
    ]
    assert [r[:4] for r in rows] == [
        ["champion", "set", "-", "1"],
        ["champion", "set", "1", "2"],
        ["champion", "rollback", "2", "1"],
    ]
    assert "drift" in out


def test_history_of_one_alias(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    kiln.models.set_alias("fraud", "challenger", 2)
    history = run_json(capsys, "models", "alias", "fraud", "--history", "challenger")
    assert [(e["alias"], e["to_version"]) for e in history] == [("challenger", 2)]

    code, out, err = run_cli(capsys, "models", "alias", "fraud", "--history", "champion")
    assert code == 0, err
    assert "fraud@champion history" in out
    assert "challenger" not in out

    code, out, err = run_cli(capsys, "models", "alias", "churn", "--history")
    assert code == 0, err
    assert "no alias moves recorded" in out


def test_alias_delete(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 2)
    code, out, err = run_cli(
        capsys, "models", "alias", "fraud", "champion", "--delete", "--reason", "retired"
    )
    assert code == 0, err
    assert out.strip() == "fraud@champion: 2 -> none (deleted)"
    code, _, err = run_cli(capsys, "models", "show", "fraud@champion")
    assert code == 2
    assert_one_line_error(err, "no alias 'champion'")
    last = kiln.models.alias_history("fraud", "champion")[-1]
    assert (last.action, last.reason) == ("delete", "retired")

    code, _, err = run_cli(capsys, "models", "alias", "fraud", "champion", "--delete")
    assert code == 2
    assert_one_line_error(err, "no alias 'champion'")


def test_rollback_json(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    kiln.models.set_alias("fraud", "champion", 2)
    data = run_json(capsys, "models", "rollback", "fraud", "champion")
    assert (data["action"], data["from_version"], data["to_version"]) == ("rollback", 2, 1)
    assert kiln.models.resolve("fraud@champion").version == 1


ALIAS_MISUSE = [
    (["fraud", "champion"], "missing VERSION"),
    (["fraud"], "missing ALIAS"),
    (["fraud", "champion", "1", "--delete"], "--delete takes no VERSION"),
    (["fraud", "--history", "--delete"], "--history takes no"),
    (["fraud", "champion", "1", "--history"], "--history takes no"),
    (["fraud", "champion", "9"], "no version 9; versions: 1, 2"),
    (["fraud", "champion", "two"], "positive integer"),
    (["fraud", "latest", "1"], "reserved"),
    (["fraud", "bad alias!", "1"], "alias must be"),
    (["frud", "champion", "1"], "did you mean fraud"),
]


def test_alias_misuse_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    for argv, fragment in ALIAS_MISUSE:
        code, out, err = run_cli(capsys, "models", "alias", *argv)
        assert (code, out) == (2, ""), argv
        assert_one_line_error(err, fragment)
    assert kiln.models.get_model("fraud").aliases == {}


# -- lineage --------------------------------------------------------------------------------


def test_lineage_tree(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    code, out, err = run_cli(capsys, "models", "lineage", "fraud/2")
    assert code == 0, err
    tree = tree_depths(out)
    assert tree[0][0] == 0 and tree[0][1].startswith("fraud/2  sklearn")
    assert depth_of(tree, "run fraud-exp/logreg-c0.1") == 1
    assert registry.v2_run in out
    assert depth_of(tree, "params (2)") == 2
    assert depth_of(tree, "C = 0.1") == 3
    assert depth_of(tree, "penalty = l2") == 3
    assert depth_of(tree, "metrics (1)") == 2
    assert depth_of(tree, "val_auc = 0.86") == 3
    assert depth_of(tree, "data inputs (1)") == 1
    assert depth_of(tree, "dataset ds-1 (train)") == 2
    assert depth_of(tree, "parent runs (1)") == 1
    assert depth_of(tree, "run fraud-exp/sweep") == 2
    assert registry.sweep_run in out
    texts = [text for _, text in tree]
    assert (
        texts.index("C = 0.1") < texts.index("val_auc = 0.86") < texts.index("dataset ds-1 (train)")
    )
    lineage = kiln.models.lineage("fraud/2")
    if lineage.code is not None:
        assert depth_of(tree, f"code commit {lineage.code.id}") == 1


def test_lineage_json(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    data = run_json(capsys, "models", "lineage", "fraud@champion")
    assert data["version"]["ref"] == "fraud/1"
    assert data["run"]["id"] == registry.v1_run
    assert data["run"]["label"] == "fraud-exp/logreg-c1"
    assert data["params"] == {"C": 1.0, "penalty": "l2"}
    assert data["metrics"] == {"val_auc": 0.81}
    assert [(n["kind"], n["id"], n["label"]) for n in data["inputs"]] == [
        ("dataset", "ds-1", "train")
    ]
    assert data["parents"] == []
    assert data == kiln.models.lineage("fraud/1").to_dict()


def test_lineage_of_a_version_without_a_run(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    code, out, err = run_cli(capsys, "models", "lineage", "churn")
    assert code == 0, err
    tree = tree_depths(out)
    assert tree[0][1].startswith("churn/1")
    assert depth_of(tree, "run: none recorded") == 1
    assert depth_of(tree, "data inputs (0)") == 1
    assert "params" not in out and "parent runs" not in out


# -- delete ---------------------------------------------------------------------------------


def test_delete_of_an_aliased_version_is_refused_naming_the_alias(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    code, out, err = run_cli(capsys, "models", "delete", "fraud/1")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "fraud/1", "'champion'")
    assert [v["version"] for v in run_json(capsys, "models", "versions", "fraud")] == [2, 1]

    code, _, err = run_cli(capsys, "models", "delete", "fraud@champion")
    assert code == 2
    assert_one_line_error(err, "not an alias", "kiln models alias fraud champion --delete")


def test_delete_a_version(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    code, out, err = run_cli(capsys, "models", "delete", "fraud/1")
    assert code == 0, err
    assert out.strip() == "deleted fraud/1"
    assert [v["version"] for v in run_json(capsys, "models", "versions", "fraud")] == [2]

    code, _, err = run_cli(capsys, "models", "delete", "fraud/1")
    assert code == 2
    assert_one_line_error(err, "no version 1; versions: 2")


def test_delete_a_whole_model_needs_yes(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    code, out, err = run_cli(capsys, "models", "delete", "fraud")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "'fraud'", "2 version(s)", "--yes")
    assert kiln.models.get_model("fraud").latest_version == 2

    kiln.models.set_alias("fraud", "champion", 2)
    code, _, err = run_cli(capsys, "models", "delete", "fraud", "--yes")
    assert code == 2
    assert_one_line_error(err, "'champion' (version 2)")

    kiln.models.delete_alias("fraud", "champion")
    code, out, err = run_cli(capsys, "models", "delete", "fraud", "--yes")
    assert code == 0, err
    assert "deleted model 'fraud'" in out
    assert [m["name"] for m in run_json(capsys, "models", "list")] == ["churn"]


# -- bad names and references ---------------------------------------------------------------


UNKNOWN_MODEL = [
    ["show", "frud"],
    ["show", "frud/1"],
    ["show", "frud@champion"],
    ["versions", "frud"],
    ["lineage", "frud"],
    ["alias", "frud", "--history"],
    ["rollback", "frud", "champion"],
    ["delete", "frud/1"],
    ["delete", "frud", "--yes"],
]


def test_unknown_model_exits_2_with_a_suggestion(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    for argv in UNKNOWN_MODEL:
        code, out, err = run_cli(capsys, "models", *argv)
        assert (code, out) == (2, ""), argv
        assert_one_line_error(err, "'frud'", "did you mean fraud?")


BAD_REFS = [
    ("fraud/abc", "must be a version number"),
    ("fraud/0", "positive integer"),
    ("fraud@", "not a valid alias name"),
    ("fraud@champoin", "did you mean champion?"),
    ("fraud/7", "no version 7; versions: 1, 2"),
    ("no such model", "model name must be"),
    ("@champion", "model name must be"),
]


def test_malformed_or_unknown_refs_exit_2(
    capsys: pytest.CaptureFixture[str], registry: Registry
) -> None:
    kiln.models.set_alias("fraud", "champion", 1)
    for ref, fragment in BAD_REFS:
        for command in ("show", "lineage"):
            code, out, err = run_cli(capsys, "models", command, ref)
            assert (code, out) == (2, ""), (command, ref)
            assert_one_line_error(err, fragment)


def test_console_script_reports_an_unknown_model_without_a_traceback(
    registry: Registry, tmp_path: Path
) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    shown = subprocess.run(
        [sys.executable, "-m", "kiln", "models", "show", "fraud/1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == registry.v1_run

    bad = subprocess.run(
        [sys.executable, "-m", "kiln", "models", "lineage", "fruad@champion"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert_one_line_error(bad.stderr, "did you mean fraud?")
