"""Tables owned by the registry, declared on the shared metadata (migrations in kiln.store)."""

from __future__ import annotations

import sqlalchemy as sa

from kiln.store import big_id, metadata

NAME = sa.String(128)

registered_models = sa.Table(
    "kiln_registered_models",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("next_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

model_versions = sa.Table(
    "kiln_model_versions",
    metadata,
    sa.Column("name", NAME, sa.ForeignKey("kiln_registered_models.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("flavor", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("files", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("git_commit", sa.String(64), nullable=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_model_versions_run", "run_id"),
)

model_aliases = sa.Table(
    "kiln_model_aliases",
    metadata,
    sa.Column("name", NAME, sa.ForeignKey("kiln_registered_models.name"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

alias_events = sa.Table(
    "kiln_alias_events",
    metadata,
    sa.Column("id", big_id, primary_key=True, autoincrement=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=True),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_kiln_alias_events_name_alias", "name", "alias", "id"),
)
