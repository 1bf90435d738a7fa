"""Alembic environment: migrations run on the connection kiln hands over, inside its lock."""

from __future__ import annotations

from alembic import context

from kiln.store.metadata_store import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - kiln always passes its connection
    raise RuntimeError("kiln migrations run through MetadataStore.upgrade()")

context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    transactional_ddl=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
