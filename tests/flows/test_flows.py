"""Flows end to end: graph checks, outputs, the step cache, retries, resume, executors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _pipelines import (
    chain,
    dying,
    dynamic_fan,
    fan,
    linear,
    ran,
    retrying,
    slow,
    train_and_register,
    weighted,
)

import kiln
from kiln.flows import FlowDefinitionError, FlowFailed


def work_dir(tmp_path: Path) -> str:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return str(work)


# -- the graph, checked before anything runs -------------------------------------------------


@kiln.step
def produce(n: int) -> str:
    return str(n)


@kiln.step
def consume(x: int) -> int:
    return x + 1


@kiln.step
def pair(n: int) -> tuple[int, int]:
    return n, n + 1


@kiln.step
def anything(n: int):  # type: ignore[no-untyped-def]
    return n


def build(body: Any) -> None:
    kiln.flow(body).graph()


def test_a_missing_argument_is_reported_at_its_line_before_anything_runs() -> None:
    def missing() -> None:
        consume()  # type: ignore[call-arg]

    with pytest.raises(FlowDefinitionError, match=r"test_flows\.py:\d+: step 'consume'.*'x'"):
        build(missing)


def test_an_output_whose_type_cannot_match_the_parameter_is_refused() -> None:
    def mismatched() -> None:
        consume(produce(3))

    with pytest.raises(FlowDefinitionError) as info:
        build(mismatched)
    message = str(info.value)
    assert "test_flows.py:" in message and "parameter 'x' takes int" in message
    assert "returns str" in message


def test_unpacking_needs_a_tuple_annotation_and_branching_on_an_output_is_refused() -> None:
    def unpacked() -> None:
        a, b = pair(1)
        consume(a)
        consume(b)

    assert len(kiln.flow(unpacked).graph().nodes) == 3

    def unannotated() -> None:
        first, second = anything(1)
        consume(first)
        consume(second)

    with pytest.raises(FlowDefinitionError, match="annotate it as tuple"):
        build(unannotated)

    def branching() -> None:
        if anything(1):
            consume(1)

    with pytest.raises(FlowDefinitionError, match="cannot branch on it"):
        build(branching)


def test_map_needs_a_list_and_lists_of_one_length() -> None:
    def no_list() -> None:
        consume.map(x=1)

    with pytest.raises(FlowDefinitionError, match="needs a list argument"):
        build(no_list)

    @kiln.step
    def add(a: int, b: int) -> int:
        return a + b

    def uneven() -> None:
        add.map(a=[1, 2], b=[1, 2, 3])

    with pytest.raises(FlowDefinitionError, match="a=2, b=3"):
        build(uneven)


def test_flow_parameters_are_checked_and_converted_from_text(tmp_path: Path) -> None:
    with pytest.raises(kiln.errors.InvalidInput, match="no parameter 'dayz'"):
        linear.params({"work": "w", "dayz": 3})
    with pytest.raises(kiln.errors.InvalidInput, match="needs parameter 'work'"):
        linear.params({})
    assert linear.params({"work": "w", "n": "4", "scale": "0.5"}, from_text=True) == {
        "work": "w",
        "n": 4,
        "scale": 0.5,
    }
    with pytest.raises(kiln.errors.InvalidInput, match=r"--param n=four: int expected"):
        linear.params({"work": "w", "n": "four"}, from_text=True)


# -- running -----------------------------------------------------------------------------------


def test_a_linear_flow_runs_inline_with_typed_outputs_and_tracked_runs(tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    run = linear.run(work=work, n=10, scale=2.0, executor="inline")
    assert run.result == {"mean": 9.0, "count": 10}
    assert ran(work) == ["load", "features", "summarize", "report"]
    tasks = {t.task: t for t in run.tasks()}
    assert set(tasks) == {"load", "features", "summarize", "report"}
    assert all(t.status == "finished" and t.attempts == 1 for t in tasks.values())
    assert tasks["load"].output is not None and tasks["load"].output.kind == "parquet"
    assert tasks["features"].output is not None and tasks["features"].output.kind == "npy"
    assert tasks["report"].output is not None and tasks["report"].output.is_inline

    flow_run = kiln.runs.get(run.id)  # the flow run is a tracked run...
    assert flow_run.status == "FINISHED" and flow_run.params["n"] == 10
    child = kiln.runs.get(tasks["load"].child_run_id or "")  # ...and each task a child
    assert child.parent_id == run.id and child.params == {"work": work, "n": 10}
    logs = {log.task: log for log in kiln.flows.task_logs(run.id)}
    assert logs["load"].stdout == "loading 10 rows\n"
    assert kiln.flows.get_run(run.id).status == "finished"
    # each task's output is an artifact of its run: the stored blob itself, not a copy
    artifacts = {
        name: {a.path: a.digest for a in kiln.runs.list_artifacts(tasks[name].child_run_id or "")}
        for name in ("load", "features", "report")
    }
    assert artifacts["load"]["output.parquet"] == tasks["load"].output.digest
    assert artifacts["features"]["output.npy"] == tasks["features"].output.digest
    assert set(artifacts["report"]) == set()  # a small JSON value stays inline: no blob


def test_a_rerun_is_served_from_the_cache_and_a_change_reruns_only_what_it_reaches(
    tmp_path: Path,
) -> None:
    work = work_dir(tmp_path)
    first = linear.run(work=work, n=10, scale=2.0, executor="inline")
    again = linear.run(work=work, n=10, scale=2.0, executor="inline")
    assert again.result == first.result
    assert {t.status for t in again.tasks()} == {"cached"}
    assert ran(work) == ["load", "features", "summarize", "report"]  # nothing ran again

    changed = linear.run(work=work, n=10, scale=3.0, executor="inline")
    assert changed.result == {"mean": 13.5, "count": 10}
    statuses = {t.task: t.status for t in changed.tasks()}
    assert statuses == {
        "load": "cached",  # its inputs did not change
        "features": "finished",
        "summarize": "finished",
        "report": "finished",
    }
    uncached = linear.run(work=work, n=10, scale=3.0, executor="inline", cache=False)
    assert {t.status for t in uncached.tasks()} == {"finished"}


def test_a_failed_step_is_retried_and_every_attempt_is_recorded(tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    run = retrying.run(work=work, executor="inline")
    assert run.result == "ok after 3"
    (task,) = run.tasks()
    assert task.attempts == 3 and task.status == "finished"
    errors = [h.get("error") for h in task.history]
    assert errors == ["ValueError: attempt 1 fails", "ValueError: attempt 2 fails", None]
    assert "Traceback" in (task.history[0].get("traceback") or "")


def test_a_failed_run_resumes_without_recomputing_what_finished(tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    (Path(work) / "fail-features").touch()
    with pytest.raises(FlowFailed) as info:
        linear.run(work=work, executor="inline", cache=False)
    failed = info.value
    assert failed.status == "failed" and f"kiln flows resume {failed.run_id}" in str(failed)
    assert "features failed on purpose" in str(failed)
    assert kiln.flows.get_run(failed.run_id).status == "failed"
    assert kiln.runs.get(failed.run_id).status == "FAILED"

    (Path(work) / "fail-features").unlink()
    resumed = linear.resume(failed.run_id, executor="inline", cache=False)
    assert resumed.id == failed.run_id
    assert resumed.result == {"mean": 9.0, "count": 10}
    assert ran(work) == ["load", "features", "features", "summarize", "report"]  # load once
    assert kiln.flows.get_run(failed.run_id).status == "finished"
    assert kiln.runs.get(failed.run_id).status == "FINISHED"
    with pytest.raises(kiln.errors.InvalidInput, match="already finished"):
        linear.resume(failed.run_id, executor="inline")


def test_values_of_every_kind_round_trip_through_the_store(tmp_path: Path) -> None:
    import polars as pl

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=pd.Index([10, 20], name="id"))
    polars_frame = pl.DataFrame({"a": [1, None, 3], "b": ["x", "y", None], "c": [0.5, 1.5, 2.5]})

    @kiln.step
    def echo(value: Any) -> Any:
        return value

    values: dict[str, Any] = {
        "frame": frame,
        "table": pa.table({"a": [1.5, None]}),
        "polars": polars_frame,
        "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "plain": {"k": [1, 2.5, "s", None, True]},
        "tuple": (1, "a"),
        "object": Path("/tmp/x"),
    }

    @kiln.flow
    def round_trip() -> dict[str, Any]:
        return {name: echo(value) for name, value in values.items()}

    round_trip_run = round_trip.run(executor="inline")
    result = round_trip_run.result
    pd.testing.assert_frame_equal(result["frame"], frame)
    assert result["table"].equals(values["table"])
    assert isinstance(result["polars"], pl.DataFrame) and result["polars"].equals(polars_frame)
    stored = {t.task: t.output for t in kiln.flows.tasks(round_trip_run.id)}
    polars_ref = stored["echo-3"]  # the third value: Parquet, read back as Polars
    assert polars_ref is not None and (polars_ref.kind, polars_ref.frame) == ("parquet", "polars")
    np.testing.assert_array_equal(result["array"], values["array"])
    assert result["array"].dtype == np.int32
    assert result["plain"] == values["plain"]
    assert result["tuple"] == (1, "a") and result["object"] == Path("/tmp/x")


# -- local processes -------------------------------------------------------------------------


def test_a_fan_out_runs_on_worker_processes_and_fans_in_lazily(tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    run = fan.run(work=work, n=20, executor="processes", max_parallel=2)
    assert run.result == sum(i * i for i in range(20))
    keys = sorted(t.task for t in run.tasks())
    assert keys == sorted([*(f"square[{i}]" for i in range(20)), "total"])
    assert sorted(ran(work)) == sorted([*(f"square-{i}" for i in range(20)), "total"])


def test_a_fan_out_over_an_upstream_output_expands_when_it_is_known(tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    run = dynamic_fan.run(work=work, n=5, executor="processes", max_parallel=2)
    assert run.result == 0 + 1 + 4 + 9 + 16
    assert sorted(t.task for t in run.tasks()) == sorted(
        ["numbers", "total", *(f"square[{i}]" for i in range(5))]
    )


def test_a_worker_killed_mid_step_counts_as_a_failed_attempt_and_is_retried(
    tmp_path: Path,
) -> None:
    work = work_dir(tmp_path)
    run = dying.run(work=work, executor="processes", max_parallel=1)
    assert run.result == 7
    (task,) = run.tasks()
    assert task.attempts == 2
    assert "died (SIGKILL)" in (task.history[0].get("error") or "")


def test_a_step_past_its_timeout_is_killed_and_fails_the_run(tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    with pytest.raises(FlowFailed, match="timed out after 1 s"):
        slow.run(work=work, seconds=30.0, executor="processes", max_parallel=1)


def test_cancelling_a_run_stops_it_and_leaves_it_resumable(tmp_path: Path) -> None:
    import threading

    work = work_dir(tmp_path)
    started: list[str] = []
    outcome: list[BaseException] = []

    def go() -> None:
        try:
            chain.run(
                work=work,
                steps=20,
                seconds=0.2,
                executor="processes",
                max_parallel=1,
                on_start=started.append,
            )
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    for _ in range(200):
        if started and len(ran(work)) >= 2:
            break
        threading.Event().wait(0.05)
    kiln.flows.request_cancel(started[0])
    thread.join(30)
    assert outcome and isinstance(outcome[0], FlowFailed) and outcome[0].status == "cancelled"
    assert kiln.flows.get_run(started[0]).status == "cancelled"
    done = len(ran(work))
    assert done < 20
    resumed = chain.resume(started[0], executor="inline")
    assert resumed.result == 20


def test_invalidating_a_step_recomputes_it_and_only_it(tmp_path: Path) -> None:
    from _pipelines import summarize

    work = work_dir(tmp_path)
    linear.run(work=work, n=6, executor="inline")
    assert summarize.invalidate() == 1
    again = linear.run(work=work, n=6, executor="inline")
    statuses = {t.task: t.status for t in again.tasks()}
    assert statuses == {
        "load": "cached",
        "features": "cached",
        "summarize": "finished",  # forgotten: computed again
        "report": "cached",  # same inputs as before: its output is still known
    }


def test_resume_refuses_another_flows_run_and_unknown_executors_are_named(
    tmp_path: Path,
) -> None:
    work = work_dir(tmp_path)
    (Path(work) / "fail-features").touch()
    with pytest.raises(FlowFailed) as info:
        linear.run(work=work, executor="inline")
    with pytest.raises(kiln.errors.InvalidInput, match="is a run of flow 'linear', not 'fan'"):
        fan.resume(info.value.run_id, executor="inline")
    with pytest.raises(kiln.errors.NotFound, match="no flow run 'nope'"):
        linear.resume("nope", executor="inline")
    with pytest.raises(kiln.errors.InvalidInput, match="known: inline, processes, ray"):
        linear.run(work=work, executor="threads")


def test_unmapped_lists_go_whole_to_every_task_and_uneven_fan_outs_are_refused(
    tmp_path: Path,
) -> None:
    work = work_dir(tmp_path)
    run = weighted.run(work=work, n=3, count=3, executor="inline")
    assert run.result == (0 * 6 + 0) + (1 * 6 + 1) + (2 * 6 + 2)
    with pytest.raises(
        FlowFailed,
        match=r"weigh.map\(\) fans out over items of different "
        r"lengths \(x=4, shift=3\); wrap a list meant for every task in unmapped",
    ):
        weighted.run(work=work, n=4, count=3, executor="inline")


def test_a_model_registered_in_a_step_leads_to_its_step_its_flow_run_and_what_the_flow_read(
    tmp_path: Path,
) -> None:
    kiln.lineage.add_edge("feature_view", "user_stats@v2", "input_to", "dataset", "train@abc123")
    run = train_and_register.run(n=20, executor="processes", max_parallel=1)
    assert run.result == "flow-model/1"
    graph = kiln.models.lineage("flow-model/1")
    tasks = {t.step: t for t in run.tasks()}
    assert graph.run is not None and graph.run.id == tasks["fit_and_register"].child_run_id
    assert graph.run.kind == "flow_step"
    (flow_run,) = graph.parents
    assert (flow_run.kind, flow_run.id, flow_run.attributes["flow"]) == (
        "flow_run",
        run.id,
        "train_and_register",
    )
    (dataset,) = graph.inputs  # read by another step of the same flow run
    assert (dataset.kind, dataset.id, dataset.label) == ("dataset", "train@abc123", "train")
    assert [(c.kind, c.id) for c in dataset.children] == [("feature_view", "user_stats@v2")]
