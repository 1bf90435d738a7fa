"""Stored deployments and rollouts on SQLite and PostgreSQL (``tracking_client`` fixture).

Models are small scikit-learn estimators registered for real, so the compatibility checks
run against real signatures; features are applied to a real feature catalog.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.registry import models
from kiln.serving import Deployment, Guard, deployments
from kiln.tracking import TrackingClient, lineage

COLUMNS = ["amount", "age", "hour"]


def _frame(rows: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, len(COLUMNS))), columns=COLUMNS)
    y = (x["amount"] + 0.5 * x["age"] > 0).astype(int).to_numpy()
    return x, y


def _register(client: TrackingClient, name: str, x: pd.DataFrame, y: np.ndarray, c: float) -> Any:
    model = LogisticRegression(C=c).fit(x, y)
    return models.register(name, model, input_example=x[:5], client=client)


@pytest.fixture
def client(tracking_client: TrackingClient) -> TrackingClient:
    """fraud/1..3 (fraud/3 needs an int 'risk' field and an int 'amount'), other/1;
    fraud@champion -> 1, fraud@challenger -> 2."""
    x, y = _frame()
    _register(tracking_client, "fraud", x, y, 1.0)
    _register(tracking_client, "fraud", x, y, 0.1)
    wider = x.assign(risk=np.arange(len(x)) % 3, amount=(x["amount"] * 100).astype("int64"))
    _register(tracking_client, "fraud", wider, y, 1.0)
    _register(tracking_client, "other", x, y, 2.0)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    models.set_alias("fraud", "challenger", 2, client=tracking_client)
    return tracking_client


def kinds(name: str, client: TrackingClient) -> list[str]:
    return [e.kind for e in deployments.history(name, client=client)]


# -- create, read, list ---------------------------------------------------------------------


def test_create_stores_a_deployment_with_its_request_schema(client: TrackingClient) -> None:
    created = deployments.create(
        "fraud-api",
        model="fraud@champion",
        batching={"max_batch_size": 16, "max_wait_ms": 1.0},
        timeout_ms=250,
        fallback={"value": 0},
        tags={"team": "risk"},
        reason="first",
        client=client,
    )
    assert created.revision == 1
    assert created.request == {"amount": "float64", "age": "float64", "hour": "float64"}
    assert created.batching.max_batch_size == 16
    assert created.fallback is not None and created.fallback.value == 0
    assert created.traffic.policy == "single"
    got = deployments.get("fraud-api", client=client)
    assert got == created
    assert deployments.list(client=client) == [created]
    assert deployments.revisions(client=client) == {"fraud-api": 1}
    assert deployments.revisions(["fraud-api", "nope"], client=client) == {"fraud-api": 1}
    (event,) = deployments.history("fraud-api", client=client)
    assert (event.kind, event.revision, event.reason) == ("created", 1, "first")
    assert event.detail == {"model": "fraud@champion", "version": "fraud/1"}
    assert event.to_dict()["detail"] == {"model": "fraud@champion", "version": "fraud/1"}
    # The version that takes traffic is linked to the deployment in the lineage graph.
    v1 = models.resolve("fraud/1", client=client)
    edges = lineage.edges("deployment", "fraud-api", direction="in", client=client)
    assert [(e.src_id, e.relation, e.properties["role"]) for e in edges] == [
        (v1.id, "deployed_to", "champion")
    ]
    with pytest.raises(Conflict, match="'fraud-api' already exists"):
        deployments.create("fraud-api", model="fraud/2", client=client)


def test_records_are_frozen_snapshots(client: TrackingClient) -> None:
    first = deployments.create("api", model="fraud@champion", client=client)
    deployments.update("api", timeout_ms=50, client=client)
    assert first.timeout_ms == 1000.0 and first.revision == 1
    with pytest.raises(AttributeError):
        first.timeout_ms = 5  # type: ignore[misc]
    (event, _) = deployments.history("api", client=client)
    with pytest.raises(TypeError):
        event.detail["model"] = "x"  # type: ignore[index]


def test_unknown_names_and_bad_input_are_clear_errors(client: TrackingClient) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    with pytest.raises(NotFound, match="no deployment named 'fraud-ap'; did you mean fraud-api"):
        deployments.get("fraud-ap", client=client)
    with pytest.raises(NotFound, match="no deployment named 'zzz'; known: fraud-api"):
        deployments.history("zzz", client=client)
    with pytest.raises(NotFound, match="'zzz'"):
        deployments.canary("zzz", model="fraud/2", percent=5, client=client)
    with pytest.raises(InvalidInput, match="deployment name must be"):
        deployments.create("bad name!", model="fraud/1", client=client)
    with pytest.raises(NotFound, match="model 'fraud@nope' does not resolve"):
        deployments.create("x", model="fraud@nope", client=client)
    with pytest.raises(NotFound, match="model 'ghost' does not resolve"):
        deployments.create("x", model="ghost", client=client)
    with pytest.raises(InvalidInput, match="'max_batch_size' parameter of Batching"):
        deployments.create("x", model="fraud/1", batching={"max_batch_size": 0}, client=client)
    with pytest.raises(InvalidInput, match="'batching' parameter"):
        deployments.create("x", model="fraud/1", batching={"size": 3}, client=client)
    with pytest.raises(InvalidInput, match="'timeout_ms' parameter"):
        deployments.create("x", model="fraud/1", timeout_ms=-1, client=client)
    for bad in (0, 101, -5, True, "10"):
        with pytest.raises(InvalidInput, match=r"'percent' parameter of canary .* \(0, 100\]"):
            deployments.canary("fraud-api", model="fraud/2", percent=bad, client=client)
    with pytest.raises(InvalidInput, match=r"'percent' parameter of ab .* \(0, 100\)"):
        deployments.ab("fraud-api", model="fraud/2", percent=100, sticky_key="u", client=client)
    with pytest.raises(InvalidInput, match="sticky_key"):
        deployments.ab("fraud-api", model="fraud/2", sticky_key="", client=client)
    with pytest.raises(InvalidInput, match="'max_psi' parameter of Guard"):
        deployments.canary(
            "fraud-api", model="fraud/2", percent=5, guard={"max_psi": -1}, client=client
        )
    with pytest.raises(InvalidInput, match=r"update\(\) cannot change 'traffic'.*canary"):
        deployments.update("fraud-api", traffic=None, client=client)
    with pytest.raises(InvalidInput, match="nothing to update"):
        deployments.update("fraud-api", client=client)
    with pytest.raises(InvalidInput, match="reason must be a string"):
        deployments.rollback("fraud-api", reason=3, client=client)  # type: ignore[arg-type]
    # None of the refused calls changed anything.
    assert kinds("fraud-api", client) == ["created"]
    assert deployments.get("fraud-api", client=client).revision == 1
    assert deployments.list(client=client)[0].name == "fraud-api"


# -- rollouts -------------------------------------------------------------------------------


def test_canary_then_promote_moves_the_alias_the_deployment_follows(
    client: TrackingClient,
) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    guard = Guard(max_error_rate=0.02, max_p95_ms=20.0, min_requests=50, auto_promote=True)
    canary = deployments.canary(
        "fraud-api",
        model="fraud@challenger",
        percent=10,
        sticky_key="hour",
        guard=guard,
        client=client,
    )
    assert canary.revision == 2
    assert (canary.traffic.policy, canary.traffic.challenger) == ("canary", "fraud@challenger")
    assert (canary.traffic.percent, canary.traffic.sticky_key) == (10.0, "hour")
    assert canary.traffic.guard == guard
    # Ramping the canary is the same verb again.
    ramped = deployments.canary(
        "fraud-api", model="fraud@challenger", percent=50, guard=guard, client=client
    )
    assert ramped.traffic.percent == 50.0

    promoted = deployments.promote("fraud-api", reason="canary passed", client=client)
    assert promoted is not None
    assert promoted.model == "fraud@champion"  # still follows the alias...
    assert promoted.traffic.policy == "single"
    # ...which moved in the registry, with the reason, in the same transaction.
    assert models.resolve("fraud@champion", client=client).version == 2
    move = models.alias_history("fraud", "champion", client=client)[-1]
    assert (move.from_version, move.to_version, move.reason) == (1, 2, "canary passed")
    events = deployments.history("fraud-api", client=client)
    assert [e.kind for e in events] == ["created", "canary_started", "canary_started", "promoted"]
    assert [e.revision for e in events] == [1, 2, 3, 4]
    assert events[1].detail["challenger_version"] == "fraud/2"
    assert events[1].detail["guard"]["max_p95_ms"] == 20.0
    assert events[-1].detail["alias"] == "fraud@champion"
    assert events[-1].detail["previous_version"] == "fraud/1"
    assert events[-1].reason == "canary passed"
    with pytest.raises(Conflict, match="no challenger to promote"):
        deployments.promote("fraud-api", client=client)


def test_promote_pins_the_judged_version_when_the_deployment_follows_no_alias(
    client: TrackingClient,
) -> None:
    deployments.create("pinned", model="fraud/1", client=client)
    deployments.canary("pinned", model="fraud@challenger", percent=5, client=client)
    promoted = deployments.promote("pinned", client=client)
    assert promoted is not None and promoted.model == "fraud/2"
    assert models.resolve("fraud@champion", client=client).version == 1  # untouched
    # A challenger of another model on an alias deployment pins too; the alias stays.
    deployments.create("aliased", model="fraud@champion", client=client)
    deployments.canary("aliased", model="other/1", percent=5, client=client)
    done = deployments.promote("aliased", client=client)
    assert done is not None and done.model == "other/1"
    assert models.resolve("fraud@champion", client=client).version == 1


def test_rollback_and_guard_breach_are_recorded(client: TrackingClient) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    with pytest.raises(Conflict, match="no rollout to roll back"):
        deployments.rollback("fraud-api", client=client)
    deployments.canary("fraud-api", model="fraud/2", percent=10, client=client)
    back = deployments.rollback("fraud-api", reason="by hand", client=client)
    assert back is not None and back.traffic.policy == "single" and back.model == "fraud@champion"
    deployments.blue_green("fraud-api", model="fraud/2", guard=Guard(max_p95_ms=5), client=client)
    breach = deployments.rollback(
        "fraud-api",
        breach=True,
        reason="p95 12.5 ms > 5 ms",
        detail={"p95_ms": 12.5, "requests": 400},
        client=client,
    )
    assert breach is not None and breach.traffic.policy == "single"
    events = deployments.history("fraud-api", client=client)
    assert [e.kind for e in events] == [
        "created",
        "canary_started",
        "rolled_back",
        "switched",
        "guard_breach",
    ]
    assert events[2].reason == "by hand"
    assert events[-1].detail["p95_ms"] == 12.5
    assert events[-1].detail["challenger"] == "fraud/2"
    assert events[-1].detail["policy"] == "blue_green"
    assert models.resolve("fraud@champion", client=client).version == 1


def test_ab_shadow_and_blue_green(client: TrackingClient) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    ab = deployments.ab("fraud-api", model="fraud/2", sticky_key="hour", client=client)
    assert (ab.traffic.policy, ab.traffic.percent, ab.traffic.sticky_key) == ("ab", 50.0, "hour")
    with pytest.raises(Conflict, match="running an A/B split of 'fraud/2'; promote it or roll"):
        deployments.canary("fraud-api", model="fraud/2", percent=5, client=client)
    deployments.rollback("fraud-api", client=client)
    shadow = deployments.shadow("fraud-api", model="other/1", client=client)
    assert (shadow.traffic.policy, shadow.traffic.challenger) == ("shadow", "other/1")
    deployments.rollback("fraud-api", client=client)
    with pytest.raises(Conflict, match="no blue-green switch"):
        deployments.switch_back("fraud-api", client=client)
    green = deployments.blue_green("fraud-api", model="fraud/2", client=client)
    assert (green.traffic.policy, green.traffic.percent) == ("blue_green", 100.0)
    blue = deployments.switch_back("fraud-api", reason="errors", client=client)
    assert blue is not None and (blue.traffic.policy, blue.traffic.percent) == ("blue_green", 0.0)
    with pytest.raises(Conflict, match="already switched back"):
        deployments.switch_back("fraud-api", client=client)
    again = deployments.blue_green("fraud-api", model="fraud/2", client=client)
    assert again.traffic.percent == 100.0
    assert kinds("fraud-api", client)[1:] == [
        "ab_started",
        "rolled_back",
        "shadow_started",
        "rolled_back",
        "switched",
        "switched_back",
        "switched",
    ]
    deployments.rollback("fraud-api", client=client)
    with pytest.raises(InvalidInput, match="resolves to fraud/1, which is already the champion"):
        deployments.canary("fraud-api", model="fraud/1", percent=5, client=client)


# -- compare-and-set ------------------------------------------------------------------------


def _judge_at_once(workers: int, revision: int, client: TrackingClient) -> list[Any]:
    """``workers`` threads roll back at the same instant, each judging ``revision``."""
    barrier = threading.Barrier(workers)
    results: list[Deployment | None] = []
    errors: list[BaseException] = []

    def judge() -> None:
        try:
            barrier.wait()
            results.append(
                deployments.rollback(
                    "fraud-api",
                    breach=True,
                    reason="error rate",
                    expected_revision=revision,
                    client=client,
                )
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=judge) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_expected_revision_makes_guard_actions_act_once(client: TrackingClient) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    for round_ in range(3):
        judged = deployments.canary("fraud-api", model="fraud/2", percent=10, client=client)
        acted = [r for r in _judge_at_once(6, judged.revision, client) if r is not None]
        assert len(acted) == 1, f"round {round_}: {len(acted)} workers acted"
        assert acted[0].revision == judged.revision + 1
    assert kinds("fraud-api", client).count("guard_breach") == 3
    # A stale revision does nothing, for promote and switch_back too.
    current = deployments.canary("fraud-api", model="fraud/2", percent=10, client=client)
    assert (
        deployments.promote("fraud-api", expected_revision=current.revision - 1, client=client)
        is None
    )
    assert deployments.rollback("fraud-api", expected_revision=99, client=client) is None
    assert deployments.get("fraud-api", client=client) == current
    with pytest.raises(Conflict, match="no longer at revision 1"):
        deployments.update("fraud-api", timeout_ms=10, expected_revision=1, client=client)


_JUDGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import kiln

    go, revision = Path(sys.argv[1]), int(sys.argv[2])
    kiln.deployments.get("fraud-api")  # connect and import before the race
    print("READY", flush=True)
    while not go.exists():
        time.sleep(0.001)
    done = kiln.deployments.rollback(
        "fraud-api", breach=True, reason="p95", expected_revision=revision
    )
    print("ACTED" if done is not None else "SKIPPED", flush=True)
    """
)


