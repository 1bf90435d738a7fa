"""Quality gates on steps: ``@step(checks=...)`` validates arguments and return values,
keeps each report on the task's run, fails the task with a readable report, and a changed
schema runs the step again."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

import kiln
from kiln.errors import InvalidInput
from kiln.flows import FlowFailed
from kiln.validation import ValidationFailed, infer_schema, profile

GOOD = pd.DataFrame({"amount": [10.0, 20.0, 30.0], "category": ["a", "b", "a"]})
INPUT = infer_schema(profile(GOOD))
OUTPUT = infer_schema(profile(GOOD.assign(double=GOOD.amount * 2)))


@kiln.step
def load(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


@kiln.step(checks={"df": INPUT, "return": OUTPUT})
def enrich(df: pd.DataFrame, factor: float = 2.0) -> pd.DataFrame:
    return df.assign(double=df.amount * factor)


@kiln.flow
def pipeline(rows: list[dict[str, Any]], factor: float = 2.0) -> pd.DataFrame:
    return enrich(load(rows), factor=factor)


def reports(run_id: str) -> dict[str, Any]:
    (task,) = [t for t in kiln.flows.tasks(run_id) if t.task == "enrich"]
    child = task.child_run_id or ""
    stored = {a.path for a in kiln.runs.list_artifacts(child)}
    return {"tags": kiln.runs.get(child).tags, "artifacts": stored}


@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_data_that_passes_the_gates_flows_on_with_the_reports_kept(executor: str) -> None:
    run = pipeline.run(rows=GOOD.to_dict("records"), executor=executor)
    assert list(run.result.double) == [20.0, 40.0, 60.0]
    kept = reports(run.id)
    assert kept["tags"]["kiln.validation.df"] == "passed"
    assert kept["tags"]["kiln.validation.return"] == "passed"
    assert {"validation/df.json", "validation/return.json"} <= kept["artifacts"]


def test_a_failing_gate_fails_the_step_with_its_report() -> None:
    bad = GOOD.assign(category=["a", "crypto", "a"]).to_dict("records")
    with pytest.raises(
        FlowFailed, match=r"argument 'df' of step 'enrich' failed validation"
    ) as info:
        pipeline.run(rows=bad, executor="inline")
    assert "category: domain: expected one of 2 value(s) ('a', 'b')" in str(info.value)
    kept = reports(info.value.run_id)
    assert kept["tags"]["kiln.validation.df"] == "failed"
    assert "validation/df.json" in kept["artifacts"]
    # the value is checked too: a factor that leaves the values missing fails its gate
    with pytest.raises(FlowFailed, match=r"the value step 'enrich' returned failed validation"):
        pipeline.run(rows=GOOD.to_dict("records"), factor=float("nan"), executor="inline")


def test_called_outside_a_flow_the_step_is_gated_the_same() -> None:
    assert list(enrich(GOOD).double) == [20.0, 40.0, 60.0]
    with pytest.raises(ValidationFailed, match="argument 'df' of step 'enrich'"):
        enrich(GOOD.drop(columns=["category"]))


def test_a_changed_schema_changes_the_cache_key_and_mistakes_are_named() -> None:
    wider = kiln.step(checks={"df": INPUT.with_column("amount", max=1e6)})(enrich.fn)
    assert wider.code_hash != enrich.code_hash
    assert kiln.step(enrich.fn).code_hash != enrich.code_hash
    with pytest.raises(InvalidInput, match="checks names 'frame', which is not a parameter"):
        kiln.step(checks={"frame": INPUT})(enrich.fn)
    with pytest.raises(InvalidInput, match=r"checks\['df'\] must be a kiln.validation.Schema"):
        kiln.step(checks={"df": {"amount": "float"}})(enrich.fn)
    with pytest.raises(InvalidInput, match="maps argument names"):
        kiln.step(checks=[INPUT])(enrich.fn)  # type: ignore[arg-type]
