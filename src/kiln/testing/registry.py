"""Registry conformance suite: every metadata backend must pass these tests.

Import the tests into a test module and provide a ``tracking_client`` fixture (a
:class:`kiln.tracking.TrackingClient` on a fresh store), as for the tracking suite::

    from kiln.testing.registry import *  # noqa: F403

The models are small scikit-learn estimators on seeded data, so the suite checks the
registry's bookkeeping, not model libraries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kiln.core import Conflict, InvalidInput, NotFound
from kiln.registry import models
from kiln.registry.usage import release_in, use_in
from kiln.tracking import TrackingClient, lineage, runs, start_run

__all__ = [
    "test_alias_history_records_every_move",
    "test_aliases_point_at_one_version_and_move",
    "test_bad_names_and_references_are_invalid_input",
    "test_delete_version_refused_while_an_alias_points_at_it",
    "test_deletes_refused_while_a_holder_uses_them",
    "test_deleting_after_the_holder_lets_go",
    "test_load_by_alias_version_and_latest",
    "test_model_description_and_tags",
    "test_records_are_frozen_snapshots",
    "test_rollback_skips_deleted_versions",
    "test_rollback_twice_goes_two_steps_back",
    "test_rollback_with_no_history_is_a_clear_error",
    "test_unknown_names_list_close_matches",
    "test_using_a_reference_that_no_longer_resolves_holds_nothing",
    "test_version_records_its_run_lineage_and_code",
    "test_versions_are_numbered_per_model",
]


def _data(seed: int = 0, rows: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["amount", "age", "hour"])
    y = (x["amount"] + 0.5 * x["age"] > 0).astype(int).to_numpy()
    return x, y


def _model(seed: int = 0) -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = _data(seed)
    return LogisticRegression(C=1.0 + seed).fit(x, y)


def _register(client: TrackingClient, name: str = "fraud", seed: int = 0, **kw: Any) -> Any:
    x, _ = _data(seed)
    return models.register(name, _model(seed), input_example=x[:5], client=client, **kw)


def test_versions_are_numbered_per_model(tracking_client: TrackingClient) -> None:
    assert [_register(tracking_client, "a", s).version for s in range(3)] == [1, 2, 3]
    assert _register(tracking_client, "b").version == 1
    listed = models.list_versions("a", client=tracking_client)
    assert [v.version for v in listed] == [3, 2, 1]
    assert [m.name for m in models.list_models(client=tracking_client)] == ["a", "b"]
    assert models.get_model("a", client=tracking_client).latest_version == 3
    # A deleted version's number is never handed out again.
    models.delete_version("a", 3, client=tracking_client)
    assert _register(tracking_client, "a").version == 4


def test_version_records_its_run_lineage_and_code(tracking_client: TrackingClient) -> None:
    with (
        start_run("fraud-exp", name="parent", client=tracking_client) as parent,
        start_run(name="child", client=tracking_client) as run,
    ):
        run.log_params({"C": 1.0, "penalty": "l2"})
        run.log_metric("val_auc", 0.93)
        run.log_input("dataset", "snap-1", name="transactions", rows=200)
        mv = _register(tracking_client, run=run, description="first", tags={"team": "risk"})
    assert mv.run_id == run.id
    assert mv.metrics == {"val_auc": 0.93}
    assert mv.description == "first" and mv.tags == {"team": "risk"}
    assert mv.flavor == "sklearn"
    assert [c.name for c in mv.signature.inputs] == ["amount", "age", "hour"]
    assert {f.path for f in mv.files} >= {"kiln-model.json", "model/model.joblib"}
    assert all(len(f.digest) == 64 and f.size > 0 for f in mv.files)
    assert mv.environment["packages"]["scikit-learn"]
    run_env = runs.get(run.id, client=tracking_client).environment
    assert mv.git_commit == run_env.get("git_commit")

    graph = models.lineage(mv.ref, client=tracking_client)
    assert graph.run is not None and graph.run.id == run.id
    assert graph.params == {"C": 1.0, "penalty": "l2"}
    assert graph.metrics == {"val_auc": 0.93}
    assert [(n.kind, n.id) for n in graph.inputs] == [("dataset", "snap-1")]
    assert graph.inputs[0].attributes["rows"] == 200
    assert [p.id for p in graph.parents] == [parent.id]
    if mv.git_commit:
        assert graph.code is not None and graph.code.id == mv.git_commit
    # The edges are in the one lineage graph, readable from the run's side too.
    out = lineage.edges("run", run.id, direction="out", client=tracking_client)
    assert ("produced", "model_version", mv.id) in {(e.relation, e.dst_kind, e.dst_id) for e in out}
    # The model's files are listed among the run's artifacts.
    paths = {a.path for a in runs.list_artifacts(run.id, client=tracking_client)}
    assert "models/fraud/v1/model/model.joblib" in paths


def test_load_by_alias_version_and_latest(tracking_client: TrackingClient) -> None:
    x, _ = _data()
    first, second = _model(0), _model(5)
    models.register("fraud", first, input_example=x[:5], client=tracking_client)
    models.register("fraud", second, input_example=x[:5], client=tracking_client)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    np.testing.assert_array_equal(
        models.load("fraud@champion", client=tracking_client).predict(x), first.predict(x)
    )
    np.testing.assert_array_equal(
        models.load("fraud/2", client=tracking_client).predict(x), second.predict(x)
    )
    assert models.load("fraud", client=tracking_client).version.version == 2
    assert models.load("fraud/latest", client=tracking_client).version.version == 2
    assert models.resolve("fraud@latest", client=tracking_client).version == 2


def test_aliases_point_at_one_version_and_move(tracking_client: TrackingClient) -> None:
    for seed in range(3):
        _register(tracking_client, seed=seed)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    models.set_alias("fraud", "challenger", 2, client=tracking_client)
    assert models.resolve("fraud@champion", client=tracking_client).version == 1
    models.set_alias("fraud", "champion", 3, reason="better auc", client=tracking_client)
    assert models.resolve("fraud@champion", client=tracking_client).version == 3
    assert models.get_model("fraud", client=tracking_client).aliases == {
        "challenger": 2,
        "champion": 3,
    }
    assert models.get_version("fraud", 3, client=tracking_client).aliases == ("champion",)
    # Setting the target it already has records nothing new.
    before = len(models.alias_history("fraud", "champion", client=tracking_client))
    models.set_alias("fraud", "champion", 3, client=tracking_client)
    assert len(models.alias_history("fraud", "champion", client=tracking_client)) == before
    with pytest.raises(NotFound, match="no version 9"):
        models.set_alias("fraud", "champion", 9, client=tracking_client)
    models.delete_alias("fraud", "challenger", client=tracking_client)
    with pytest.raises(NotFound, match="no alias 'challenger'"):
        models.resolve("fraud@challenger", client=tracking_client)


def test_alias_history_records_every_move(tracking_client: TrackingClient) -> None:
    for seed in range(2):
        _register(tracking_client, seed=seed)
    models.set_alias("fraud", "champion", 1, actor="ana", reason="first", client=tracking_client)
    models.set_alias("fraud", "champion", 2, actor="ben", reason="promote", client=tracking_client)
    models.rollback("fraud", "champion", actor="ana", reason="p99 up", client=tracking_client)
    history = models.alias_history("fraud", "champion", client=tracking_client)
    assert [(e.action, e.from_version, e.to_version, e.actor, e.reason) for e in history] == [
        ("set", None, 1, "ana", "first"),
        ("set", 1, 2, "ben", "promote"),
        ("rollback", 2, 1, "ana", "p99 up"),
    ]
    assert history[0].created_at <= history[1].created_at <= history[2].created_at
    assert models.alias_history("fraud", client=tracking_client) == history
    with pytest.raises(NotFound, match="did you mean champion"):
        models.alias_history("fraud", "champio", client=tracking_client)


def test_rollback_twice_goes_two_steps_back(tracking_client: TrackingClient) -> None:
    for seed in range(4):
        _register(tracking_client, seed=seed)
    for version in (1, 2, 3, 4):
        models.set_alias("fraud", "champion", version, client=tracking_client)
    assert models.rollback("fraud", "champion", client=tracking_client).to_version == 3
    assert models.rollback("fraud", "champion", client=tracking_client).to_version == 2
    assert models.resolve("fraud@champion", client=tracking_client).version == 2
    # A new promotion after rollbacks starts a new step; rolling back returns to 2.
    models.set_alias("fraud", "champion", 4, client=tracking_client)
    assert models.rollback("fraud", "champion", client=tracking_client).to_version == 2
    assert models.rollback("fraud", "champion", client=tracking_client).to_version == 1
    with pytest.raises(Conflict, match="no earlier target"):
        models.rollback("fraud", "champion", client=tracking_client)


def test_rollback_with_no_history_is_a_clear_error(tracking_client: TrackingClient) -> None:
    _register(tracking_client)
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        models.rollback("fraud", "champion", client=tracking_client)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    with pytest.raises(Conflict, match="no earlier target to roll back to"):
        models.rollback("fraud", "champion", client=tracking_client)
    assert models.resolve("fraud@champion", client=tracking_client).version == 1


def test_rollback_skips_deleted_versions(tracking_client: TrackingClient) -> None:
    for seed in range(3):
        _register(tracking_client, seed=seed)
    for version in (1, 2, 3):
        models.set_alias("fraud", "champion", version, client=tracking_client)
    models.delete_version("fraud", 2, client=tracking_client)
    assert models.rollback("fraud", "champion", client=tracking_client).to_version == 1


def test_delete_version_refused_while_an_alias_points_at_it(
    tracking_client: TrackingClient,
) -> None:
    _register(tracking_client)
    _register(tracking_client, seed=1)
    models.set_alias("fraud", "champion", 2, client=tracking_client)
    with pytest.raises(Conflict, match="alias 'champion' points at it"):
        models.delete_version("fraud", 2, client=tracking_client)
    with pytest.raises(Conflict, match="'champion'"):
        models.delete_model("fraud", client=tracking_client)
    models.delete_version("fraud", 1, client=tracking_client)
    assert [v.version for v in models.list_versions("fraud", client=tracking_client)] == [2]
    with pytest.raises(NotFound, match="no version 1"):
        models.load("fraud/1", client=tracking_client)
    models.delete_alias("fraud", "champion", client=tracking_client)
    models.delete_model("fraud", client=tracking_client)
    assert models.list_models(client=tracking_client) == []


def _use(client: TrackingClient, holder: str, *refs: str) -> None:
    with client.meta.write() as conn:
        use_in(conn, holder, refs)


def test_deletes_refused_while_a_holder_uses_them(tracking_client: TrackingClient) -> None:
    for seed in range(3):
        _register(tracking_client, seed=seed)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    _use(tracking_client, "app:fraud-api", "fraud@champion", "fraud/2")
    _use(tracking_client, "app:scorer", "fraud")  # the latest version, 3
    refused: dict[str, Callable[[], object]] = {
        re.escape(
            "alias fraud@champion: in use by app 'fraud-api' (uses fraud/2, fraud@champion)"
        ): (lambda: models.delete_alias("fraud", "champion", client=tracking_client)),
        "fraud/1: in use by app 'fraud-api'": (  # through the alias it follows
            lambda: models.delete_version("fraud", 1, client=tracking_client)
        ),
        "fraud/2: in use by app 'fraud-api'": (
            lambda: models.delete_version("fraud", 2, client=tracking_client)
        ),
        re.escape("fraud/3: in use by app 'scorer' (uses fraud/latest)"): (
            lambda: models.delete_version("fraud", 3, client=tracking_client)
        ),
        "model 'fraud': in use by app 'fraud-api' (.*); app 'scorer' (.*); update or "
        "delete them first": lambda: models.delete_model("fraud", client=tracking_client),
    }
    for message, delete in refused.items():
        with pytest.raises(Conflict, match=message):
            delete()
    assert [v.version for v in models.list_versions("fraud", client=tracking_client)] == [3, 2, 1]
    assert models.get_model("fraud", client=tracking_client).aliases == {"champion": 1}
    # Moving an alias a holder follows is a promotion, not a delete.
    models.set_alias("fraud", "champion", 2, client=tracking_client)
    models.delete_version("fraud", 1, client=tracking_client)


def test_deleting_after_the_holder_lets_go(tracking_client: TrackingClient) -> None:
    _register(tracking_client)
    _register(tracking_client, seed=1)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    _use(tracking_client, "app:a", "fraud@champion")
    _use(tracking_client, "app:a", "fraud/1")  # replaces what it used
    models.delete_alias("fraud", "champion", client=tracking_client)
    with pytest.raises(Conflict, match="app 'a'"):
        models.delete_version("fraud", 1, client=tracking_client)
    models.delete_version("fraud", 2, client=tracking_client)
    with tracking_client.meta.write() as conn:
        release_in(conn, "app:a")
    models.delete_model("fraud", client=tracking_client)
    assert models.list_models(client=tracking_client) == []


def test_using_a_reference_that_no_longer_resolves_holds_nothing(
    tracking_client: TrackingClient,
) -> None:
    _register(tracking_client)
    for ref, message in (
        ("fraud/9", "no version 9"),
        ("fraud@champion", "no alias 'champion'"),
        ("frod", "no registered model named 'frod'"),
    ):
        with pytest.raises(NotFound, match=message):
            _use(tracking_client, "app:a", "fraud/1", ref)
    models.delete_model("fraud", client=tracking_client)


def test_unknown_names_list_close_matches(tracking_client: TrackingClient) -> None:
    _register(tracking_client, "fraud")
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    with pytest.raises(NotFound, match="did you mean fraud"):
        models.load("frod/1", client=tracking_client)
    with pytest.raises(NotFound, match="did you mean champion"):
        models.load("fraud@champ", client=tracking_client)
    with pytest.raises(NotFound, match="versions: 1"):
        models.get_version("fraud", 7, client=tracking_client)


def test_bad_names_and_references_are_invalid_input(tracking_client: TrackingClient) -> None:
    x, _ = _data()
    for bad in ("", "a/b", "a@b", " x", "x" * 200):
        with pytest.raises(InvalidInput, match="model name"):
            models.register(bad, _model(), input_example=x[:5], client=tracking_client)
    _register(tracking_client)
    for ref in ("fraud/abc", "fraud@", "fraud@1x", "fraud/0"):
        with pytest.raises(InvalidInput):
            models.load(ref, client=tracking_client)
    for alias in ("latest", "1st", "has space"):
        with pytest.raises(InvalidInput, match="alias"):
            models.set_alias("fraud", alias, 1, client=tracking_client)
    with pytest.raises(InvalidInput, match="unknown model flavor 'keras'"):
        models.register("fraud", _model(), input_example=x[:5], flavor="keras")
    with pytest.raises(InvalidInput, match="has no predict method"):
        models.register("fraud", object(), input_example=x[:5], client=tracking_client)
    with pytest.raises(InvalidInput, match="no method 'transform'"):
        _register(tracking_client, method="transform")


def test_model_description_and_tags(tracking_client: TrackingClient) -> None:
    _register(tracking_client)
    updated = models.update_model(
        "fraud", description="card fraud", tags={"team": "risk", "tier": 1}, client=tracking_client
    )
    assert updated.description == "card fraud" and updated.tags == {"team": "risk", "tier": "1"}
    updated = models.update_model("fraud", tags={"tier": None}, client=tracking_client)
    assert updated.tags == {"team": "risk"}
    with pytest.raises(NotFound):
        models.update_model("nope", description="x", client=tracking_client)


def test_records_are_frozen_snapshots(tracking_client: TrackingClient) -> None:
    mv = _register(tracking_client)
    models.set_alias("fraud", "champion", 1, client=tracking_client)
    assert mv.aliases == ()
    with pytest.raises(AttributeError):
        mv.version = 5  # type: ignore[misc,unused-ignore]
    with pytest.raises(TypeError):
        mv.tags["x"] = "y"  # type: ignore[index,unused-ignore]