def test_two_worker_processes_judging_one_guard_act_once(
    client: TrackingClient, db_url: str, tmp_path: Path
) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    judged = deployments.canary("fraud-api", model="fraud/2", percent=10, client=client)
    env = {**os.environ, "KILN_DB_URL": db_url, "KILN_ARTIFACT_URI": str(tmp_path / "artifacts")}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _JUDGE, str(go), str(judged.revision)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY", proc.stderr and proc.stderr.read()
        go.touch()
        outcomes = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outcomes.append(out.strip())
    finally:
        for proc in procs:
            proc.kill()
    assert sorted(outcomes) == ["ACTED", "SKIPPED", "SKIPPED"]
    assert kinds("fraud-api", client) == ["created", "canary_started", "guard_breach"]
    assert deployments.get("fraud-api", client=client).revision == judged.revision + 1


# -- signature compatibility ----------------------------------------------------------------


def test_incompatible_version_is_refused_naming_the_fields(client: TrackingClient) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    for start in (
        lambda: deployments.canary("fraud-api", model="fraud/3", percent=10, client=client),
        lambda: deployments.shadow("fraud-api", model="fraud/3", client=client),
        lambda: deployments.blue_green("fraud-api", model="fraud/3", client=client),
        lambda: deployments.ab("fraud-api", model="fraud/3", sticky_key="u", client=client),
        lambda: deployments.update("fraud-api", model="fraud/3", client=client),
    ):
        with pytest.raises(InvalidInput) as info:
            start()
        message = str(info.value)
        assert "fraud/3 cannot serve deployment 'fraud-api'" in message
        assert "missing request field 'risk' (int64)" in message
        assert (
            "'amount' is float64 in the deployment's request schema but the model wants int64"
            in (message)
        )
    assert kinds("fraud-api", client) == ["created"]
    # Widening the request schema on purpose lets the version in.
    deployments.update(
        "fraud-api",
        request={"amount": "int64", "age": "float64", "hour": "float64", "risk": "int64"},
        client=client,
    )
    assert deployments.canary("fraud-api", model="fraud/3", percent=10, client=client)
    # A fallback model is checked the same way.
    with pytest.raises(InvalidInput, match="fraud/3 cannot serve"):
        deployments.create("x", model="fraud/1", fallback={"model": "fraud/3"}, client=client)
    # A promotion re-checks the version the challenger alias points at now.
    models.set_alias("fraud", "challenger", 3, client=client)
    deployments.create("y", model="fraud@champion", client=client)
    deployments.canary("y", model="fraud/2", percent=10, client=client)
    assert deployments.promote("y", client=client) is not None


