"""The dashboard's pages, one module per area; each handler reads only the public SDK."""

from kiln.ui.pages.charts import metric_series
from kiln.ui.pages.deployments import deployment_action, deployment_page, deployments
from kiln.ui.pages.features import feature_definition, features
from kiln.ui.pages.flows import flow_action, flow_run, flow_runs
from kiln.ui.pages.home import experiments, home
from kiln.ui.pages.models import model_page, models, version_page
from kiln.ui.pages.monitoring import (
    monitoring,
    monitoring_deployment,
    monitoring_event,
    monitoring_skew,
)
from kiln.ui.pages.run import artifact_page, artifact_raw, compare, run_page
from kiln.ui.pages.runs import runs_table
from kiln.ui.pages.search import search
from kiln.ui.pages.studies import studies, study_page

__all__ = [
    "artifact_page",
    "artifact_raw",
    "compare",
    "deployment_action",
    "deployment_page",
    "deployments",
    "experiments",
    "feature_definition",
    "features",
    "flow_action",
    "flow_run",
    "flow_runs",
    "home",
    "metric_series",
    "model_page",
    "models",
    "monitoring",
    "monitoring_deployment",
    "monitoring_event",
    "monitoring_skew",
    "run_page",
    "runs_table",
    "search",
    "studies",
    "study_page",
    "version_page",
]
