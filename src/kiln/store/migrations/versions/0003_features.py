"""Feature store: versioned definitions and materialization watermarks.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiln_feature_definitions",
        sa.Column("namespace", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "name", "version", name="pk_kiln_feature_definitions"),
    )
    op.create_table(
        "kiln_materializations",
        sa.Column("view", sa.String(length=128), nullable=False),
        sa.Column("view_version", sa.Integer(), nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("view", "view_version", name="pk_kiln_materializations"),
    )


def downgrade() -> None:
    op.drop_table("kiln_materializations")
    op.drop_table("kiln_feature_definitions")
