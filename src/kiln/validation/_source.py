"""What a profile or a validation reads: any of the forms users hold data in, as one Arrow
table read once (a Parquet or Delta path is read from disk a single time per call)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from kiln.core import InvalidInput, NotFound

__all__ = ["describe", "read_table"]


def read_table(data: Any, what: str = "data") -> pa.Table:
    """``data`` as an Arrow table: a pandas DataFrame, an Arrow table or record batch, the
    path of a Parquet file, a directory of Parquet files or a Delta table, or anything
    with a ``to_arrow()`` (a training set, a saved dataset snapshot)."""
    if isinstance(data, pa.Table):
        return data
    to_arrow = getattr(data, "to_arrow", None)
    if callable(to_arrow) and not isinstance(data, type):
        table = to_arrow()
        if not isinstance(table, pa.Table):
            raise InvalidInput(
                f"{what}: {type(data).__name__}.to_arrow() gave {type(table).__name__}, "
                "not an Arrow table"
            )
        return table
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, str | Path):
        return _read_path(Path(data), what)
    if type(data).__name__ == "DataFrame" and type(data).__module__.startswith("pandas"):
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInput(
                f"{what}: a DataFrame column cannot be read as Arrow: {exc}"
            ) from None
    raise InvalidInput(
        f"{what} must be a pandas DataFrame, a pyarrow Table, the path of a Parquet file, "
        "a directory of Parquet files or a Delta table, or a training set; got "
        f"{type(data).__name__}"
    )


def _read_path(path: Path, what: str) -> pa.Table:
    if not path.exists():
        raise NotFound(f"{what}: no such file or directory: {str(path)!r}")
    try:
        if path.is_dir() and (path / "_delta_log").is_dir():
            from deltalake import DeltaTable

            return DeltaTable(str(path)).to_pyarrow_table()
        import pyarrow.parquet as pq

        return pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInput(
            f"{what}: {str(path)!r} cannot be read as Parquet or Delta: {exc}"
        ) from None


def describe(data: Any) -> str:
    """Where the data came from, for a profile's record: the path, or its kind."""
    if isinstance(data, str | Path):
        return str(Path(data).resolve())
    return type(data).__name__
