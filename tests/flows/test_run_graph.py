"""What the dashboard reads of flows: a run's graph, pages of runs, and who cancelled or
resumed a run (resumed in a process of its own)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _pipelines import dynamic_fan, linear, ran

import kiln
from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.flows import FlowFailed, FlowGraph

HERE = Path(__file__).parent


def _work(tmp_path: Path) -> str:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return str(work)


def test_a_run_records_its_graph_as_it_starts(tmp_path: Path) -> None:
    run = linear.run(work=_work(tmp_path), executor="inline")
    graph = kiln.flows.run_graph(run.id)
    assert graph.recorded and graph.flow == "linear" and graph.run_id == run.id
    assert [n.name for n in graph.nodes] == ["load", "features", "summarize", "report"]
    assert graph.edges == [("load", "features"), ("features", "summarize"), ("summarize", "report")]
    assert graph.nodes[0].site.startswith(str(HERE / "_pipelines.py") + ":")

    fanned = dynamic_fan.run(work=_work(tmp_path), n=3, executor="inline")
    graph = kiln.flows.run_graph(fanned.id)
    assert [(n.name, n.mapped) for n in graph.nodes] == [
        ("numbers", False),
        ("square", True),
        ("total", False),
    ]
    assert graph.edges == [("numbers", "square"), ("square", "total")]
    tasks = {t.task for t in kiln.flows.tasks(fanned.id)}
    assert {FlowGraph.node_of(t) for t in tasks} == {"numbers", "square", "total"}
    assert FlowGraph.node_of("square[2]") == "square"


def test_a_run_without_a_stored_graph_is_rebuilt_from_its_flow(tmp_path: Path) -> None:
    from kiln.flows._records import create_run, set_run_status
    from kiln.tracking import default_client

    client = default_client()
    with kiln.start_run(experiment="old") as tracked:
        create_run(
            client,
            tracked.id,
            flow="linear",
            target="_pipelines:linear",
            params={"work": _work(tmp_path), "n": 3, "scale": 1.0},
            executor="inline",
        )
    graph = kiln.flows.run_graph(tracked.id)
    assert not graph.recorded and graph.nodes[0].name == "load"
    with kiln.start_run(experiment="old") as gone:
        create_run(client, gone.id, flow="x", target="nowhere:x", params={}, executor="inline")
    with pytest.raises(NotFound, match=r"stored no graph.*cannot import 'nowhere'"):
        kiln.flows.run_graph(gone.id)
    set_run_status(client, gone.id, "failed")
    with pytest.raises(InvalidInput, match="cannot import 'nowhere'"):
        kiln.flows.start_resume(gone.id)  # refused before anything starts
    assert kiln.flows.get_run(gone.id).status == "failed"
    with pytest.raises(NotFound, match="no flow run 'nope'"):
        kiln.flows.run_graph("nope")


def test_runs_come_in_pages_newest_first(tmp_path: Path) -> None:
    ids = [linear.run(work=_work(tmp_path), n=2, executor="inline").id for _ in range(3)]
    assert [r.id for r in kiln.flows.list_runs(limit=2)] == ids[::-1][:2]
    assert [r.id for r in kiln.flows.list_runs(limit=2, offset=2)] == ids[:1]
    assert kiln.flows.list_runs(limit=2, offset=3) == []
    for bad in ({"limit": 0}, {"offset": -1}, {"offset": True}):
        with pytest.raises(InvalidInput, match="list_runs"):
            kiln.flows.list_runs(**bad)  # type: ignore[arg-type]


def test_cancel_records_who_asked(tmp_path: Path) -> None:
    run = linear.run(work=_work(tmp_path), n=2, executor="inline")
    # A finished run is returned unchanged, and nothing is recorded.
    assert not kiln.flows.request_cancel(run.id, actor="kiln ui").cancel_requested
    assert "kiln.flow.cancel_requested_by" not in kiln.runs.get(run.id).tags

    from kiln.flows._records import create_run
    from kiln.tracking import default_client

    with kiln.start_run(experiment="live") as tracked:  # a run whose process is alive
        create_run(
            default_client(),
            tracked.id,
            flow="linear",
            target="_pipelines:linear",
            params={},
            executor="inline",
        )
        record = kiln.flows.request_cancel(tracked.id, actor="kiln ui", reason="too slow")
        assert record.cancel_requested and record.status == "running"
        tag = kiln.runs.get(tracked.id).tags["kiln.flow.cancel_requested_by"]
        assert tag.startswith("kiln ui at ") and tag.endswith(": too slow")
        with pytest.raises(Conflict, match="still running"):
            kiln.flows.start_resume(tracked.id)


def test_start_resume_runs_the_rest_in_its_own_process(tmp_path: Path) -> None:
    work = _work(tmp_path)
    (Path(work) / "fail-features").touch()
    with pytest.raises(FlowFailed) as info:
        linear.run(work=work, executor="inline", cache=False)
    run_id = info.value.run_id
    (Path(work) / "fail-features").unlink()
    started = kiln.flows.start_resume(
        run_id, workdir=HERE, actor="tester", reason="fixed the input"
    )
    assert started.argv[3:] == ("flows", "resume", run_id, "--executor", "inline")
    assert kiln.flows.get_run(run_id).status == "running"
    with pytest.raises(Conflict, match=r"started again|still running"):
        kiln.flows.start_resume(run_id, workdir=HERE)
    tags = kiln.runs.get(run_id).tags
    assert tags["kiln.flow.resumed_by"].startswith("tester at ")
    assert tags["kiln.flow.resumed_by"].endswith(": fixed the input")

    deadline = time.monotonic() + 90
    while kiln.flows.get_run(run_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kiln.flows.get_run(run_id).status == "finished", started.log.read_text()
    assert ran(work) == ["load", "features", "features", "summarize", "report"]
    assert "tester resumes run " + run_id in started.log.read_text()
    with pytest.raises(InvalidInput, match="already finished"):
        kiln.flows.start_resume(run_id, workdir=HERE)
