"""Monitoring: alert conditions, events and their actions, and the values evaluations measured.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiln_monitor_conditions",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("breaches", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("evaluated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_kiln_monitor_conditions"),
    )
    op.create_index(
        "ix_kiln_monitor_conditions_deployment",
        "kiln_monitor_conditions",
        ["deployment", "rule"],
        unique=False,
    )
    op.create_table(
        "kiln_alert_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("open_key", sa.String(length=64), nullable=True),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("feature", sa.String(length=256), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("arm", sa.String(length=64), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_alert_events"),
        sa.UniqueConstraint("open_key", name="uq_kiln_alert_events_open_key"),
    )
    op.create_index(
        "ix_kiln_alert_events_deployment",
        "kiln_alert_events",
        ["deployment", "started_at"],
        unique=False,
    )
    op.create_table(
        "kiln_alert_actions",
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.BigInteger(), nullable=False),
        sa.Column("claimed_at", sa.BigInteger(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["kiln_alert_events.id"],
            name="fk_kiln_alert_actions_event_id_kiln_alert_events",
        ),
        sa.PrimaryKeyConstraint("event_id", "position", name="pk_kiln_alert_actions"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_kiln_alert_actions_state", "kiln_alert_actions", ["state", "next_at"], unique=False
    )
    op.create_table(
        "kiln_monitor_values",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("evaluated_at", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("arm", sa.String(length=64), nullable=True),
        sa.Column("feature", sa.String(length=256), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_monitor_values"),
    )
    op.create_index(
        "ix_kiln_monitor_values_deployment",
        "kiln_monitor_values",
        ["deployment", "evaluated_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_kiln_monitor_values_deployment", table_name="kiln_monitor_values")
    op.drop_table("kiln_monitor_values")
    op.drop_index("ix_kiln_alert_actions_state", table_name="kiln_alert_actions")
    op.drop_table("kiln_alert_actions")
    op.drop_index("ix_kiln_alert_events_deployment", table_name="kiln_alert_events")
    op.drop_table("kiln_alert_events")
    op.drop_index("ix_kiln_monitor_conditions_deployment", table_name="kiln_monitor_conditions")
    op.drop_table("kiln_monitor_conditions")
