"""``kiln.batch_predict``: a registered model over a dataset, partition by partition."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _harness import FEATURES, frame

import kiln
from kiln.core import InvalidInput, NotFound


def register_lgbm(name: str = "fraud") -> kiln.registry.ModelVersion:
    x = frame(400, seed=1)
    y = (x["f0"] + x["f1"] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(x, y)
    version = kiln.models.register(name, model, input_example=x.head(5))
    kiln.models.set_alias(name, "champion", version=version.version)
    return version


def write_source(path: Path, rows: int = 5_000, group: int = 1_000) -> pd.DataFrame:
    df = frame(rows, seed=2)
    df["customer"] = np.arange(rows) * 10
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=group)
    return df


def parts_of(output: Path) -> pd.DataFrame:
    return pq.read_table(sorted(output.glob("part-*.parquet"))).to_pandas()


def test_a_dataset_is_scored_by_partition_on_processes_and_a_rerun_skips_what_is_written(
    tmp_path: Path,
) -> None:
    version = register_lgbm()
    source = tmp_path / "customers.parquet"
    df = write_source(source)
    output = tmp_path / "scores"
    result = kiln.batch_predict(
        "fraud@champion", source, output, partition_rows=2_000, max_parallel=2
    )
    assert result.model == version.ref and result.rows == 5_000
    assert len(result.parts) == 3 and result.skipped == 0  # 2,000 + 2,000 + 1,000 rows
    scores = parts_of(output)
    expected = kiln.models.load(version.ref).predict(df[list(FEATURES)])
    assert scores["row_id"].tolist() == list(range(5_000))
    np.testing.assert_allclose(scores["prediction"].to_numpy(), expected)
    assert set(scores["model_version"].astype(str)) == {version.ref}
    assert json.loads((output / "_SUCCESS.json").read_text())["rows"] == 5_000

    record = kiln.flows.get_run(result.run_id)
    assert record.flow == "batch_predict" and record.status == "finished"
    steps = sorted(t.task for t in kiln.flows.tasks(result.run_id))
    assert steps == [
        "commit_output",
        "plan_partitions",
        "resolve_model",
        *[f"score_partition[{i}]" for i in range(3)],
    ]

    (output / "part-00001.parquet").unlink()
    again = kiln.batch_predict("fraud@champion", source, output, partition_rows=2_000)
    assert again.skipped == 2 and again.rows == 5_000
    np.testing.assert_allclose(parts_of(output)["prediction"].to_numpy(), expected)

    # a source rewritten in place (same path, same row groups) is scored again
    write_source(source)
    rewritten = kiln.batch_predict("fraud@champion", source, output, partition_rows=2_000)
    assert rewritten.skipped == 0 and rewritten.rows == 5_000

    # a later job with fewer partitions leaves none of the earlier job's parts behind
    fewer = kiln.batch_predict("fraud@champion", source, output, partition_rows=5_000)
    assert len(fewer.parts) == 1 and fewer.skipped == 0
    assert sorted(p.name for p in output.glob("part-*")) == ["part-00000.parquet"]
    np.testing.assert_allclose(parts_of(output)["prediction"].to_numpy(), expected)


def test_ids_come_from_a_column_and_a_delta_table_is_a_source(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    version = register_lgbm()
    df = frame(3_000, seed=3)
    df["customer"] = np.arange(3_000) + 100
    table = tmp_path / "delta"
    write_deltalake(str(table), df.iloc[:1_500])
    write_deltalake(str(table), df.iloc[1_500:], mode="append")
    result = kiln.batch_predict(
        "fraud", table, tmp_path / "out", id_column="customer", executor="inline"
    )
    scores = parts_of(tmp_path / "out").sort_values("customer")
    assert result.rows == 3_000 and len(result.parts) == 2  # one per file
    assert scores["customer"].tolist() == list(range(100, 3_100))
    expected = kiln.models.load(version.ref).predict(df[list(FEATURES)])
    np.testing.assert_allclose(scores["prediction"].to_numpy(), expected)


def test_a_batch_job_is_in_the_lineage_of_the_model_it_used(tmp_path: Path) -> None:
    version = register_lgbm()
    source = tmp_path / "s.parquet"
    write_source(source, rows=500, group=500)
    result = kiln.batch_predict("fraud/1", source, tmp_path / "o", executor="inline")
    uses = kiln.tracking.lineage.edges("model_version", version.id, direction="out")
    readers = {e.dst_id for e in uses if e.relation == "input_to"}
    children = {t.child_run_id for t in kiln.flows.tasks(result.run_id)}
    assert readers and readers <= children


def test_the_same_job_runs_on_ray(tmp_path: Path, ray_cluster: object) -> None:
    version = register_lgbm()
    source = tmp_path / "s.parquet"
    df = write_source(source, rows=2_000, group=500)
    result = kiln.batch_predict(
        "fraud@champion", source, tmp_path / "o", executor="ray", partition_rows=1_000
    )
    assert result.rows == 2_000 and len(result.parts) == 2
    expected = kiln.models.load(version.ref).predict(df[list(FEATURES)])
    np.testing.assert_allclose(parts_of(tmp_path / "o")["prediction"].to_numpy(), expected)


def test_mistakes_are_named(tmp_path: Path) -> None:
    register_lgbm()
    source = tmp_path / "s.parquet"
    pq.write_table(pa.table({"f0": [1.0], "f1": [2.0]}), source)
    with pytest.raises(NotFound, match="nope"):
        kiln.batch_predict("nope@champion", source, tmp_path / "o", executor="inline")
    with pytest.raises(InvalidInput, match="partition_rows must be an integer >= 1; got 0"):
        kiln.batch_predict("fraud", source, tmp_path / "o", partition_rows=0)
    with pytest.raises(kiln.flows.FlowFailed, match="lacks the model's input column 'f2'"):
        kiln.batch_predict("fraud", source, tmp_path / "o", executor="inline")
    with pytest.raises(kiln.flows.FlowFailed, match="does not exist"):
        kiln.batch_predict("fraud", tmp_path / "missing", tmp_path / "o", executor="inline")


def test_a_spine_gets_its_point_in_time_features_before_it_is_scored(tmp_path: Path) -> None:
    """Each spine row is scored on the feature values known at its own timestamp."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 1, tzinfo=UTC)
    users = np.arange(50)
    history = pd.DataFrame(
        {
            "user_id": np.concatenate([users, users]),
            "event_timestamp": [start] * 50 + [start + timedelta(hours=2)] * 50,
            "f0": np.concatenate([users * 0.1, users * -0.1]),
            "f1": np.concatenate([np.ones(50), -np.ones(50)]),
        }
    )
    history.to_parquet(tmp_path / "stats.parquet")
    user = kiln.Entity("user", join_keys=["user_id"])
    stats = kiln.FeatureView(
        "user_stats",
        entities=[user],
        ttl="1d",
        source=kiln.ParquetSource(str(tmp_path / "stats.parquet"), timestamp="event_timestamp"),
    )
    kiln.FeatureStore().apply([user, stats])
    x = pd.DataFrame({"f0": np.linspace(-5, 5, 200), "f1": np.linspace(-1, 1, 200)})
    model = lgb.LGBMRegressor(n_estimators=10, min_child_samples=5, verbose=-1)
    version = kiln.models.register("spend", model.fit(x, x["f0"] + x["f1"]), input_example=x[:5])
    spine = pd.DataFrame(
        {
            "user_id": np.concatenate([users, users]),
            "event_timestamp": [start + timedelta(hours=1)] * 50
            + [start + timedelta(hours=3)] * 50,
            "request": np.arange(100),
        }
    )
    spine.to_parquet(tmp_path / "spine.parquet")
    result = kiln.batch_predict(
        "spend",
        tmp_path / "spine.parquet",
        tmp_path / "out",
        features=["user_stats:f0", "user_stats:f1"],
        id_column="request",
        executor="inline",
    )
    scores = parts_of(tmp_path / "out").sort_values("request")
    early, late = history.iloc[:50], history.iloc[50:]
    seen = pd.concat([early, late])[["f0", "f1"]].reset_index(drop=True)
    expected = kiln.models.load(version.ref).predict(seen)
    assert result.rows == 100 and scores["request"].tolist() == list(range(100))
    np.testing.assert_allclose(scores["prediction"].to_numpy(), expected)


def test_the_job_runs_from_the_command_line_as_a_flow(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    version = register_lgbm()
    source = tmp_path / "s.parquet"
    write_source(source, rows=1_000, group=500)
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "flows", "run", "kiln.serving.batch:batch_scoring",
         "--param", "model=fraud@champion", "--param", f"source={source}",
         "--param", f"output={tmp_path / 'out'}", "--param", "partition_rows=500",
         "--max-parallel", "2"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "finished: 5 tasks" in done.stdout  # resolve, plan, 2 partitions, commit
    scores = parts_of(tmp_path / "out")
    assert len(scores) == 1_000 and set(scores["model_version"].astype(str)) == {version.ref}
