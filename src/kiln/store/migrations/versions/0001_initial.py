"""Initial schema: experiments, runs, params, tags, metrics, artifacts, lineage edges.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiln_environments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_environments"),
    )
    op.create_table(
        "kiln_experiments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_experiments"),
        sa.UniqueConstraint("name", name="uq_kiln_experiments_name"),
    )
    op.create_table(
        "kiln_lineage_edges",
        sa.Column("src_kind", sa.String(length=64), nullable=False),
        sa.Column("src_id", sa.String(length=256), nullable=False),
        sa.Column("relation", sa.String(length=64), nullable=False),
        sa.Column("dst_kind", sa.String(length=64), nullable=False),
        sa.Column("dst_id", sa.String(length=256), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "src_kind", "src_id", "relation", "dst_kind", "dst_id", name="pk_kiln_lineage_edges"
        ),
    )
    op.create_index(
        "ix_kiln_lineage_edges_dst", "kiln_lineage_edges", ["dst_kind", "dst_id"], unique=False
    )
    op.create_table(
        "kiln_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("heartbeat_at", sa.BigInteger(), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("environment_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["kiln_environments.id"],
            name="fk_kiln_runs_environment_id_kiln_environments",
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["kiln_experiments.id"],
            name="fk_kiln_runs_experiment_id_kiln_experiments",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["kiln_runs.id"], name="fk_kiln_runs_parent_id_kiln_runs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_runs"),
    )
    op.create_index(
        "ix_kiln_runs_experiment_start", "kiln_runs", ["experiment_id", "start_time"], unique=False
    )
    op.create_index("ix_kiln_runs_parent", "kiln_runs", ["parent_id"], unique=False)
    op.create_index(
        "ix_kiln_runs_status_heartbeat", "kiln_runs", ["status", "heartbeat_at"], unique=False
    )
    op.create_table(
        "kiln_artifacts",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["kiln_runs.id"], name="fk_kiln_artifacts_run_id_kiln_runs"
        ),
        sa.PrimaryKeyConstraint("run_id", "path", name="pk_kiln_artifacts"),
    )
    op.create_table(
        "kiln_latest_metrics",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("is_nan", sa.Boolean(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["kiln_runs.id"], name="fk_kiln_latest_metrics_run_id_kiln_runs"
        ),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_kiln_latest_metrics"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_kiln_latest_metrics_key_value",
        "kiln_latest_metrics",
        ["key", "is_nan", "value"],
        unique=False,
    )
    op.create_table(
        "kiln_metrics",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("is_nan", sa.Boolean(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["kiln_runs.id"], name="fk_kiln_metrics_run_id_kiln_runs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_metrics"),
    )
    op.create_index(
        "ix_kiln_metrics_run_key_step", "kiln_metrics", ["run_id", "key", "step"], unique=False
    )
    op.create_table(
        "kiln_params",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("value_type", sa.String(length=8), nullable=False),
        sa.Column("num_value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["kiln_runs.id"], name="fk_kiln_params_run_id_kiln_runs"
        ),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_kiln_params"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "kiln_tags",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["kiln_runs.id"], name="fk_kiln_tags_run_id_kiln_runs"),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_kiln_tags"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("kiln_tags")
    op.drop_table("kiln_params")
    op.drop_table("kiln_metrics")
    op.drop_table("kiln_latest_metrics")
    op.drop_table("kiln_artifacts")
    op.drop_table("kiln_runs")
    op.drop_table("kiln_lineage_edges")
    op.drop_table("kiln_experiments")
    op.drop_table("kiln_environments")
