"""The ``kiln`` command over data made with the SDK, under each test's own KILN_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import kiln
from kiln.cli import main
from kiln.core import reset_settings


@dataclass(frozen=True)
class Runs:
    lgbm: str
    logreg: str
    churn: str
    report: bytes


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    """Two runs in "fraud", one in "churn", logged with the public SDK and default settings."""
    files = tmp_path / "files"
    (files / "plots").mkdir(parents=True)
    (files / "plots" / "roc.svg").write_text("<svg/>")
    (files / "plots" / "pr.svg").write_text("<svg></svg>")
    report = b"<html>fraud report</html>"
    (files / "report.html").write_bytes(report)

    with kiln.start_run(experiment="fraud", name="lgbm", tags={"team": "risk"}) as run:
        run.log_params({"num_leaves": 31, "learning_rate": 0.05})
        for step, auc in enumerate([0.8, 0.85, 0.91]):
            run.log_metric("val_auc", auc, step=step)
        run.log_artifact(files / "report.html")
        run.log_artifacts(files / "plots", "plots")
    lgbm = run.id
    with kiln.start_run(experiment="fraud", name="logreg") as run:
        run.log_params({"num_leaves": 15, "learning_rate": 0.05})
        run.log_metric("val_auc", 0.88)
    logreg = run.id
    with kiln.start_run(experiment="churn", name="baseline") as run:
        run.log_metric("val_auc", 0.7)
    return Runs(lgbm=lgbm, logreg=logreg, churn=run.id, report=report)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
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


# -- root and settings --------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--version")
    assert (code, out, err) == (0, f"kiln {kiln.__version__}\n", "")


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys)
    assert code in (0, 2)  # click's no_args_is_help
    text = out + err
    for command in ("info", "runs", "experiments", "db"):
        assert command in text


def test_info(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    home = tmp_path / "kiln-home"
    data = run_json(capsys, "info")
    assert data["version"] == kiln.__version__
    settings = data["settings"]
    assert settings["home"] == str(home)
    assert settings["db_url"] == f"sqlite:///{home / 'kiln.db'}"
    assert settings["artifact_uri"] == str(home / "artifacts")

    code, out, err = run_cli(capsys, "info")
    assert code == 0, err
    for name in ("home", "db_url", "artifact_uri", "KILN_HOME", "default"):
        assert name in out


def test_info_masks_a_password_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_DB_URL", "postgresql://kiln:s3cret@127.0.0.1:5432/test")
    reset_settings()
    data = run_json(capsys, "info")
    assert data["settings"]["db_url"] == "postgresql://kiln:***@127.0.0.1:5432/test"

    code, out, err = run_cli(capsys, "info")
    assert code == 0, err
    assert "s3cret" not in out + err
    assert "KILN_DB_URL" in out


def test_info_with_an_unknown_scheme_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_DB_URL", "mysql://kiln:s3cret@db/meta")
    reset_settings()
    code, out, err = run_cli(capsys, "info")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "KILN_DB_URL", "'mysql'", "sqlite, postgresql")
    assert "s3cret" not in err


def test_db_upgrade(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "kiln-home" / "kiln.db"
    assert not db.exists()
    code, out, err = run_cli(capsys, "db", "upgrade")
    assert code == 0, err
    assert "revision" in out
    assert db.is_file()
    revision = out.split()[-1]
    code, again, err = run_cli(capsys, "db", "upgrade")  # idempotent
    assert code == 0, err
    assert again.split()[-1] == revision
    assert run_json(capsys, "experiments", "list") == []


# -- experiments --------------------------------------------------------------------------


def test_experiments_list(capsys: pytest.CaptureFixture[str], runs: Runs) -> None:
    data = run_json(capsys, "experiments", "list")
    assert [(e["name"], e["run_count"]) for e in data] == [("fraud", 2), ("churn", 1)]
    assert all(len(e["id"]) == 32 for e in data)

    code, out, err = run_cli(capsys, "experiments", "list")
    assert code == 0, err
    assert "fraud" in out and "churn" in out


def test_experiments_rename(capsys: pytest.CaptureFixture[str], runs: Runs) -> None:
    code, out, err = run_cli(capsys, "experiments", "rename", "fraud", "fraud-v2")
    assert code == 0, err
    assert "fraud-v2" in out
    names = [e["name"] for e in run_json(capsys, "experiments", "list")]
    assert names == ["fraud-v2", "churn"]
    assert run_json(capsys, "runs", "show", runs.lgbm)["experiment"] == "fraud-v2"


def test_experiments_rename_to_a_taken_name_exits_2(
    capsys: pytest.CaptureFixture[str], runs: Runs
) -> None:
    code, _, err = run_cli(capsys, "experiments", "rename", "fraud", "churn")
    assert code == 2
    assert_one_line_error(err, "'churn'", "taken")
    names = [e["name"] for e in run_json(capsys, "experiments", "list")]
    assert names == ["fraud", "churn"]


def test_experiments_rename_of_an_unknown_experiment_exits_2(
    capsys: pytest.CaptureFixture[str], runs: Runs
) -> None:
    code, _, err = run_cli(capsys, "experiments", "rename", "frod", "x")
    assert code == 2
    assert_one_line_error(err, "frod")


# -- runs ---------------------------------------------------------------------------------


def test_runs_list(capsys: pytest.CaptureFixture[str], runs: Runs) -> None:
    data = run_json(capsys, "runs", "list")
    assert [r["id"] for r in data] == [runs.churn, runs.logreg, runs.lgbm]  # newest first

    data = run_json(capsys, "runs", "list", "-e", "fraud", "--order-by", "-metrics.val_auc")
    assert [(r["name"], r["metrics"]["val_auc"]) for r in data] == [
        ("lgbm", 0.91),
        ("logreg", 0.88),
    ]
    data = run_json(
        capsys, "runs", "list", "--filter", "metrics.val_auc > 0.85 and params.num_leaves = 31"
    )
    assert [r["id"] for r in data] == [runs.lgbm]
    data = run_json(capsys, "runs", "list", "-e", "fraud", "-e", "churn", "--limit", "1")
    assert [r["id"] for r in data] == [runs.churn]

    code, out, err = run_cli(capsys, "runs", "list")
    assert code == 0, err
    assert "3 runs" in out
    assert "lgbm" in out and "baseline" in out


def test_runs_list_filter_syntax_error_exits_2_naming_the_position(
    capsys: pytest.CaptureFixture[str], runs: Runs
) -> None:
    code, out, err = run_cli(capsys, "runs", "list", "--filter", "metrics.val_auc >> 0.9")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "position 17")


def test_runs_list_of_an_unknown_experiment_exits_2(
    capsys: pytest.CaptureFixture[str], runs: Runs
) -> None:
    code, _, err = run_cli(capsys, "runs", "list", "-e", "frud")
    assert code == 2
    assert_one_line_error(err, "frud")


def test_runs_show(capsys: pytest.CaptureFixture[str], runs: Runs) -> None:
    data = run_json(capsys, "runs", "show", runs.lgbm)
    assert data["id"] == runs.lgbm
    assert (data["experiment"], data["name"], data["status"]) == ("fraud", "lgbm", "FINISHED")
    assert data["params"] == {"num_leaves": 31, "learning_rate": 0.05}
    assert data["metrics"] == {"val_auc": 0.91}
    assert data["tags"] == {"team": "risk"}
    artifacts = {a["path"]: a for a in data["artifacts"]}
    assert sorted(artifacts) == ["plots/pr.svg", "plots/roc.svg", "report.html"]
    report = artifacts["report.html"]
    assert report["digest"] == hashlib.sha256(runs.report).hexdigest()
    assert report["size"] == len(runs.report)

    code, out, err = run_cli(capsys, "runs", "show", runs.lgbm)
    assert code == 0, err
    for text in ("lgbm", "FINISHED", "num_leaves", "val_auc", "team", "report.html"):
        assert text in out


def test_runs_show_of_an_unknown_id_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], runs: Runs
) -> None:
    code, out, err = run_cli(capsys, "runs", "show", "0" * 32)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "0" * 32)


def test_runs_compare(capsys: pytest.CaptureFixture[str], runs: Runs) -> None:
    data = run_json(capsys, "runs", "compare", runs.lgbm, runs.logreg)
    assert [r["id"] for r in data["runs"]] == [runs.lgbm, runs.logreg]
    assert data["param_keys"] == ["learning_rate", "num_leaves"]
    assert data["differing_params"] == ["num_leaves"]
    assert data["metric_keys"] == ["val_auc"]

    code, out, err = run_cli(capsys, "runs", "compare", runs.lgbm, runs.logreg)
    assert code == 0, err
    assert "params.num_leaves" in out and "metrics.val_auc" in out

    code, _, err = run_cli(capsys, "runs", "compare", runs.lgbm, "f" * 32)
    assert code == 2
    assert_one_line_error(err, "f" * 32)


def test_runs_history(capsys: pytest.CaptureFixture[str], runs: Runs) -> None:
    data = run_json(capsys, "runs", "history", runs.lgbm, "val_auc")
    assert [(p["step"], p["value"]) for p in data] == [(0, 0.8), (1, 0.85), (2, 0.91)]
    assert all(p["key"] == "val_auc" for p in data)

    code, out, err = run_cli(capsys, "runs", "history", runs.lgbm, "val_auc")
    assert code == 0, err
    assert "0.91" in out

    code, _, err = run_cli(capsys, "runs", "history", runs.lgbm, "val_acu")
    assert code == 2
    assert_one_line_error(err, "val_acu")


def test_runs_download(capsys: pytest.CaptureFixture[str], runs: Runs, tmp_path: Path) -> None:
    dst = tmp_path / "download"
    code, out, err = run_cli(capsys, "runs", "download", runs.lgbm, "--dst", str(dst))
    assert code == 0, err
    assert "downloaded" in out
    assert (dst / "report.html").read_bytes() == runs.report
    assert (dst / "plots" / "roc.svg").read_text() == "<svg/>"
    assert (dst / "plots" / "pr.svg").read_text() == "<svg></svg>"

    only = tmp_path / "only-plots"
    code, _, err = run_cli(capsys, "runs", "download", runs.lgbm, "plots", "--dst", str(only))
    assert code == 0, err
    files = sorted(p.relative_to(only).as_posix() for p in only.rglob("*") if p.is_file())
    assert files == ["plots/pr.svg", "plots/roc.svg"]

    code, _, err = run_cli(capsys, "runs", "download", runs.lgbm, "plot", "--dst", str(only))
    assert code == 2
    assert_one_line_error(err, "'plot'")


def test_runs_download_of_a_corrupted_artifact_fails_without_writing(
    capsys: pytest.CaptureFixture[str], runs: Runs, tmp_path: Path
) -> None:
    digest = hashlib.sha256(runs.report).hexdigest()
    stored = tmp_path / "kiln-home" / "artifacts" / "sha256" / digest[:2] / digest[2:4] / digest
    stored.write_bytes(b"<html>tampered</html>")
    dst = tmp_path / "download"
    code, _, err = run_cli(capsys, "runs", "download", runs.lgbm, "report.html", "--dst", str(dst))
    assert code == 1
    assert_one_line_error(err, digest, "corrupted")
    assert not dst.exists() or not any(p.is_file() for p in dst.rglob("*"))


# -- a real process -----------------------------------------------------------------------


def test_console_script_reports_bad_input_without_a_traceback(runs: Runs, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    shown = subprocess.run(
        [sys.executable, "-m", "kiln", "runs", "show", runs.lgbm, "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["name"] == "lgbm"

    bad = subprocess.run(
        [sys.executable, "-m", "kiln", "runs", "list", "--filter", "params.x ="],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert_one_line_error(bad.stderr, "position")
