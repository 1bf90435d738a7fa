"""Tables owned by monitoring, declared on the shared metadata (migrations in kiln.store)."""

from __future__ import annotations

import sqlalchemy as sa

from kiln.store import big_id, metadata

ID = sa.String(32)
NAME = sa.String(128)
KEY = sa.String(64)  # sha256 hex of (deployment, rule, subject)

# One row per (deployment, rule, subject) ever evaluated: how many evaluations in a row
# have breached, so a rule with for_windows=N fires on the N-th.
monitor_conditions = sa.Table(
    "kiln_monitor_conditions",
    metadata,
    sa.Column("key", KEY, primary_key=True),
    sa.Column("deployment", NAME, nullable=False),
    sa.Column("rule", NAME, nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("breaches", sa.Integer, nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("evaluated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_monitor_conditions_deployment", "deployment", "rule"),
)

# An alert: opened when a condition has breached for its rule's windows, resolved when it
# clears. ``open_key`` is the condition's key while the event is firing and null once it
# is resolved: the unique key keeps one open event per condition, whoever evaluates.
alert_events = sa.Table(
    "kiln_alert_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("open_key", KEY, nullable=True, unique=True),
    sa.Column("deployment", NAME, nullable=False),
    sa.Column("rule", NAME, nullable=False),
    sa.Column("subject", sa.String(512), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("feature", sa.String(256), nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("arm", sa.String(64), nullable=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # firing, resolved
    sa.Column("value", sa.Float, nullable=True),  # the latest value that breached
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("last_seen_at", sa.BigInteger, nullable=False),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Index("ix_kiln_alert_events_deployment", "deployment", "started_at"),
)

# What an event does, one row per action: written with the event, in its transaction, so
# an action is never forgotten; run afterwards and retried until done (or given up).
alert_actions = sa.Table(
    "kiln_alert_actions",
    metadata,
    sa.Column("event_id", ID, sa.ForeignKey("kiln_alert_events.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),  # log, webhook, rollback, retrain
    sa.Column("spec", sa.Text, nullable=False),  # JSON: the action's settings
    sa.Column("state", sa.String(16), nullable=False),  # pending, running, done, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.BigInteger, nullable=False),  # not retried before then
    sa.Column("claimed_at", sa.BigInteger, nullable=True),
    sa.Column("result", sa.Text, nullable=True),  # JSON: what it did, or its last error
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_alert_actions_state", "state", "next_at"),
    sqlite_with_rowid=False,
)

# Every value an evaluation measured, for history (drift over time) and the metrics.
monitor_values = sa.Table(
    "kiln_monitor_values",
    metadata,
    sa.Column("id", big_id, primary_key=True, autoincrement=True),
    sa.Column("deployment", NAME, nullable=False),
    sa.Column("evaluated_at", sa.BigInteger, nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("arm", sa.String(64), nullable=True),
    sa.Column("feature", sa.String(256), nullable=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Index("ix_kiln_monitor_values_deployment", "deployment", "evaluated_at"),
)
