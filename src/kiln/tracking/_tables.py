"""Tables owned by tracking, declared on the shared metadata (migrations live in kiln.store)."""

from __future__ import annotations

import sqlalchemy as sa

from kiln.store import big_id, metadata

ID = sa.String(32)

experiments = sa.Table(
    "kiln_experiments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

environments = sa.Table(
    "kiln_environments",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

runs = sa.Table(
    "kiln_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("experiment_id", ID, sa.ForeignKey("kiln_experiments.id"), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_time", sa.BigInteger, nullable=False),
    sa.Column("end_time", sa.BigInteger, nullable=True),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
    sa.Column("parent_id", ID, sa.ForeignKey("kiln_runs.id"), nullable=True),
    sa.Column("environment_id", sa.String(64), sa.ForeignKey("kiln_environments.id")),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_kiln_runs_experiment_start", "experiment_id", "start_time"),
    sa.Index("ix_kiln_runs_status_heartbeat", "status", "heartbeat_at"),
    sa.Index("ix_kiln_runs_parent", "parent_id"),
)

params = sa.Table(
    "kiln_params",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("kiln_runs.id"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("value_type", sa.String(8), nullable=False),
    sa.Column("num_value", sa.Float, nullable=True),
    sqlite_with_rowid=False,
)

tags = sa.Table(
    "kiln_tags",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("kiln_runs.id"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sqlite_with_rowid=False,
)

metrics = sa.Table(
    "kiln_metrics",
    metadata,
    sa.Column("id", big_id, primary_key=True, autoincrement=True),
    sa.Column("run_id", ID, sa.ForeignKey("kiln_runs.id"), nullable=False),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("is_nan", sa.Boolean, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_metrics_run_key_step", "run_id", "key", "step"),
)

latest_metrics = sa.Table(
    "kiln_latest_metrics",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("kiln_runs.id"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("is_nan", sa.Boolean, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_latest_metrics_key_value", "key", "is_nan", "value"),
    sqlite_with_rowid=False,
)

artifacts = sa.Table(
    "kiln_artifacts",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("kiln_runs.id"), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

lineage_edges = sa.Table(
    "kiln_lineage_edges",
    metadata,
    sa.Column("src_kind", sa.String(64), primary_key=True),
    sa.Column("src_id", sa.String(256), primary_key=True),
    sa.Column("relation", sa.String(64), primary_key=True),
    sa.Column("dst_kind", sa.String(64), primary_key=True),
    sa.Column("dst_id", sa.String(256), primary_key=True),
    sa.Column("properties", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_lineage_edges_dst", "dst_kind", "dst_id"),
)
