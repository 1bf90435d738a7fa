"""``kiln features``: plan, apply, list, show and materialize from a definitions file."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import kiln
from kiln.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    now = datetime.now(UTC)
    pd.DataFrame(
        {
            "user_id": [1, 2, 1],
            "event_timestamp": [now - timedelta(hours=h) for h in (30, 5, 2)],
            "created": [now - timedelta(hours=h) for h in (29, 4, 1)],
            "spend_7d": [10.0, 20.0, 30.0],
        }
    ).to_parquet(tmp_path / "users.parquet")
    path = tmp_path / "features.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import kiln

            user = kiln.Entity("user", join_keys=["user_id"])
            user_stats = kiln.FeatureView(
                "user_stats",
                entities=[user],
                source=kiln.ParquetSource({str(tmp_path / "users.parquet")!r}, created="created"),
                schema=[kiln.Field("spend_7d", "float64")],
                ttl=TTL,
            )
            fraud = kiln.FeatureService("fraud", features=["user_stats:spend_7d"])
            """
        ).replace("TTL", '"2d"')
    )
    return path


def test_plan_apply_list_show_materialize(
    capsys: pytest.CaptureFixture[str], definitions: Path
) -> None:
    code, out, _ = run_cli(capsys, "features", "plan", str(definitions))
    assert code == 0 and "create" in out and "user_stats" in out
    assert kiln.FeatureStore().list_definitions() == []
    code, out, _ = run_cli(capsys, "features", "apply", str(definitions))
    assert code == 0 and "created" in out
    code, out, _ = run_cli(capsys, "features", "apply", str(definitions))
    assert "nothing to change" in out

    definitions.write_text(definitions.read_text().replace('"2d"', '"1d"'))
    code, out, _ = run_cli(capsys, "features", "plan", str(definitions), "--json")
    changes = {c["name"]: c for c in json.loads(out)}
    assert changes["user_stats"]["action"] == "update"
    assert changes["user_stats"]["differences"] == ['ttl: "2d" -> "1d"']
    run_cli(capsys, "features", "apply", str(definitions))

    code, out, _ = run_cli(capsys, "features", "list", "--json")
    listed = {r["name"]: r["version"] for r in json.loads(out)}
    assert listed == {"user": 1, "user_stats": 2, "fraud": 1}
    code, out, _ = run_cli(capsys, "features", "show", "user_stats")
    assert code == 0 and "version 2" in out and '"ttl": "1d"' in out

    code, out, _ = run_cli(capsys, "features", "materialize", "--json")
    assert code == 0
    assert json.loads(out)[0]["view"] == "user_stats" and json.loads(out)[0]["entities"] == 2
    online = kiln.FeatureStore().get_online_features([{"user_id": 1}], "fraud")
    assert online["spend_7d"] == [30.0]
    code, out, _ = run_cli(capsys, "features", "materialize", "--incremental", "--json")
    assert json.loads(out)[0]["written"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["features", "apply", "missing.py"], "no definitions file"),
        (["features", "show", "user_stat"], "did you mean"),
        (["features", "list", "--kind", "views"], "--kind must be one of"),
        (["features", "materialize", "--end", "yesterday"], "--end must be an ISO 8601 time"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], definitions: Path, argv: list[str], message: str
) -> None:
    run_cli(capsys, "features", "apply", str(definitions))
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_broken_definitions_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import kiln\nkiln.Field('x', 'float')\n")
    code, _, err = run_cli(capsys, "features", "apply", str(bad))
    assert code == 2 and "cannot load definitions" in err and "'dtype' parameter" in err


def test_materialize_names_failed_views_after_writing_the_rest(
    capsys: pytest.CaptureFixture[str], definitions: Path, tmp_path: Path
) -> None:
    (tmp_path / "other.parquet").write_bytes((tmp_path / "users.parquet").read_bytes())
    other = tmp_path / "other.parquet"
    definitions.write_text(
        definitions.read_text()
        + textwrap.dedent(
            f"""
            other_stats = kiln.FeatureView(
                "other_stats",
                entities=[user],
                source=kiln.ParquetSource({str(other)!r}, created="created"),
            )
            """
        )
    )
    assert run_cli(capsys, "features", "apply", str(definitions))[0] == 0
    (tmp_path / "other.parquet").unlink()

    code, out, err = run_cli(capsys, "features", "materialize")
    assert code == 1 and "user_stats" in out
    assert err.startswith("kiln: error: materialization failed for 'other_stats': ")
    assert "other.parquet" in err and len(err.strip().splitlines()) == 1
    assert kiln.FeatureStore().get_online_features([{"user_id": 1}], "fraud")["spend_7d"] == [30.0]

    code, out, err = run_cli(capsys, "features", "materialize", "--json")
    assert code == 1 and "other_stats" in err
    by_view = {r["view"]: r for r in json.loads(out)}
    assert (
        by_view["user_stats"]["entities"] == 2
        and "other.parquet" in by_view["other_stats"]["error"]
    )


def test_relative_sources_resolve_against_the_definitions_file(
    capsys: pytest.CaptureFixture[str],
    definitions: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    definitions.write_text(
        definitions.read_text()
        .replace(repr(str(tmp_path / "users.parquet")), "'users.parquet'")
        .replace('kiln.Field("spend_7d", "float64")', "")
        .replace("schema=[],", "")
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _ = run_cli(capsys, "features", "plan", str(definitions))
    assert code == 0 and "inferred spend_7d: float64" in out
    code, out, _ = run_cli(capsys, "features", "plan", str(definitions), "--json")
    changes = {c["name"]: c for c in json.loads(out)}
    assert changes["user_stats"]["inferred"] == ["spend_7d: float64"]
    assert run_cli(capsys, "features", "apply", str(definitions))[0] == 0
    stored = kiln.FeatureStore().get("user_stats")
    assert isinstance(stored, kiln.FeatureView)
    assert stored.source == kiln.ParquetSource(str(tmp_path / "users.parquet"), created="created")
    monkeypatch.chdir(tmp_path.parent)
    code, out, _ = run_cli(capsys, "features", "materialize", "--json")
    assert code == 0 and json.loads(out)[0]["entities"] == 2