def test_request_fields_of_a_tensor_model(client: TrackingClient) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    y = (x[:, 0] > 0).astype(int)
    mv = models.register(
        "tensor", LogisticRegression().fit(x, y), input_example=x[:3], client=client
    )
    created = deployments.create("tensor-api", model="tensor/1", client=client)
    assert created.request is None
    (spec,) = deployments.request_fields(created, mv, client=client)
    assert (spec.name, spec.dtype, spec.shape) == (None, "float64", (-1, 4))


def test_update_records_what_changed(client: TrackingClient) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    updated = deployments.update(
        "fraud-api",
        timeout_ms=200,
        breaker={"consecutive_failures": 2},
        reason="tighter",
        client=client,
    )
    assert updated.revision == 2 and updated.timeout_ms == 200.0
    assert updated.breaker.consecutive_failures == 2
    same = deployments.update("fraud-api", timeout_ms=200, client=client)
    assert same.revision == 2  # nothing changed, nothing recorded
    (_, event) = deployments.history("fraud-api", client=client)
    assert event.kind == "updated" and event.reason == "tighter"
    assert set(event.detail["changes"]) == {"timeout_ms", "breaker"}
    assert event.detail["changes"]["timeout_ms"] == {"from": 1000.0, "to": 200.0}
    moved = deployments.update("fraud-api", model="other/1", client=client)
    assert moved.model == "other/1"


