"""Tables owned by serving, declared on the shared metadata (migrations in kiln.store)."""

from __future__ import annotations

import sqlalchemy as sa

from kiln.store import big_id, metadata

NAME = sa.String(128)

deployments = sa.Table(
    "kiln_deployments",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
)

deployment_events = sa.Table(
    "kiln_deployment_events",
    metadata,
    sa.Column("id", big_id, primary_key=True, autoincrement=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_deployment_events_name", "name", "id"),
)
