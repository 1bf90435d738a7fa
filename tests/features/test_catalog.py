"""The feature catalog on SQLite and PostgreSQL: plan, apply, versions, references, rebuild."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.features import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    ParquetSource,
    PushSource,
    RequestSource,
    WindowedFeatureView,
)
from kiln.features.catalog import Catalog
from kiln.tracking import TrackingClient

user = Entity("user", join_keys=["user_id"])


def stats(ttl: str = "2d", name: str = "user_stats") -> FeatureView:
    return FeatureView(
        name,
        entities=[user],
        source=ParquetSource("stats.parquet", created="created"),
        schema=[Field("u_f0", "float64"), Field("u_f1", "float64")],
        ttl=ttl,
    )


def doubled(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"amount_x2": df["amount"] * 2})


@pytest.fixture
def checked() -> list[str]:
    return []


@pytest.fixture
def catalog(tracking_client: TrackingClient, checked: list[str]) -> Catalog:
    return Catalog(tracking_client.meta, lambda view: checked.append(view.name))


def test_plan_apply_and_versions(catalog: Catalog, checked: list[str]) -> None:
    plan = catalog.plan([user, stats()])
    assert [(c.kind, c.name, c.action, c.version) for c in plan.changes] == [
        ("entity", "user", "create", 1),
        ("feature_view", "user_stats", "create", 1),
    ]
    assert catalog.records() == []  # plan writes nothing
    catalog.apply([user, stats()])
    assert checked == ["user_stats"]
    assert not catalog.plan([user, stats()]).has_changes
    catalog.apply([user, stats()])
    assert checked == ["user_stats"]  # unchanged views are not checked again

    plan = catalog.plan([stats(ttl="1d")])
    (change,) = plan.changes
    assert change.action == "update" and change.version == 2
    assert change.differences == ('ttl: "2d" -> "1d"',)
    assert "~ feature_view user_stats (version 2)" in str(plan)
    catalog.apply([stats(ttl="1d")])
    assert catalog.version_of("view", "user_stats") == 2
    records = {r.name: r for r in catalog.records()}
    assert records["user_stats"].version == 2 and records["user_stats"].spec["ttl"] == "1d"
    definitions, versions = catalog.load()
    assert definitions["user_stats"] == stats(ttl="1d")
    assert definitions["user"] == user
    assert versions == {"user_stats": 2}


def test_every_kind_round_trips(catalog: Catalog) -> None:
    windows = WindowedFeatureView(
        "tx_windows",
        entities=[user],
        source=PushSource(created="created"),
        aggregations=[Aggregation("amount", "sum", "7d"), Aggregation(None, "count", "1h")],
    )
    od = OnDemandFeatureView(
        "amount_features",
        sources=[RequestSource("tx", [Field("amount", "float64")])],
        schema=[Field("amount_x2", "float64")],
        function=doubled,
        inputs=["user_stats:u_f0"],
    )
    service = FeatureService("fraud", features=[stats(), "tx_windows:amount_sum_7d", od])
    catalog.apply([user, stats(), windows, od, service])
    definitions, _ = catalog.load()
    assert definitions["tx_windows"] == windows
    assert definitions["fraud"] == service
    rebuilt = definitions["amount_features"]
    assert isinstance(rebuilt, OnDemandFeatureView)
    out = rebuilt.function(pd.DataFrame({"amount": [1.5, 2.0]}))
    assert out["amount_x2"].tolist() == [3.0, 4.0]


def test_references_are_checked_before_anything_is_stored(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput, match="uses entity 'user', which is neither applied"):
        catalog.apply([stats()])
    with pytest.raises(
        InvalidInput, match=r"unknown feature 'user_stats:nope'; view 'user_stats' has: u_f0, u_f1"
    ):
        catalog.apply([user, stats(), FeatureService("svc", features=["user_stats:nope"])])
    assert catalog.records() == []  # the failed batch stored nothing, not even the entity
    catalog.apply([user, stats()])
    with pytest.raises(
        InvalidInput, match=r"unknown feature view 'user_stat'.*did you mean user_stats"
    ):
        catalog.apply([FeatureService("svc", features=["user_stat:u_f0"])])
    other = Entity("user", join_keys=["uid"])
    view = FeatureView(
        "v2", entities=[other], source=ParquetSource("x.parquet"), schema=[Field("a", "int64")]
    )
    with pytest.raises(Conflict, match=r"join keys \['uid'\].*applied entity has \['user_id'\]"):
        catalog.apply([view])


def test_view_names_are_one_namespace(catalog: Catalog) -> None:
    catalog.apply([user, stats()])
    clash = WindowedFeatureView(
        "user_stats",
        entities=[user],
        source=PushSource(),
        aggregations=[Aggregation(None, "count", "1d")],
    )
    with pytest.raises(Conflict, match="already applied as a feature view"):
        catalog.apply([clash])
    with pytest.raises(Conflict, match="two different definitions named 'user_stats'"):
        catalog.plan([stats(), stats(ttl="1d")])
    with pytest.raises(InvalidInput, match=r"apply takes kiln\.Entity"):
        catalog.plan(["user_stats"])
    with pytest.raises(NotFound, match="no view named 'nope'"):
        catalog.version_of("view", "nope")


def test_a_failed_source_check_stores_nothing(tracking_client: TrackingClient) -> None:
    def refuse(view: Any) -> None:
        raise InvalidInput(f"feature view {view.name!r}: column 'u_f1' is missing from the source")

    catalog = Catalog(tracking_client.meta, refuse)
    with pytest.raises(InvalidInput, match="column 'u_f1' is missing"):
        catalog.apply([user, stats()])
    assert catalog.records() == []