def test_delete_keeps_history_and_revisions_keep_counting(client: TrackingClient) -> None:
    deployments.create("fraud-api", model="fraud@champion", client=client)
    deployments.update("fraud-api", timeout_ms=10, client=client)
    gone = deployments.delete("fraud-api", reason="retired", client=client)
    assert gone.revision == 2
    with pytest.raises(NotFound):
        deployments.get("fraud-api", client=client)
    assert deployments.revisions(client=client) == {}
    assert kinds("fraud-api", client) == ["created", "updated", "deleted"]
    again = deployments.create("fraud-api", model="fraud/2", client=client)
    assert again.revision == 4
    assert [e.revision for e in deployments.history("fraud-api", client=client)] == [1, 2, 3, 4]
    with pytest.raises(NotFound, match="no deployment named 'nope'"):
        deployments.delete("nope", client=client)


def test_watch_yields_the_state_then_each_change(client: TrackingClient) -> None:
    deployments.create("a", model="fraud@champion", client=client)
    stop = threading.Event()
    stream = deployments.watch(interval_s=0.01, stop=stop, client=client)
    first = next(stream)
    assert set(first) == {"a"} and first["a"] is not None and first["a"].revision == 1
    deployments.canary("a", model="fraud/2", percent=5, client=client)
    deployments.create("b", model="fraud/1", client=client)
    seen: dict[str, Deployment | None] = {}
    while set(seen) != {"a", "b"}:
        seen.update(next(stream))
    assert seen["a"] is not None and seen["a"].traffic.policy == "canary"
    deployments.delete("b", client=client)
    assert next(stream) == {"b": None}
    stop.set()
    assert list(stream) == []
    named = deployments.watch(["b"], stop=threading.Event(), client=client)
    assert next(named) == {"b": None}
    with pytest.raises(InvalidInput, match="interval_s"):
        next(deployments.watch(interval_s=0, client=client))


