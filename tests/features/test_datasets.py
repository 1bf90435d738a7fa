"""Training-set snapshots: Delta table, content hash, lineage from views to the model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import deltalake
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import InvalidInput


@pytest.fixture
def store(tmp_path: Path) -> kiln.FeatureStore:
    now = datetime.now(UTC)
    pd.DataFrame(
        {
            "user_id": [1, 2, 3, 1],
            "event_timestamp": [now - timedelta(hours=h) for h in (48, 30, 20, 3)],
            "spend": [10.0, 200.0, 35.0, 15.0],
        }
    ).to_parquet(tmp_path / "users.parquet")
    user = kiln.Entity("user", join_keys=["user_id"])
    view = kiln.FeatureView(
        "user_stats",
        entities=[user],
        source=kiln.ParquetSource(str(tmp_path / "users.parquet")),
        schema=[kiln.Field("spend", "float64")],
        ttl="7d",
    )
    fs = kiln.FeatureStore()
    fs.apply([user, view])
    return fs


def test_snapshot_is_a_hashed_delta_table_in_the_model_lineage(store: kiln.FeatureStore) -> None:
    now = datetime.now(UTC)
    spine = pd.DataFrame(
        {"user_id": [1, 2, 3, 1], "event_timestamp": [now] * 4, "label": [0, 1, 0, 1]}
    )
    training = store.get_historical_features(spine, ["user_stats:spend"])
    assert training.feature_views == {"user_stats": 1}
    with kiln.start_run("fraud") as run:
        snapshot = training.save("fraud_train", run=run)
        frame = training.to_pandas()
        model = LogisticRegression().fit(frame[["spend"]], frame["label"])
        mv = kiln.models.register("fraud", model, input_example=frame[["spend"]][:2], run=run)
    assert snapshot.rows == 4 and snapshot.id == f"fraud_train@{snapshot.digest[:16]}"
    stored = deltalake.DeltaTable(str(snapshot.path)).to_pyarrow_table()
    assert stored.equals(training.to_arrow())
    assert snapshot.to_arrow().equals(stored)
    # Same rows, same digest: saving again is a new Delta version of identical content.
    again = training.save("fraud_train")
    assert again.digest == snapshot.digest and again.delta_version == snapshot.delta_version + 1
    assert snapshot.to_arrow().num_rows == again.to_arrow().num_rows == 4

    # the rows' profile is kept as the reference later data is compared with, and the
    # model version reaches it through its lineage
    reference = snapshot.reference_profile()
    assert reference.to_dict()["columns"] == kiln.validation.profile(stored).to_dict()["columns"]
    assert again.profile == snapshot.profile  # same rows, same profile

    graph = kiln.models.lineage(mv.ref)
    inputs = {(n.kind, n.id) for n in graph.inputs}
    assert ("dataset", snapshot.id) in inputs
    dataset = next(n for n in graph.inputs if n.kind == "dataset")
    assert dataset.attributes["profile"] == snapshot.profile
    assert kiln.models.reference_profile(mv.ref) == reference
    upstream = kiln.lineage.edges("dataset", snapshot.id, direction="in")
    assert [(e.src_kind, e.src_id) for e in upstream] == [("feature_view", "user_stats@v1")]
    with pytest.raises(InvalidInput, match="dataset names"):
        training.save("no/slashes")
