"""The shared SQLAlchemy ``MetaData`` every capability declares its tables on."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["big_id", "metadata"]

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# An auto-increment key: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
