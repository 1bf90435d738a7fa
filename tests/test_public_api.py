"""The public surface is deliberate: these tests pin it, so a change to it is a decision."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kiln
import kiln.errors
import kiln.store
import kiln.tracking

SRC = Path(kiln.__file__).parent


def test_top_level_names() -> None:
    assert sorted(kiln.__all__) == sorted(
        [
            "Aggregation",
            "DeltaSource",
            "Entity",
            "FeatureService",
            "FeatureStore",
            "FeatureView",
            "Field",
            "OnDemandFeatureView",
            "ParquetSource",
            "PushSource",
            "RequestSource",
            "Run",
            "RunRecord",
            "RunStatus",
            "SQLSource",
            "Settings",
            "TrackingClient",
            "WindowedFeatureView",
            "__version__",
            "active_run",
            "batch_predict",
            "configure",
            "deployments",
            "errors",
            "experiments",
            "flow",
            "flows",
            "get_settings",
            "lineage",
            "models",
            "monitoring",
            "runs",
            "start_run",
            "step",
            "training",
            "tune",
            "tuning",
            "validation",
        ]
    )
    for name in kiln.__all__:
        assert hasattr(kiln, name), name


def test_runs_namespace() -> None:
    assert sorted(kiln.runs.__all__) == [
        "MetricSeries",
        "RunComparison",
        "children",
        "compare",
        "count",
        "download_artifacts",
        "get",
        "list_artifacts",
        "metric_history",
        "metric_series",
        "read_artifact",
        "search",
        "set_tags",
    ]


def test_tuning_namespace() -> None:
    assert sorted(kiln.tuning.__all__) == [
        "Categorical",
        "Float",
        "Int",
        "Study",
        "StudyConfig",
        "StudyFailed",
        "StudySummary",
        "Trial",
        "TrialPruned",
        "TrialRecord",
        "list_studies",
        "load_study",
        "resume",
        "study_summaries",
        "tune",
    ]
    assert kiln.tune is kiln.tuning.tune


def test_validation_namespace() -> None:
    assert sorted(kiln.validation.__all__) == [
        "Anomaly",
        "ColumnProfile",
        "ColumnSchema",
        "Histogram",
        "Profile",
        "QUANTILES",
        "Schema",
        "ValidationFailed",
        "ValidationReport",
        "gate",
        "infer_schema",
        "load_profile",
        "load_schema",
        "profile",
        "read_table",
        "validate",
    ]


def test_monitoring_namespace() -> None:
    assert sorted(kiln.monitoring.__all__) == [
        "ActionState",
        "AlertEvent",
        "ArmReport",
        "ColumnDrift",
        "ColumnReport",
        "DriftResult",
        "Evaluation",
        "FeatureSkew",
        "LabelBatch",
        "Log",
        "Monitor",
        "MonitorService",
        "MonitorValue",
        "MonitoringReport",
        "Observation",
        "QualityReport",
        "QualityRow",
        "Retrain",
        "Rollback",
        "Rule",
        "ServedDrift",
        "SkewResult",
        "Webhook",
        "drift",
        "evaluate",
        "events",
        "get_event",
        "history",
        "load_monitors",
        "log_labels",
        "quality",
        "report",
        "run_pending",
        "skew",
    ]


def test_models_namespace() -> None:
    assert sorted(kiln.models.__all__) == [
        "LoadedModel",
        "ModelContext",
        "PythonModel",
        "alias_history",
        "delete_alias",
        "delete_model",
        "delete_version",
        "get_model",
        "get_version",
        "lineage",
        "list_models",
        "list_versions",
        "load",
        "reference_profile",
        "register",
        "resolve",
        "rollback",
        "set_alias",
        "update_model",
    ]
    for name in kiln.models.__all__:
        assert hasattr(kiln.models, name), name


def test_error_hierarchy_has_one_root() -> None:
    """Every error is a KilnError; the one warning class roots the warnings."""
    for name in kiln.errors.__all__:
        error = getattr(kiln.errors, name)
        if issubclass(error, Warning):
            assert error is kiln.errors.KilnWarning, name
        else:
            assert issubclass(error, kiln.errors.KilnError), name


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package", ["cli", "ui"])
def test_cli_and_dashboard_use_only_public_modules(package: str) -> None:
    """DESIGN.md: the CLI and the dashboard are thin over the public API and never import
    another package's private modules (kiln.x._y)."""
    for path in (SRC / package).rglob("*.py"):
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "kiln" or parts[:2] == ["kiln", package]:
                continue
            assert not any(p.startswith("_") for p in parts), f"{path.name} imports {module}"
