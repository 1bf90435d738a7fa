"""Referential integrity: what a deployment serves cannot be deleted from the registry.

On SQLite and PostgreSQL (``tracking_client`` fixture): the champion (by alias, version
or latest), a challenger of every rollout and a fallback model hold their model, version
and alias; the registry's deletes (SDK and CLI) refuse with a Conflict naming the
deployments until the deployment is updated or deleted; a delete racing a deployment
write never leaves the deployment on a deleted model.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.cli import main
from kiln.errors import Conflict, NotFound
from kiln.registry import models
from kiln.serving import Deployment, deployments
from kiln.serving._writes import Change, apply_strict
from kiln.store import references
from kiln.tracking import TrackingClient

COLUMNS = ["amount", "age", "hour"]


def _frame(rows: int = 80) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(rows, len(COLUMNS))), columns=COLUMNS)
    y = (x["amount"] + 0.5 * x["age"] > 0).astype(int).to_numpy()
    return x, y


def _register(name: str, count: int, client: TrackingClient | None = None) -> None:
    x, y = _frame()
    for i in range(count):
        model = LogisticRegression(C=1.0 + i).fit(x, y)
        models.register(name, model, input_example=x[:5], client=client)


@pytest.fixture
def client(tracking_client: TrackingClient) -> TrackingClient:
    """fraud/1..3 with fraud@champion -> 1, and other/1."""
    _register("fraud", 3, tracking_client)
    _register("other", 1, tracking_client)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    return tracking_client


def _refused(message: str, delete: Any, *args: Any, client: TrackingClient) -> None:
    with pytest.raises(Conflict, match=message):
        delete(*args, client=client)


def _versions(client: TrackingClient, name: str = "fraud") -> list[int]:
    return [v.version for v in models.list_versions(name, client=client)]


def test_a_champion_holds_its_alias_version_or_latest(client: TrackingClient) -> None:
    deployments.create("by-alias", model="fraud@champion", client=client)
    deployments.create("by-version", model="fraud/2", client=client)
    deployments.create("by-latest", model="fraud", client=client)

    _refused(
        re.escape(
            "cannot delete alias fraud@champion: in use by deployment 'by-alias' "
            "(uses fraud@champion); update or delete it first"
        ),
        models.delete_alias,
        "fraud",
        "champion",
        client=client,
    )
    _refused(
        "fraud/1: in use by deployment 'by-alias'", models.delete_version, "fraud", 1, client=client
    )
    _refused(
        "fraud/2: in use by deployment 'by-version'",
        models.delete_version,
        "fraud",
        2,
        client=client,
    )
    _refused(
        r"fraud/3: in use by deployment 'by-latest' \(uses fraud/latest\)",
        models.delete_version,
        "fraud",
        3,
        client=client,
    )
    _refused(
        "model 'fraud': in use by deployment 'by-alias' .*; deployment 'by-latest' .*; "
        "deployment 'by-version' .*; update or delete them first",
        models.delete_model,
        "fraud",
        client=client,
    )
    assert _versions(client) == [3, 2, 1]
    assert models.get_model("fraud", client=client).aliases == {"champion": 1}

    # Update or delete the deployments, and the deletes go through.
    deployments.update("by-alias", model="other/1", client=client)
    models.delete_alias("fraud", "champion", client=client)
    models.delete_version("fraud", 1, client=client)
    deployments.delete("by-version", client=client)
    models.delete_version("fraud", 2, client=client)
    deployments.update("by-latest", model="other", client=client)
    models.delete_model("fraud", client=client)
    assert [m.name for m in models.list_models(client=client)] == ["other"]
    _refused(
        "model 'other': in use by deployment 'by-alias' .*; deployment 'by-latest'",
        models.delete_model,
        "other",
        client=client,
    )


def test_challengers_of_every_rollout_and_fallbacks_are_held(client: TrackingClient) -> None:
    deployments.create("api", model="other/1", fallback={"model": "fraud/1"}, client=client)
    _refused(
        r"fraud/1: in use by deployment 'api' \(uses fraud/1, other/1\)",
        models.delete_version,
        "fraud",
        1,
        client=client,
    )

    deployments.canary("api", model="fraud/2", percent=10, client=client)
    _refused(
        "fraud/2: in use by deployment 'api'", models.delete_version, "fraud", 2, client=client
    )
    deployments.rollback("api", client=client)
    models.delete_version("fraud", 2, client=client)

    deployments.shadow("api", model="fraud/3", client=client)
    _refused(
        "fraud/3: in use by deployment 'api'", models.delete_version, "fraud", 3, client=client
    )
    deployments.rollback("api", client=client)
    deployments.blue_green("api", model="fraud/3", client=client)
    deployments.switch_back("api", client=client)  # green stays named, ready to switch again
    _refused(
        "fraud/3: in use by deployment 'api'", models.delete_version, "fraud", 3, client=client
    )
    deployments.rollback("api", client=client)
    models.delete_version("fraud", 3, client=client)

    deployments.update("api", fallback={"value": 0}, client=client)
    models.set_alias("fraud", "champion", 1, client=client)  # nothing else holds fraud
    models.delete_alias("fraud", "champion", client=client)
    models.delete_model("fraud", client=client)
    assert [m.name for m in models.list_models(client=client)] == ["other"]


def test_a_promotion_moves_what_the_deployment_holds(client: TrackingClient) -> None:
    deployments.create("api", model="fraud@champion", client=client)
    deployments.canary("api", model="fraud/2", percent=10, client=client)
    deployments.promote("api", client=client)  # fraud@champion moves to 2
    models.delete_version("fraud", 1, client=client)
    _refused(
        "fraud/2: in use by deployment 'api'", models.delete_version, "fraud", 2, client=client
    )

    deployments.canary("api", model="other/1", percent=10, client=client)
    deployments.promote("api", client=client)  # another model: pinned to other/1
    assert deployments.get("api", client=client).model == "other/1"
    models.delete_alias("fraud", "champion", client=client)
    models.delete_model("fraud", client=client)


def test_deleting_the_deployment_lets_everything_go(client: TrackingClient) -> None:
    deployments.create("api", model="fraud@champion", fallback={"model": "other"}, client=client)
    deployments.canary("api", model="fraud/3", percent=5, client=client)
    deployments.delete("api", client=client)
    models.delete_alias("fraud", "champion", client=client)
    models.delete_model("fraud", client=client)
    models.delete_model("other", client=client)
    assert models.list_models(client=client) == []


def test_a_delete_between_a_writes_checks_and_its_commit_fails_the_write(
    client: TrackingClient,
) -> None:
    """The deployment checked fraud/3 before a delete won the race: the write is refused."""
    deployments.create("api", model="fraud/1", client=client)
    checked = models.resolve("fraud/3", client=client)

    def plan(current: Deployment) -> Change:
        models.delete_version("fraud", checked.version, client=client)  # lands in between
        return Change(current.evolve(model=checked.ref), "updated", {})

    with pytest.raises(NotFound, match="no version 3"):
        apply_strict("api", plan, reason=None, actor=None, expected_revision=None, client=client)
    stored = deployments.get("api", client=client)
    assert (stored.model, stored.revision) == ("fraud/1", 1)
    assert _versions(client) == [2, 1]


def _race(client: TrackingClient, version: int) -> dict[str, str]:
    """Create a deployment of race/<version> and delete that version at the same moment."""
    start = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def create() -> None:
        start.wait()
        try:
            deployments.create(f"d{version}", model=f"race/{version}", client=client)
            outcome["create"] = "done"
        except NotFound:
            outcome["create"] = "refused"

    def delete() -> None:
        start.wait()
        try:
            models.delete_version("race", version, client=client)
            outcome["delete"] = "done"
        except Conflict:
            outcome["delete"] = "refused"

    threads = [threading.Thread(target=create), threading.Thread(target=delete)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcome


def test_creates_racing_deletes_never_leave_a_deployment_on_nothing(
    tracking_client: TrackingClient,
) -> None:
    rounds = 6
    _register("race", rounds, tracking_client)
    for version in range(1, rounds + 1):
        outcome = _race(tracking_client, version)
        assert sorted(outcome.values()) == ["done", "refused"], outcome
        exists = f"d{version}" in {d.name for d in deployments.list(client=tracking_client)}
        assert exists == (version in _versions(tracking_client, "race")), outcome


def test_the_migration_backfills_what_a_deployment_write_holds(client: TrackingClient) -> None:
    """Migration 0005 computes deployments' references with a frozen copy of the format;
    for the same stored spec it must give what the deployment's own writes record."""
    path = Path(kiln.store.__file__).parent / "migrations" / "versions" / "0005_references.py"
    spec = importlib.util.spec_from_file_location("kiln_migration_0005", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)

    deployments.create("api", model="fraud@champion", fallback={"model": "other"}, client=client)
    deployments.canary("api", model="fraud/3", percent=5, client=client)
    deployments.create("pinned", model="other/1", client=client)
    with client.meta.read() as conn:
        for name, stored in conn.execute(sa.text("SELECT name, spec FROM kiln_deployments")):
            held = references.held_by(conn, f"deployment:{name}")
            assert migration._deployment_references(stored) == held
            assert held  # the comparison is not between two empty sets


# -- CLI ------------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("kiln: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_cli_deletes_are_refused_naming_the_deployment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register("fraud", 2)
    kiln.models.set_alias("fraud", "champion", 1)
    kiln.deployments.create("fraud-api", model="fraud@champion", fallback={"model": "fraud/2"})

    for argv, subject in (
        (["models", "delete", "fraud/1"], "fraud/1"),
        (["models", "delete", "fraud/2"], "fraud/2"),
        (["models", "alias", "fraud", "champion", "--delete"], "alias fraud@champion"),
        (["models", "delete", "fraud", "--yes"], "model 'fraud'"),
    ):
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and out == ""
        _one_line_error(
            err,
            f"cannot delete {subject}: in use by deployment 'fraud-api'",
            "update or delete it first",
        )
    assert [v.version for v in kiln.models.list_versions("fraud")] == [2, 1]

    code, _, err = _cli(capsys, "deployments", "delete", "fraud-api", "--yes")
    assert code == 0, err
    for argv in (
        ["models", "delete", "fraud/2"],
        ["models", "alias", "fraud", "champion", "--delete"],
        ["models", "delete", "fraud", "--yes"],
    ):
        code, _, err = _cli(capsys, *argv)
        assert code == 0, err
    assert kiln.models.list_models() == []
