"""Tables owned by flows, declared on the shared metadata (migrations live in kiln.store)."""

from __future__ import annotations

import sqlalchemy as sa

from kiln.store import metadata

ID = sa.String(32)

flow_runs = sa.Table(
    "kiln_flow_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),  # the flow run's tracked run
    sa.Column("flow", sa.String(256), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),  # "pkg.module:function"
    sa.Column("params", sa.Text, nullable=False),  # JSON
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("executor", sa.String(32), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_kiln_flow_runs_flow_created", "flow", "created_at"),
)

flow_tasks = sa.Table(
    "kiln_flow_tasks",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("kiln_flow_runs.id"), primary_key=True),
    sa.Column("task", sa.String(256), primary_key=True),  # "train" or "train[3]"
    sa.Column("step", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("cache_key", sa.String(64), nullable=True),
    sa.Column("output", sa.Text, nullable=True),  # JSON reference to the stored value
    sa.Column("child_run_id", ID, nullable=True),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Column("history", sa.Text, nullable=False),  # JSON list: every attempt and its error
    sqlite_with_rowid=False,
)

flow_cache = sa.Table(
    "kiln_flow_cache",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("step", sa.String(256), nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_flow_cache_step", "step"),
)
