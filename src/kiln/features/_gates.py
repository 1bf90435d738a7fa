"""Quality gates on feature views: ``FeatureView(..., checks=schema)`` validates the
view's rows when it is applied (all of them) and when it is materialized (the rows about
to go online), so bad source data stops at the store instead of reaching a model.

The gate checks the columns a view serves, its join keys and features; the schema's
rules for other columns (a source's time columns, which the engine normalizes) are left
out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from kiln.features import _sources
from kiln.features._sources import quote

__all__ = ["all_rows", "gate_rows"]


def gate_rows(view: Any, table: pa.Table, when: str) -> Any:
    """The validation report of ``table`` against the view's checks (None without any);
    raises :class:`kiln.validation.ValidationFailed` on an error."""
    from kiln.validation import Schema, gate

    checks = getattr(view, "checks", None)
    if checks is None:
        return None
    served = [*view.join_keys, *view.feature_names]
    data = table.select([c for c in served if c in table.column_names])
    schema = Schema(
        {name: rule for name, rule in checks.columns.items() if name in served},
        checks.allow_extra_columns,
    )
    return gate(data, schema, what=f"feature view {view.name!r} ({when})")


def all_rows(view: Any, offline_dir: Path) -> pa.Table:
    """Every row of the view, its join keys and features, as its source holds them."""
    import duckdb

    con = duckdb.connect()
    try:
        rows = _sources.rows(con, view, offline_dir)
        columns = ", ".join(quote(c) for c in (*view.join_keys, *rows.features))
        return con.sql(f"SELECT {columns} FROM ({rows.sql})").to_arrow_table()
    finally:
        con.close()
