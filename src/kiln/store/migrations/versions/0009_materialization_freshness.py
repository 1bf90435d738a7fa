"""Feature freshness: the newest event time each view version's materializations wrote.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "kiln_materializations", sa.Column("newest_event", sa.BigInteger(), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("kiln_materializations") as batch:
        batch.drop_column("newest_event")
