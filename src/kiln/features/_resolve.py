"""What ``plan`` and ``apply`` fill in from the source before a view is compared or stored.

A definition names its source the way its author wrote it; what is stored must mean the
same in every process that reads it later. So, before a view is diffed or stored:

- relative file paths become absolute, against the directory of the definitions (the
  working directory of ``apply``, or the definitions file's directory), so that
  ``materialize`` and ``kiln serve`` read the same files from any working directory;
- a view without ``schema`` gets every source column that is not a join key or a time
  column, typed by the source (see :mod:`kiln.features._types`);
- ``key_types`` records the type the source holds each join key in, which online
  requests and spines are converted to (see :mod:`kiln.features._keys`).

Only schemas are read (Parquet footers, Delta logs, a bound query), never rows.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kiln.core import InvalidInput
from kiln.features import _sources
from kiln.features._types import dtype_of
from kiln.features.definitions import (
    KEY_DTYPES,
    DeltaSource,
    FeatureView,
    Field,
    ParquetSource,
    Source,
    SQLSource,
    WindowedFeatureView,
)

__all__ = ["absolute_source", "resolve_view"]

View = FeatureView | WindowedFeatureView


def _absolute(path: str, base: Path) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def absolute_source(source: Source, base: Path) -> Source:
    """The source with its relative file paths resolved against ``base``."""
    if isinstance(source, ParquetSource | DeltaSource):
        path = _absolute(source.path, base)
        return source if path == source.path else dataclasses.replace(source, path=path)
    if isinstance(source, SQLSource):
        subs = {n: absolute_source(s, base) for n, s in source.sources.items()}
        if subs == dict(source.sources):
            return source
        return dataclasses.replace(source, sources=subs)  # type: ignore[arg-type]
    return source


def _inferred(view: FeatureView, found: dict[str, str]) -> tuple[Field, ...]:
    skip = {*view.join_keys, view.source.timestamp, view.source.created}
    fields = []
    for name, duck_type in found.items():
        if name in skip or name in _sources.RESERVED:
            continue
        dtype = dtype_of(duck_type)
        if dtype is None:
            raise InvalidInput(
                f"{_sources.describe(view)}: column {name!r} of its source is {duck_type}, "
                "which no feature dtype holds; declare schema= with the columns to use, or "
                "convert it in the view's transformation"
            )
        fields.append(Field(name, dtype))
    if not fields:
        raise InvalidInput(
            f"{_sources.describe(view)}: its source has no feature columns besides the join "
            f"keys and time columns ({', '.join(found)})"
        )
    return tuple(fields)


def _integer(dtype: str) -> str:
    return "int64" if dtype == "int32" else dtype


def _keys(view: View, found: dict[str, str]) -> dict[str, str]:
    """Declared key types (checked against the source) over the source's own."""
    keys = {
        k: dtype
        for k in view.join_keys
        if k in found and (dtype := dtype_of(found[k])) in KEY_DTYPES
    }
    for key, declared in view.key_types.items():
        if key in keys and _integer(keys[key]) != _integer(declared):
            raise InvalidInput(
                f"{_sources.describe(view)}: join key {key!r} is declared {declared}, but its "
                f"source column is {found[key]}"
            )
    return {**keys, **view.key_types}


def resolve_view(view: View, base: Path) -> tuple[View, tuple[Field, ...]]:
    """The view as it is stored, and the fields inferred for it (empty when declared)."""
    from kiln.features.offline import _connect

    source = absolute_source(view.source, base)
    if source is not view.source:
        view = dataclasses.replace(view, source=source)
    changes: dict[str, object] = {}
    con = _connect()
    try:
        found = _sources.source_types(con, view)
    finally:
        con.close()
    inferred: tuple[Field, ...] = ()
    if found is not None:
        if isinstance(view, FeatureView) and not view.schema:
            inferred = _inferred(view, found)
            changes["schema"] = inferred
        keys = _keys(view, found)
        if keys != dict(view.key_types):
            changes["key_types"] = keys
    if changes:
        view = dataclasses.replace(view, **changes)  # type: ignore[arg-type]
    return view, inferred