# -- features -------------------------------------------------------------------------------


@pytest.fixture
def features(client: TrackingClient, tmp_path: Path) -> TrackingClient:
    """user_stats (f0, f1: float64) and merchant_stats (f0) applied; a service of both."""
    from kiln.features import (
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        ParquetSource,
    )

    now = datetime.now(UTC).replace(microsecond=0)
    user, merchant = Entity("user", join_keys=["user_id"]), Entity("merchant", ["merchant_id"])
    for key, path in (("user_id", "users"), ("merchant_id", "merchants")):
        pd.DataFrame(
            {
                key: np.arange(5, dtype="int64"),
                "event_timestamp": [now - timedelta(hours=i) for i in range(5)],
                "f0": np.linspace(0, 1, 5),
                "f1": np.linspace(1, 2, 5),
            }
        ).to_parquet(tmp_path / f"{path}.parquet")
    views = [
        FeatureView(
            name,
            entities=[entity],
            source=ParquetSource(str(tmp_path / f"{path}.parquet")),
            schema=[Field("f0", "float64"), Field("f1", "float64")],
        )
        for name, entity, path in (
            ("user_stats", user, "users"),
            ("merchant_stats", merchant, "merchants"),
        )
    ]
    service = FeatureService("scoring", features=["user_stats:f0", "user_stats:f1"])
    FeatureStore(client=client, offline_dir=tmp_path / "offline").apply(
        [user, merchant, *views, service]
    )
    return client


