"""Rollout verbs refuse a sticky key no request carries, in the SDK and the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _harness import frame, register_linear

import kiln
from kiln.cli import main
from kiln.errors import InvalidInput
from kiln.features import Entity, FeatureView, ParquetSource


@pytest.fixture
def fraud() -> None:
    register_linear("fraud", scale=1.0)
    register_linear("fraud", scale=-1.0)
    kiln.deployments.create("fraud-api", model="fraud/1")


def test_a_sticky_key_must_be_a_request_field(fraud: None) -> None:
    for start in (
        lambda: kiln.deployments.ab("fraud-api", model="fraud/2", sticky_key="user_id"),
        lambda: kiln.deployments.canary(
            "fraud-api", model="fraud/2", percent=10, sticky_key="user_id"
        ),
    ):
        with pytest.raises(InvalidInput) as info:
            start()
        message = str(info.value)
        assert "sticky_key 'user_id'" in message and "'fraud-api'" in message
        assert "f0, f1, f2, f3" in message  # the fields that exist
    assert [e.kind for e in kiln.deployments.history("fraud-api")] == ["created"]
    # A field the requests carry is taken; a canary needs no sticky key at all.
    ab = kiln.deployments.ab("fraud-api", model="fraud/2", sticky_key="f3")
    assert ab.traffic.sticky_key == "f3"
    kiln.deployments.rollback("fraud-api")
    assert kiln.deployments.canary("fraud-api", model="fraud/2", percent=10).traffic.percent == 10


def test_the_cli_prints_a_refused_sticky_key_in_one_line(
    fraud: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["deployments", "ab", "fraud-api", "--model", "fraud/2", "--sticky-key", "user"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: sticky_key 'user'") and err.count("\n") == 1, err


def test_an_entity_key_is_a_sticky_key(tmp_path: Path) -> None:
    """Requests to a deployment with features carry its entity keys: those stick too."""
    path = f"{tmp_path}/users.parquet"
    stats = frame(20).assign(user_id=range(20), ts=pd.Timestamp("2026-01-01", tz="UTC"))
    stats[["user_id", "ts", "f0", "f1"]].to_parquet(path)
    user = Entity("user", join_keys=["user_id"])
    view = FeatureView(
        "user_stats", entities=[user], source=ParquetSource(path, timestamp="ts"), ttl="30d"
    )
    kiln.FeatureStore().apply([user, view])
    register_linear("fraud", scale=1.0)
    register_linear("fraud", scale=-1.0)
    kiln.deployments.create(
        "fraud-api", model="fraud/1", features=["user_stats:f0", "user_stats:f1"]
    )
    ab = kiln.deployments.ab("fraud-api", model="fraud/2", sticky_key="user_id")
    assert ab.traffic.sticky_key == "user_id"
    kiln.deployments.rollback("fraud-api")
    with pytest.raises(InvalidInput, match=r"sticky_key 'f0'.*f2, f3, user_id"):
        kiln.deployments.ab("fraud-api", model="fraud/2", sticky_key="f0")
