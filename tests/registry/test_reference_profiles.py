"""A model version's reference profile and the quality gate on its training data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.validation import ValidationFailed, infer_schema, profile


def data(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"amount": rng.gamma(2.0, 50.0, 200), "items": rng.integers(1, 9, 200)})


def model(df: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression().fit(df, (df.amount > 100).astype(int))


def test_training_data_gives_the_version_its_reference_profile() -> None:
    df = data()
    mv = kiln.models.register("fraud", model(df), input_example=df[:2], training_data=df)
    reference = kiln.models.reference_profile("fraud/1")
    assert reference.to_dict()["columns"] == profile(df).to_dict()["columns"]
    assert mv.tags["kiln.reference_profile"] == profile(df).save()
    edges = kiln.lineage.edges("model_version", mv.id, direction="in")
    assert ("profile", mv.tags["kiln.reference_profile"]) in {(e.src_kind, e.src_id) for e in edges}


def test_a_failing_gate_refuses_the_registration_and_keeps_the_report_on_the_run() -> None:
    schema = infer_schema(profile(data()))
    good = data(1).assign(amount=lambda d: d.amount.clip(schema["amount"].min, 300.0))
    with kiln.start_run("fraud") as run:
        kiln.models.register(
            "fraud", model(good), input_example=good[:2], training_data=good, checks=schema
        )
    bad = data(2).astype({"items": float})  # the type changed
    refused = "the training data of model 'fraud' failed"
    with kiln.start_run("fraud") as run, pytest.raises(ValidationFailed, match=refused):
        kiln.models.register(
            "fraud", model(bad), input_example=bad[:2], training_data=bad, checks=schema
        )
    assert [v.version for v in kiln.models.list_versions("fraud")] == [1]  # nothing stored
    stored = {a.path for a in kiln.runs.list_artifacts(run.id)}
    assert "validation/training_data.json" in stored


def test_mistakes_and_a_version_without_reference() -> None:
    df = data()
    schema = infer_schema(profile(df))
    with pytest.raises(InvalidInput, match="checks= validates training_data="):
        kiln.models.register("fraud", model(df), input_example=df[:2], checks=schema)
    with pytest.raises(InvalidInput, match=r"checks must be a kiln\.validation\.Schema"):
        kiln.models.register(
            "fraud", model(df), input_example=df[:2], training_data=df, checks={"a": 1}
        )
    kiln.models.register("fraud", model(df), input_example=df[:2])
    with pytest.raises(NotFound, match="model fraud/1 has no reference profile"):
        kiln.models.reference_profile("fraud/1")
