"""Tracking conformance suite: every metadata backend must pass these tests.

Import the tests into a test module and provide a ``tracking_client`` fixture
(a :class:`kiln.tracking.TrackingClient` on a fresh store)::

    from kiln.testing.tracking import *  # noqa: F403

    @pytest.fixture(params=["sqlite", "postgresql"])
    def tracking_client(request): ...
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from kiln.core import Conflict, IntegrityError, InvalidInput, NotFound
from kiln.tracking import RunStatus, TrackingClient, experiments, lineage, runs, start_run


def _run(client: TrackingClient, experiment: str = "exp", **kw: object) -> str:
    with start_run(experiment, client=client, **kw) as run:  # type: ignore[arg-type]
        pass
    return run.id


# -- experiments ------------------------------------------------------------------------


def test_experiment_created_on_first_use_and_listed(tracking_client: TrackingClient) -> None:
    _run(tracking_client, "alpha")
    _run(tracking_client, "alpha")
    _run(tracking_client, "beta")
    listed = {e.name: e.run_count for e in experiments.list(client=tracking_client)}
    assert listed == {"alpha": 2, "beta": 1}
    assert experiments.get("alpha", client=tracking_client).run_count == 2


def test_experiment_rename(tracking_client: TrackingClient) -> None:
    run_id = _run(tracking_client, "old")
    _run(tracking_client, "taken")
    renamed = experiments.rename("old", "new", client=tracking_client)
    assert renamed.name == "new"
    assert runs.get(run_id, client=tracking_client).experiment == "new"
    with pytest.raises(Conflict, match="taken"):
        experiments.rename("new", "taken", client=tracking_client)
    with pytest.raises(NotFound, match="did you mean"):
        experiments.get("nwe", client=tracking_client)


def test_experiment_create_is_idempotent(tracking_client: TrackingClient) -> None:
    first = experiments.create("x", client=tracking_client)
    assert experiments.create("x", client=tracking_client).id == first.id
    with pytest.raises(InvalidInput, match="experiment name"):
        experiments.create("", client=tracking_client)


# -- run lifecycle ----------------------------------------------------------------------


def test_run_finishes(tracking_client: TrackingClient) -> None:
    with start_run("e", name="ok", tags={"team": "risk"}, client=tracking_client) as run:
        assert run.status == RunStatus.RUNNING
        assert runs.get(run.id, client=tracking_client).status == RunStatus.RUNNING
    record = runs.get(run.id, client=tracking_client)
    assert record.status == RunStatus.FINISHED
    assert record.name == "ok" and record.experiment == "e"
    assert record.tags == {"team": "risk"}
    assert record.end_time is not None and record.end_time >= record.start_time
    assert record.error is None


def test_run_fails_with_exception_type_and_message(tracking_client: TrackingClient) -> None:
    with pytest.raises(ZeroDivisionError), start_run("e", client=tracking_client) as run:
        run.log_metric("loss", 1.0)
        _ = 1 / 0
    record = runs.get(run.id, client=tracking_client)
    assert record.status == RunStatus.FAILED
    assert record.error == "ZeroDivisionError: division by zero"
    assert record.metrics == {"loss": 1.0}  # metrics logged before the failure are kept


def test_ended_run_refuses_more_logging(tracking_client: TrackingClient) -> None:
    with start_run("e", client=tracking_client) as run:
        pass
    with pytest.raises(Conflict, match="has ended"):
        run.log_metric("x", 1)
    with pytest.raises(Conflict, match="has ended"):
        run.log_param("x", 1)
    run.end()  # ending twice is a no-op
    open_run = start_run("e", client=tracking_client)
    with pytest.raises(InvalidInput, match="RUNNING"):
        open_run.end("RUNNING")
    open_run.end("KILLED")
    assert runs.get(open_run.id, client=tracking_client).status == RunStatus.KILLED


def test_nested_runs(tracking_client: TrackingClient) -> None:
    with start_run("parent-exp", client=tracking_client) as parent:
        with start_run(name="child") as child:
            assert child.parent_id == parent.id
            assert child.client is tracking_client
        explicit = start_run(parent=parent.id, client=tracking_client)
        explicit.end()
    assert runs.get(child.id, client=tracking_client).experiment == "parent-exp"
    assert runs.get(explicit.id, client=tracking_client).parent_id == parent.id
    with pytest.raises(NotFound, match="parent run"):
        start_run("e", parent="0" * 32, client=tracking_client)


def test_environment_is_captured(tracking_client: TrackingClient) -> None:
    record = runs.get(_run(tracking_client), client=tracking_client)
    env = record.environment
    assert env["python"].count(".") == 2
    assert env["host"] and env["command"]
    assert "kiln" in env["packages"] and "numpy" in env["packages"]
    assert "git_commit" in env and "git_dirty" in env
    other = runs.get(_run(tracking_client), client=tracking_client)
    assert other.environment == env  # one capture per process


def test_killed_when_heartbeat_stops(tracking_client: TrackingClient) -> None:
    run = start_run("e", client=tracking_client)
    run.client.writer.untrack(run.id)  # as if the process had died
    short = TrackingClient(
        meta=tracking_client.meta, blobs=tracking_client.blobs, heartbeat_timeout_s=0.2
    )
    time.sleep(0.5)
    record = runs.get(run.id, client=short)
    assert record.status == RunStatus.KILLED
    assert "heartbeat" in (record.error or "")
    live = start_run("e", client=tracking_client)
    assert runs.get(live.id, client=tracking_client).status == RunStatus.RUNNING
    live.end()


# -- params and tags --------------------------------------------------------------------


def test_params_are_typed_and_immutable(tracking_client: TrackingClient) -> None:
    with start_run("e", client=tracking_client) as run:
        run.log_params({"lr": 0.05, "leaves": 31, "algo": "lgbm", "flag": True, "none": None})
        run.log_param("layers", [64, 32])
        run.log_param("lr", 0.05)  # same value again is fine
        with pytest.raises(Conflict) as info:
            run.log_param("lr", 0.1)
        assert "'lr'" in str(info.value) and "0.05" in str(info.value) and "0.1" in str(info.value)
        with pytest.raises(InvalidInput, match="param key"):
            run.log_param("bad key!", 1)
        with pytest.raises(InvalidInput, match="JSON"):
            run.log_param("obj", object())
    params = runs.get(run.id, client=tracking_client).params
    assert params == {
        "lr": 0.05,
        "leaves": 31,
        "algo": "lgbm",
        "flag": True,
        "none": None,
        "layers": [64, 32],
    }


def test_tags_are_mutable(tracking_client: TrackingClient) -> None:
    with start_run("e", tags={"stage": "dev"}, client=tracking_client) as run:
        run.set_tag("stage", "prod")
        run.set_tags({"owner": "ana"})
    assert runs.get(run.id, client=tracking_client).tags == {"stage": "prod", "owner": "ana"}


# -- metrics ----------------------------------------------------------------------------


def test_metrics_history_latest_and_special_values(tracking_client: TrackingClient) -> None:
    with start_run("e", client=tracking_client) as run:
        for value in (0.5, 0.6, 0.7):
            run.log_metric("auc", value)  # steps 0, 1, 2
        run.log_metrics({"loss": 1.5, "acc": 0.9}, step=10)
        run.log_metric("nan", float("nan"))
        run.log_metric("inf", float("inf"))
        run.log_metric("ninf", float("-inf"))
        run.log_metric("late", 2.0, step=5)
        run.log_metric("late", 1.0, step=3)  # an older step does not replace the latest
    record = runs.get(run.id, client=tracking_client)
    assert record.metrics["auc"] == 0.7
    assert record.metrics["loss"] == 1.5 and record.metrics["late"] == 2.0
    assert math.isnan(record.metrics["nan"])
    assert record.metrics["inf"] == math.inf and record.metrics["ninf"] == -math.inf
    history = runs.metric_history(run.id, "auc", client=tracking_client)
    assert [(p.step, p.value) for p in history] == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert all(p.timestamp.tzinfo is not None for p in history)
    assert math.isnan(runs.metric_history(run.id, "nan", client=tracking_client)[0].value)
    assert [p.step for p in runs.metric_history(run.id, "late", client=tracking_client)] == [3, 5]
    with pytest.raises(NotFound, match="did you mean auc"):
        runs.metric_history(run.id, "acu", client=tracking_client)


def test_metric_series_reads_steps_and_values_as_arrays(tracking_client: TrackingClient) -> None:
    with start_run("series", client=tracking_client) as run:
        for step in range(10):
            run.log_metric("loss", float("nan") if step == 3 else 1.0 / (step + 1), step=step)
        run.log_metric("other", 1.0)
    series = runs.metric_series(run.id, "loss", client=tracking_client)
    assert series.steps.tolist() == list(range(10))
    assert math.isnan(series.values[3]) and series.values[4] == 0.2
    window = runs.metric_series(run.id, "loss", min_step=2, max_step=5, client=tracking_client)
    assert window.steps.tolist() == [2, 3, 4, 5]
    empty = runs.metric_series(run.id, "loss", min_step=50, client=tracking_client)
    assert empty.steps.size == 0
    with pytest.raises(NotFound, match="no metric 'los'"):
        runs.metric_series(run.id, "los", client=tracking_client)
    with pytest.raises(NotFound):
        runs.metric_series("0" * 32, "loss", client=tracking_client)
    with pytest.raises(InvalidInput, match="min_step"):
        runs.metric_series(run.id, "loss", min_step="a", client=tracking_client)  # type: ignore[arg-type]


def test_metric_input_is_validated(tracking_client: TrackingClient) -> None:
    with start_run("e", client=tracking_client) as run:
        with pytest.raises(InvalidInput, match="'auc' must be a number"):
            run.log_metric("auc", "high")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="step"):
            run.log_metric("auc", 1.0, step=1.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="metric key"):
            run.log_metric("", 1.0)


def test_metrics_visible_after_flush_interval(tracking_client: TrackingClient) -> None:
    with start_run("e", client=tracking_client) as run:
        run.log_metric("x", 1.0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if runs.get(run.id, client=tracking_client).metrics.get("x") == 1.0:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the background writer did not flush within 5 s")


def test_records_are_frozen(tracking_client: TrackingClient) -> None:
    with start_run("e", client=tracking_client) as run:
        run.log_param("a", 1)
        run.log_metric("m", 1.0)
        before = run.record()
        run.log_param("b", 2)
        run.log_metric("m", 2.0)
        run.set_tag("t", "v")
    assert before.params == {"a": 1} and before.metrics == {"m": 1.0} and before.tags == {}
    with pytest.raises(TypeError):
        before.params["a"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        before.status = "X"  # type: ignore[misc]


# -- search -----------------------------------------------------------------------------


@pytest.fixture
def population(tracking_client: TrackingClient) -> dict[str, str]:
    """Six runs with known params, metrics and tags."""
    ids = {}
    rows = [
        ("a", 31, "lgbm", 0.91, "risk"),
        ("b", 63, "lgbm", 0.95, "risk"),
        ("c", 31, "xgb", 0.85, "growth"),
        ("d", 15, "sgd", 0.70, "growth"),
        ("e", 31, "lgbm", float("nan"), "risk"),
        ("f", 127, "xgb", 0.99, "risk"),
    ]
    for name, leaves, algo, auc, team in rows:
        with start_run("search", name=name, tags={"team": team}, client=tracking_client) as run:
            run.log_params({"num_leaves": leaves, "algo": algo})
            run.log_metric("val_auc", auc)
        ids[name] = run.id
    with start_run("other", name="z", client=tracking_client) as run:
        run.log_metric("val_auc", 0.99)
    ids["z"] = run.id
    return ids


def _names(records: list) -> list[str]:  # type: ignore[type-arg]
    return [r.name for r in records]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ("metrics.val_auc > 0.9", {"a", "b", "f"}),
        ("metrics.val_auc >= 0.95", {"b", "f"}),
        ("metrics.val_auc < 0.85", {"d"}),
        ("metrics.val_auc <= 0.85", {"c", "d"}),
        ("metrics.val_auc = 0.91", {"a"}),
        ("metrics.val_auc != 0.91", {"b", "c", "d", "f"}),
        ("metrics.val_auc IN (0.7, 0.99)", {"d", "f"}),
        ("params.num_leaves = 31", {"a", "c", "e"}),
        ("params.num_leaves > 31", {"b", "f"}),
        ("params.algo = 'lgbm' and params.num_leaves = 31", {"a", "e"}),
        ("params.algo != 'lgbm'", {"c", "d", "f"}),
        ("params.algo LIKE 'x%'", {"c", "f"}),
        ("params.algo ILIKE 'LG%'", {"a", "b", "e"}),
        ("params.algo IN ('sgd', 'xgb')", {"c", "d", "f"}),
        ("params.algo NOT IN ('sgd', 'xgb')", {"a", "b", "e"}),
        ("tags.team = 'growth'", {"c", "d"}),
        ("tags.team LIKE 'ri%' and metrics.val_auc > 0.92", {"b", "f"}),
        ("attributes.name = 'c'", {"c"}),
        ("attributes.name IN ('a', 'b')", {"a", "b"}),
        ("attributes.status = 'FINISHED' and params.num_leaves < 20", {"d"}),
        ("attributes.start_time > 0", {"a", "b", "c", "d", "e", "f"}),
        ("metrics.missing > 0", set()),
        ('params."num_leaves" = 63', {"b"}),
        ("params.`num_leaves` = 63", {"b"}),
    ],
)
def test_search_filters(
    tracking_client: TrackingClient, population: dict[str, str], filter_: str, expected: set[str]
) -> None:
    found = runs.search("search", filter=filter_, client=tracking_client)
    assert set(_names(found)) == expected


def test_search_order_and_limit(
    tracking_client: TrackingClient, population: dict[str, str]
) -> None:
    by_auc = runs.search("search", order_by=["-metrics.val_auc"], client=tracking_client)
    assert _names(by_auc) == ["f", "b", "a", "c", "d", "e"]  # NaN sorts last
    asc = runs.search("search", order_by="metrics.val_auc ASC", client=tracking_client)
    assert _names(asc)[:2] == ["d", "c"] and _names(asc)[-1] == "e"
    leaves = runs.search(
        "search", order_by=["params.num_leaves DESC", "attributes.name"], client=tracking_client
    )
    assert _names(leaves) == ["f", "b", "a", "c", "e", "d"]
    top = runs.search("search", order_by=["-metrics.val_auc"], limit=2, client=tracking_client)
    assert _names(top) == ["f", "b"]
    newest = runs.search("search", client=tracking_client)
    assert _names(newest) == ["f", "e", "d", "c", "b", "a"]
    everything = runs.search(None, filter="metrics.val_auc > 0.98", client=tracking_client)
    assert set(_names(everything)) == {"f", "z"}
    both = runs.search(["search", "other"], filter="metrics.val_auc > 0.98", client=tracking_client)
    assert set(_names(both)) == {"f", "z"}


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ("metrics.auc >", "position 13 at the end"),
        ("metrics.auc >> 1", "position 13"),
        ("metrics.auc > 1 or params.x = 1", "position 16 near 'or'"),
        ("auc > 1", "position 0"),
        ("metrics.auc LIKE 'x'", "compares with numbers"),
        ("attributes.colour = 'x'", "unknown attribute 'colour'"),
        ("params.x IN 1", r"'\('"),
        ("params.x = 'unterminated", "position"),
        ("attributes.start_time > 'yesterday'", "ISO date"),
    ],
)
def test_search_syntax_errors_point_at_token(
    tracking_client: TrackingClient, filter_: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        runs.search(filter=filter_, client=tracking_client)


def test_search_bad_arguments(tracking_client: TrackingClient, population: dict[str, str]) -> None:
    with pytest.raises(NotFound, match="did you mean search"):
        runs.search("serch", client=tracking_client)
    with pytest.raises(InvalidInput, match="limit"):
        runs.search("search", limit=0, client=tracking_client)
    with pytest.raises(InvalidInput, match="ASC or DESC"):
        runs.search("search", order_by=["metrics.val_auc sideways"], client=tracking_client)


def test_search_pages_counts_and_nesting(
    tracking_client: TrackingClient, population: dict[str, str]
) -> None:
    order = ["-metrics.val_auc"]
    pages = [
        _names(runs.search("search", order_by=order, limit=2, offset=o, client=tracking_client))
        for o in (0, 2, 4, 6)
    ]
    assert pages == [["f", "b"], ["a", "c"], ["d", "e"], []]
    assert runs.count("search", client=tracking_client) == 6
    assert runs.count("search", "params.num_leaves = 31", client=tracking_client) == 3
    assert runs.count(None, "metrics.val_auc > 0.98", client=tracking_client) == 2
    with start_run("search", name="parent", client=tracking_client) as parent:
        with start_run("search", name="child-1", parent=parent, client=tracking_client):
            pass
        with start_run("search", name="child-2", parent=parent, client=tracking_client):
            pass
    assert runs.count("search", top_level=True, client=tracking_client) == 7
    assert runs.count("search", client=tracking_client) == 9
    top = runs.search("search", top_level=True, client=tracking_client)
    assert "child-1" not in _names(top) and "parent" in _names(top)
    with (
        start_run("elsewhere", name="outer", client=tracking_client) as outer,
        start_run("search", name="inner", parent=outer, client=tracking_client),
    ):
        pass
    # A run whose parent is in another experiment is top-level in its own.
    assert "inner" in _names(runs.search("search", top_level=True, client=tracking_client))
    assert runs.count("search", top_level=True, client=tracking_client) == 8
    nested = runs.children([parent.id, population["a"]], client=tracking_client)
    assert list(nested) == [parent.id]
    assert _names(nested[parent.id]) == ["child-1", "child-2"]
    assert runs.children([], client=tracking_client) == {}
    keys = experiments.keys("search", client=tracking_client)
    assert keys.params == ("algo", "num_leaves")
    assert keys.metrics == ("val_auc",)
    assert "team" in keys.tags
    with pytest.raises(InvalidInput, match="offset"):
        runs.search("search", offset=-1, client=tracking_client)
    with pytest.raises(InvalidInput, match="recent"):
        experiments.keys("search", recent=0, client=tracking_client)
    with pytest.raises(NotFound, match="did you mean search"):
        experiments.keys("serch", client=tracking_client)


def test_compare(tracking_client: TrackingClient, population: dict[str, str]) -> None:
    result = runs.compare([population["a"], population["b"]], client=tracking_client)
    assert [r.name for r in result.runs] == ["a", "b"]
    assert result.param_keys == ("algo", "num_leaves")
    assert result.differing_params == ("num_leaves",)
    rows = dict(result.rows())
    assert rows["metrics.val_auc"] == [0.91, 0.95]
    with pytest.raises(NotFound, match="no run"):
        runs.compare([population["a"], "missing"], client=tracking_client)


# -- artifacts --------------------------------------------------------------------------


def test_artifacts_round_trip(tracking_client: TrackingClient, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(b"\x00model" * 1000)
    (src / "sub" / "notes.txt").write_text("notes")
    (tmp_path / "report.html").write_text("<h1>report</h1>")
    with start_run("e", client=tracking_client) as run:
        run.log_artifact(tmp_path / "report.html")
        run.log_artifacts(src, "model")
        run.log_dict({"auc": 0.9}, "summary/metrics.json")
        run.log_text("hello", "notes/hello.txt")
    listed = [a.path for a in runs.list_artifacts(run.id, client=tracking_client)]
    assert listed == [
        "model/model.bin",
        "model/sub/notes.txt",
        "notes/hello.txt",
        "report.html",
        "summary/metrics.json",
    ]
    top = runs.list_artifacts(run.id, recursive=False, client=tracking_client)
    assert [(a.path, a.is_dir) for a in top] == [
        ("model", True),
        ("notes", True),
        ("report.html", False),
        ("summary", True),
    ]
    out = runs.download_artifacts(run.id, "model", tmp_path / "out", client=tracking_client)
    assert (out / "model.bin").read_bytes() == b"\x00model" * 1000
    assert (out / "sub" / "notes.txt").read_text() == "notes"
    one = runs.download_artifacts(run, "report.html", tmp_path / "one", client=tracking_client)
    assert one.read_text() == "<h1>report</h1>"
    with pytest.raises(NotFound, match=r"report\.html"):
        runs.download_artifacts(run.id, "report.htm", tmp_path / "x", client=tracking_client)
    with pytest.raises(InvalidInput, match="escapes"):
        runs.download_artifacts(run.id, "../etc", tmp_path / "x", client=tracking_client)


def test_identical_artifacts_are_stored_once(
    tracking_client: TrackingClient, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("same bytes")
    with start_run("e", client=tracking_client) as one:
        first = one.log_artifact(tmp_path / "a.txt")
    with start_run("e", client=tracking_client) as two:
        second = two.log_artifact(tmp_path / "a.txt", "copy")
    assert first.digest == second.digest and second.path == "copy/a.txt"


def test_corrupted_artifact_is_refused(tracking_client: TrackingClient, tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("original")
    with start_run("e", client=tracking_client) as run:
        record = run.log_artifact(tmp_path / "m.txt")
    root = getattr(tracking_client.blobs, "uri", "")
    if "://" in root:
        pytest.skip("corruption is injected through the local filesystem only")
    digest = record.digest or ""
    blob = Path(root) / "sha256" / digest[:2] / digest[2:4] / digest
    blob.write_text("tampered")
    with pytest.raises(IntegrityError, match="corrupted"):
        runs.download_artifacts(run.id, "m.txt", tmp_path / "out", client=tracking_client)
    assert not (tmp_path / "out" / "m.txt").exists()


# -- lineage ----------------------------------------------------------------------------


def test_lineage_edges(tracking_client: TrackingClient) -> None:
    with start_run("e", client=tracking_client) as run:
        run.log_input("dataset", "fraud@v3", rows=5000)
    edges = lineage.edges("run", run.id, direction="in", client=tracking_client)
    assert [(e.src_kind, e.src_id, e.relation) for e in edges] == [
        ("dataset", "fraud@v3", "input_to")
    ]
    assert edges[0].properties == {"rows": 5000}
    out = lineage.edges("dataset", "fraud@v3", direction="out", client=tracking_client)
    assert [e.dst_id for e in out] == [run.id]
    with pytest.raises(InvalidInput, match="direction"):
        lineage.edges("run", run.id, direction="up", client=tracking_client)


__all__ = ["population", *(name for name in dir() if name.startswith("test_"))]
