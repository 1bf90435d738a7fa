"""Flow schedules: cron schedules of flows, the due times schedulers claimed, and the
schedule that started a flow run.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiln_flow_schedules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("flow", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("executor", sa.String(length=256), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=True),
        sa.Column("missed", sa.String(length=16), nullable=False),
        sa.Column("workdir", sa.Text(), nullable=False),
        sa.Column("next_due_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_flow_schedules"),
        sa.UniqueConstraint("name", name="uq_kiln_flow_schedules_name"),
    )
    op.create_index(
        "ix_kiln_flow_schedules_next_due_at", "kiln_flow_schedules", ["next_due_at"], unique=False
    )
    op.create_table(
        "kiln_flow_schedule_runs",
        sa.Column("schedule_id", sa.String(length=32), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("skipped_from", sa.BigInteger(), nullable=True),
        sa.Column("claimed_at", sa.BigInteger(), nullable=False),
        sa.Column("claimed_by", sa.String(length=256), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["kiln_flow_schedules.id"],
            name="fk_kiln_flow_schedule_runs_schedule_id_kiln_flow_schedules",
        ),
        sa.PrimaryKeyConstraint("schedule_id", "due_at", name="pk_kiln_flow_schedule_runs"),
        sqlite_with_rowid=False,
    )
    op.add_column("kiln_flow_runs", sa.Column("schedule", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kiln_flow_runs") as batch:
        batch.drop_column("schedule")
    op.drop_table("kiln_flow_schedule_runs")
    op.drop_index("ix_kiln_flow_schedules_next_due_at", table_name="kiln_flow_schedules")
    op.drop_table("kiln_flow_schedules")
