"""Layer 5: watching models in production.

Kiln logs every prediction with the features served and the version that answered;
monitoring reads that log. ``drift`` compares two datasets column by column (numbers by
KS, PSI or Wasserstein, categories by chi-square or Jensen-Shannon); ``log_labels``
stores the true outcomes as they arrive (by request id, or by entity and time) and
``quality`` scores the predictions they label, per model version, traffic arm and window.
``report`` gathers drift, the histograms behind it and quality into one record, rendered
as a dict, Rich tables or one self-contained HTML file.
"""

from kiln.monitoring.drift import ColumnDrift, DriftResult, drift
from kiln.monitoring.labels import LabelBatch, log_labels
from kiln.monitoring.quality import QualityReport, QualityRow, quality
from kiln.monitoring.report import ArmReport, ColumnReport, MonitoringReport, report
from kiln.monitoring.served import ServedDrift

__all__ = [
    "ArmReport",
    "ColumnDrift",
    "ColumnReport",
    "DriftResult",
    "LabelBatch",
    "MonitoringReport",
    "QualityReport",
    "QualityRow",
    "ServedDrift",
    "drift",
    "log_labels",
    "quality",
    "report",
]
