"""Layer 5: watching models in production.

Kiln logs every prediction with the features served and the version that answered;
monitoring reads that log. ``drift`` compares two datasets column by column (numbers by
KS, PSI or Wasserstein, categories by chi-square or Jensen-Shannon); ``log_labels``
stores the true outcomes as they arrive (by request id, or by entity and time) and
``quality`` scores the predictions they label, per model version, traffic arm and window.
``skew`` recomputes a sample of the served features offline, point in time at each
request, and names the features whose served values differ (training-serving skew).
Rules (``Rule``, grouped per deployment in a ``Monitor``, as code or TOML) judge drift,
missing and skew rates and live quality; ``evaluate`` opens and resolves alert
``events`` with actions (log, webhook, rollback, retraining flow), and a
``MonitorService`` evaluates on a schedule and exports the values as Prometheus metrics.
``history`` reads back every value an evaluation measured (drift over time); ``report``
gathers drift, the histograms behind it and quality into one record, rendered
as a dict, Rich tables or one self-contained HTML file.
"""

from kiln.monitoring._actions import run_pending
from kiln.monitoring.alerts import (
    ActionState,
    AlertEvent,
    Evaluation,
    Observation,
    evaluate,
    events,
    get_event,
)
from kiln.monitoring.drift import ColumnDrift, DriftResult, drift
from kiln.monitoring.history import MonitorValue, history
from kiln.monitoring.labels import LabelBatch, log_labels
from kiln.monitoring.quality import QualityReport, QualityRow, quality
from kiln.monitoring.report import ArmReport, ColumnReport, MonitoringReport, report
from kiln.monitoring.rules import (
    Log,
    Monitor,
    Retrain,
    Rollback,
    Rule,
    Webhook,
    load_monitors,
)
from kiln.monitoring.served import ServedDrift
from kiln.monitoring.service import MonitorService
from kiln.monitoring.skew import FeatureSkew, SkewResult, skew

__all__ = [
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
