"""Flows: flow runs, their tasks (one per step call or mapped item) and the step cache.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiln_flow_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("flow", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("executor", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_flow_runs"),
    )
    op.create_index(
        "ix_kiln_flow_runs_flow_created", "kiln_flow_runs", ["flow", "created_at"], unique=False
    )
    op.create_table(
        "kiln_flow_tasks",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=256), nullable=False),
        sa.Column("step", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("child_run_id", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("history", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["kiln_flow_runs.id"], name="fk_kiln_flow_tasks_run_id_kiln_flow_runs"
        ),
        sa.PrimaryKeyConstraint("run_id", "task", name="pk_kiln_flow_tasks"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "kiln_flow_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=256), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_kiln_flow_cache"),
    )
    op.create_index("ix_kiln_flow_cache_step", "kiln_flow_cache", ["step"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_kiln_flow_cache_step", table_name="kiln_flow_cache")
    op.drop_table("kiln_flow_cache")
    op.drop_table("kiln_flow_tasks")
    op.drop_index("ix_kiln_flow_runs_flow_created", table_name="kiln_flow_runs")
    op.drop_table("kiln_flow_runs")
