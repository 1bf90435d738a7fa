"""Tables owned by the feature store, declared on the shared metadata (migrations in kiln.store)."""

from __future__ import annotations

import sqlalchemy as sa

from kiln.store import metadata

feature_definitions = sa.Table(
    "kiln_feature_definitions",
    metadata,
    sa.Column("namespace", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

materializations = sa.Table(
    "kiln_materializations",
    metadata,
    sa.Column("view", sa.String(128), primary_key=True),
    sa.Column("view_version", sa.Integer, primary_key=True),
    sa.Column("watermark", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("newest_event", sa.BigInteger, nullable=True),  # ms; newest event time written
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
