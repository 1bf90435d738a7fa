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
    sa.Column("schedule", sa.String(128), nullable=True),  # the schedule that started it
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

flow_schedules = sa.Table(
    "kiln_flow_schedules",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("flow", sa.String(256), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("cron", sa.String(128), nullable=False),  # five fields or an @alias, in UTC
    sa.Column("params", sa.Text, nullable=False),  # JSON: name -> text, as --param takes it
    sa.Column("executor", sa.String(256), nullable=False),
    sa.Column("max_parallel", sa.Integer, nullable=True),
    sa.Column("missed", sa.String(16), nullable=False),  # skip, run-once
    sa.Column("workdir", sa.Text, nullable=False),  # where the target imports from
    # The due time no scheduler has acted on yet; claiming a due time moves it on, with a
    # compare-and-set, in the transaction that records the claim.
    sa.Column("next_due_at", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_flow_schedules_next_due_at", "next_due_at"),
)

# One row per due time a scheduler acted on: the key makes a second claim of the same due
# time impossible, whichever replica tries.
flow_schedule_runs = sa.Table(
    "kiln_flow_schedule_runs",
    metadata,
    sa.Column("schedule_id", ID, sa.ForeignKey("kiln_flow_schedules.id"), primary_key=True),
    sa.Column("due_at", sa.BigInteger, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # starting, started, failed, skipped
    sa.Column("run_id", ID, nullable=True),  # the flow run, once it has started
    sa.Column("skipped", sa.Integer, nullable=False),  # missed due times passed over
    sa.Column("skipped_from", sa.BigInteger, nullable=True),  # the first of them
    sa.Column("claimed_at", sa.BigInteger, nullable=False),
    sa.Column("claimed_by", sa.String(256), nullable=False),  # host:pid of the scheduler
    sa.Column("error", sa.Text, nullable=True),
    sqlite_with_rowid=False,
)
