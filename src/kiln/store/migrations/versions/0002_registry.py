"""Model registry: registered models, versions, aliases and the alias history.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiln_registered_models",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_kiln_registered_models"),
    )
    op.create_table(
        "kiln_model_versions",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("flavor", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("files", sa.Text(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("environment", sa.Text(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"],
            ["kiln_registered_models.name"],
            name="fk_kiln_model_versions_name_kiln_registered_models",
        ),
        sa.PrimaryKeyConstraint("name", "version", name="pk_kiln_model_versions"),
        sa.UniqueConstraint("id", name="uq_kiln_model_versions_id"),
    )
    op.create_index("ix_kiln_model_versions_run", "kiln_model_versions", ["run_id"], unique=False)
    op.create_table(
        "kiln_model_aliases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"],
            ["kiln_registered_models.name"],
            name="fk_kiln_model_aliases_name_kiln_registered_models",
        ),
        sa.PrimaryKeyConstraint("name", "alias", name="pk_kiln_model_aliases"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "kiln_alias_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kiln_alias_events"),
    )
    op.create_index(
        "ix_kiln_alias_events_name_alias",
        "kiln_alias_events",
        ["name", "alias", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_kiln_alias_events_name_alias", table_name="kiln_alias_events")
    op.drop_table("kiln_alias_events")
    op.drop_table("kiln_model_aliases")
    op.drop_index("ix_kiln_model_versions_run", table_name="kiln_model_versions")
    op.drop_table("kiln_model_versions")
    op.drop_table("kiln_registered_models")