def _model_on(client: TrackingClient, name: str, columns: dict[str, Any]) -> Any:
    x = pd.DataFrame(columns)
    y = (np.arange(len(x)) % 2).astype(int)
    return models.register(name, LogisticRegression().fit(x, y), input_example=x[:4], client=client)


def test_features_and_request_fields_supply_the_signature(features: TrackingClient) -> None:
    client = features
    n = 20
    rng = np.random.default_rng(3)
    mv = _model_on(
        client,
        "scored",
        {
            "f0": rng.normal(size=n),
            "merchant_stats__f1": rng.normal(size=n),
            "amount": rng.normal(size=n),
        },
    )
    d = deployments.create(
        "scored-api",
        model="scored/1",
        features=["user_stats:f0", "merchant_stats:f1"],
        client=client,
    )
    assert d.request == {"amount": "float64"}
    plan = deployments.input_plan(d, mv, client=client)
    assert dict(plan.features) == {"f0": "user_stats:f0", "merchant_stats__f1": "merchant_stats:f1"}
    assert [c.name for c in plan.request] == ["amount"]
    assert plan.entity_keys == ("user_id", "merchant_id")
    assert plan.to_dict()["entity_keys"] == ["user_id", "merchant_id"]

    # The same through a feature service.
    svc = _model_on(client, "svc", {"f0": rng.normal(size=n), "f1": rng.normal(size=n)})
    by_service = deployments.create("svc-api", model="svc/1", service="scoring", client=client)
    assert by_service.request == {}
    assert deployments.request_fields(by_service, svc, client=client) == ()
    # A server that already asked the feature store passes its answer instead.
    from kiln.features import FeatureStore

    requirements = FeatureStore(client=client).requirements("scoring")
    plan = deployments.check_compatible(by_service, svc, requirements=requirements)
    assert dict(plan.features) == {"f0": "f0", "f1": "f1"}  # a service's views are not named
    assert plan.entity_keys == ("user_id",) and plan.request == ()
    wider = _model_on(client, "svc", {"f0": rng.normal(size=n), "extra": rng.normal(size=n)})
    with pytest.raises(InvalidInput, match="missing request field 'extra'"):
        deployments.check_compatible(by_service, wider, requirements=requirements)
    with pytest.raises(NotFound, match="feature service 'scorng', which is not applied; did you"):
        deployments.create("svc-2", model="svc/1", service="scorng", client=client)


def test_features_that_cannot_supply_an_input_are_named(features: TrackingClient) -> None:
    client = features
    n = 20
    rng = np.random.default_rng(4)
    _model_on(client, "ints", {"f0": rng.integers(0, 5, size=n), "amount": rng.normal(size=n)})
    with pytest.raises(
        InvalidInput, match="input 'f0' wants int64 but feature user_stats:f0 is float64"
    ):
        deployments.create("ints-api", model="ints/1", features=["user_stats:f0"], client=client)
    _model_on(client, "amb", {"f0": rng.normal(size=n)})
    with pytest.raises(
        InvalidInput, match="input 'f0' is ambiguous: user_stats:f0, merchant_stats:f0"
    ):
        deployments.create(
            "amb-api", model="amb/1", features=["user_stats:f0", "merchant_stats:f0"], client=client
        )
    with pytest.raises(
        InvalidInput, match=r"feature view 'user_stat' .* is not applied; did you mean"
    ):
        deployments.create("x", model="amb/1", features=["user_stat:f0"], client=client)
    with pytest.raises(InvalidInput, match=r"view 'user_stats' has no feature 'f9'.*f0, f1"):
        deployments.create("x", model="amb/1", features=["user_stats:f9"], client=client)
    # A deployment that reads f0 from features refuses a challenger wanting a new request field.
    deployments.create("amb-api", model="amb/1", features=["user_stats:f0"], client=client)
    _model_on(client, "amb", {"f0": rng.normal(size=n), "country_risk": rng.normal(size=n)})
    with pytest.raises(InvalidInput, match="missing request field 'country_risk' \\(float64\\)"):
        deployments.canary("amb-api", model="amb/2", percent=10, client=client)
    # Tensor models cannot take named features.
    x = rng.normal(size=(n, 2))
    models.register(
        "vec", LogisticRegression().fit(x, x[:, 0] > 0), input_example=x[:2], client=client
    )
    with pytest.raises(InvalidInput, match="unnamed tensor"):
        deployments.create("vec-api", model="vec/1", features=["user_stats:f0"], client=client)
