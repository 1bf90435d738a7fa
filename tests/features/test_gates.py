"""Quality gates on feature views: ``checks=`` validates a view's rows at apply (all of
them) and at materialize (those about to go online); a failing view stops alone, with its
report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import kiln
from kiln.validation import ValidationFailed, infer_schema, profile

NOW = datetime.now(UTC)


def users(categories: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4],
            "event_timestamp": [NOW - timedelta(hours=h) for h in (40, 30, 20, 3)],
            "spend": [10.0, 200.0, 35.0, 15.0],
            "segment": categories,
        }
    )


GOOD = users(["new", "loyal", "new", "loyal"])
CHECKS = infer_schema(profile(GOOD))  # its event_timestamp rule is the engine's: left out


def views(tmp_path: Path) -> tuple[kiln.Entity, kiln.FeatureView, kiln.FeatureView]:
    user = kiln.Entity("user", join_keys=["user_id"])
    gated = kiln.FeatureView(
        "user_stats",
        entities=[user],
        source=kiln.ParquetSource(str(tmp_path / "users.parquet")),
        ttl="7d",
        checks=CHECKS,
    )
    plain = kiln.FeatureView(
        "user_plain",
        entities=[user],
        source=kiln.ParquetSource(str(tmp_path / "plain.parquet")),
        ttl="7d",
    )
    return user, gated, plain


def test_a_view_whose_rows_pass_applies_and_materializes_with_its_report(tmp_path: Path) -> None:
    GOOD.to_parquet(tmp_path / "users.parquet")
    GOOD.to_parquet(tmp_path / "plain.parquet")
    fs = kiln.FeatureStore()
    fs.apply(views(tmp_path))
    assert fs.get("user_stats").checks == CHECKS  # kept with the definition
    report = fs.materialize(end=NOW)
    assert report.ok
    gated = next(r for r in report if r.view == "user_stats")
    assert gated.validation is not None and gated.validation.ok and gated.entities == 4
    assert next(r for r in report if r.view == "user_plain").validation is None


def test_a_view_whose_new_rows_fail_stops_alone_with_its_report(tmp_path: Path) -> None:
    GOOD.to_parquet(tmp_path / "users.parquet")
    GOOD.to_parquet(tmp_path / "plain.parquet")
    fs = kiln.FeatureStore()
    fs.apply(views(tmp_path))
    users(["new", "crypto", "new", "loyal"]).to_parquet(tmp_path / "users.parquet")
    report = fs.materialize(end=NOW)
    assert [r.view for r in report] == ["user_plain"]  # the other view still went online
    (failure,) = report.failures
    assert failure.view == "user_stats"
    assert "feature view 'user_stats' (materialize) failed validation" in failure.error
    assert "segment: domain" in failure.error and "'crypto' x1" in failure.error
    assert failure.validation is not None and not failure.validation.ok
    assert fs.get_online_features([{"user_id": 2}], ["user_stats:segment"])["segment"] == [None]


def test_apply_refuses_a_view_whose_rows_fail_and_stores_nothing(tmp_path: Path) -> None:
    users(["new", "loyal", None, "loyal"]).to_parquet(tmp_path / "users.parquet")  # type: ignore[list-item]
    GOOD.to_parquet(tmp_path / "plain.parquet")
    fs = kiln.FeatureStore()
    with pytest.raises(ValidationFailed, match=r"feature view 'user_stats' \(apply\)") as info:
        fs.apply(views(tmp_path))
    assert "segment: missing_rate" in str(info.value)
    assert fs.list_definitions() == []
    with pytest.raises(kiln.errors.InvalidInput, match="'checks' parameter of FeatureView"):
        kiln.FeatureView(
            "v",
            entities=[kiln.Entity("user", join_keys=["user_id"])],
            source=kiln.ParquetSource(str(tmp_path / "users.parquet")),
            checks="schema.json",
        )


def test_a_views_rows_and_a_training_set_are_profiled(tmp_path: Path) -> None:
    GOOD.to_parquet(tmp_path / "users.parquet")
    GOOD.to_parquet(tmp_path / "plain.parquet")
    fs = kiln.FeatureStore()
    fs.apply(views(tmp_path))
    rows = fs.profile("user_stats")
    assert list(rows.columns) == ["user_id", "spend", "segment"]  # keys and features
    assert rows["spend"].mean == GOOD.spend.mean() and rows["segment"].distinct == 2
    spine = pd.DataFrame({"user_id": [1, 2], "event_timestamp": [NOW, NOW]})
    training = fs.get_historical_features(spine, ["user_stats:spend"])
    assert profile(training)["spend"].count == 2  # anything with to_arrow()
    not_a_view = r"'user' is not a feature view \(its kind: entity\)"
    with pytest.raises(kiln.errors.InvalidInput, match=not_a_view):
        fs.profile("user")
