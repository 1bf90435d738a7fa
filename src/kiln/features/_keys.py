"""Entity keys as the views hold them: one conversion for online requests and spines.

The online store finds an entity by the JSON text of its key (``7`` and ``"7"`` differ)
while DuckDB would quietly cast ``'7'`` to ``7`` in an offline join, so the same request
could find a row offline and nothing online. Both paths therefore convert the keys they
are given to the type the views' source column holds (``key_types``, recorded by
``apply``) with :func:`convert_key`, and refuse what does not convert exactly:

- integer keys take integers, integral floats (``7.0``; NaN is a missing key) and
  integer text (``"7"``, ``"-3"``, ``"007"``); ``7.5``, ``"7.0"``, ``"abc"`` and booleans
  are refused, naming the key, the row and the value;
- string keys take text and integers (``7`` becomes ``"7"``); floats and booleans are
  refused, since their text is not one spelling of the value;
- boolean and timestamp keys take only their own type.

A missing key (``None``) stays missing: it finds no row on either path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput
from kiln.features.definitions import FeatureView, WindowedFeatureView

__all__ = ["convert_key", "key_types", "online_keys", "readable_keys", "spine_keys"]

_INTEGER_TEXT = r"^[+-]?[0-9]+$"
_TARGET = {
    "int64": pa.int64(),
    "int32": pa.int64(),  # one integer type, so int32 and int64 views of a key agree
    "string": pa.string(),
    "bool": pa.bool_(),
}
_WANTED = {
    "int64": "an integer (7, 7.0 or '7')",
    "int32": "an integer (7, 7.0 or '7')",
    "string": "text or an integer",
    "bool": "true or false",
    "timestamp": "a timestamp",
}


def _refuse(key: str, dtype: str, row: int, value: Any) -> InvalidInput:
    return InvalidInput(
        f"entity key {key!r}, row {row}: {value!r} does not convert to {dtype} exactly; "
        f"the views hold {key!r} as {dtype}, so send {_WANTED[dtype]}"
    )


def _first(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first true value, or None."""
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _check(values: Any, bad: Any, key: str, dtype: str, offset: int) -> None:
    row = _first(pc.fill_null(bad, False))
    if row is not None:
        raise _refuse(key, dtype, row + offset, values[row].as_py())


def convert_key(
    values: pa.Array | pa.ChunkedArray, dtype: str, key: str, *, offset: int = 0
) -> pa.Array | pa.ChunkedArray:
    """``values`` as the key type ``dtype``, or InvalidInput naming the first bad row.

    Vectorized (Arrow compute), so a million-row spine costs a few passes over one
    column. ``offset`` is added to row numbers in errors.
    """
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.cast(kind.value_type)
        kind = values.type
    if pa.types.is_null(kind):
        return values.cast(_TARGET.get(dtype, pa.timestamp("us")))
    if pa.types.is_large_string(kind):
        values = values.cast(pa.string())
        kind = values.type
    if dtype in ("int64", "int32"):
        if pa.types.is_integer(kind):
            if pa.types.is_uint64(kind):
                _check(values, pc.greater(values, 2**63 - 1), key, dtype, offset)
            return values.cast(pa.int64())
        if pa.types.is_floating(kind):
            values = pc.if_else(pc.is_nan(values), pa.scalar(None, kind), values)
            whole = pc.and_(pc.is_finite(values), pc.equal(values, pc.floor(values)))
            in_range = pc.and_(pc.greater_equal(values, -(2.0**63)), pc.less(values, 2.0**63))
            _check(values, pc.invert(pc.and_(whole, in_range)), key, dtype, offset)
            return values.cast(pa.int64())
        if pa.types.is_string(kind):
            text = pc.match_substring_regex(values, _INTEGER_TEXT)
            _check(values, pc.invert(text), key, dtype, offset)
            try:
                return values.cast(pa.int64())
            except pa.ArrowInvalid:  # integer text beyond int64: find it (an error path)
                for row, text in enumerate(values.to_pylist()):
                    if text is not None and not -(2**63) <= int(text) < 2**63:
                        raise _refuse(key, dtype, row + offset, text) from None
                raise
    elif dtype == "string":
        if pa.types.is_string(kind):
            return values
        if pa.types.is_integer(kind):
            return values.cast(pa.string())
    elif dtype == "bool":
        if pa.types.is_boolean(kind):
            return values
    elif dtype == "timestamp":
        if pa.types.is_timestamp(kind):
            return values
    else:
        return values
    # A type that never converts: refuse its first value, unless there is none.
    _check(values, pc.is_valid(values), key, dtype, offset)
    return values.cast(_TARGET.get(dtype, pa.timestamp("us")))


def key_types(views: Iterable[FeatureView | WindowedFeatureView]) -> dict[str, str]:
    """Join key -> dtype over the views one request reads; they must agree on each key."""
    found: dict[str, tuple[str, str]] = {}
    for view in views:
        for key, dtype in view.key_types.items():
            if key not in found:
                found[key] = (dtype, view.name)
                continue
            other, owner = found[key]
            if _TARGET.get(other, other) != _TARGET.get(dtype, dtype):
                raise InvalidInput(
                    f"views {owner!r} and {view.name!r} hold join key {key!r} as {other} and "
                    f"{dtype}: one key value cannot find the same entity in both; make the "
                    "source columns the same type"
                )
    return {key: dtype for key, (dtype, _) in found.items()}


def readable_keys(spine: Any, types: Mapping[str, str]) -> Any:
    """A pandas spine whose mixed-type key columns (``1`` beside ``"2"``) are converted.

    Arrow reads a column of one type; a pandas ``object`` column may hold several, as a
    list of online entity rows may, so such a column is converted value by value by the
    same rules. Other spines are returned as they are, for :func:`spine_keys`.
    """
    if not hasattr(spine, "dtypes"):
        return spine
    mixed = {}
    for key, dtype in types.items():
        if key in spine.columns and spine[key].dtype == object:
            try:
                pa.array(spine[key], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                mixed[key] = _convert_list(spine[key].tolist(), dtype, key)
    return spine.assign(**mixed) if mixed else spine


def spine_keys(spine: pa.Table, types: Mapping[str, str]) -> pa.Table:
    """A spine's key columns converted by :func:`convert_key` (the offline path)."""
    for key, dtype in types.items():
        i = spine.schema.get_field_index(key)
        if i >= 0:
            column = convert_key(spine.column(i), dtype, key)
            spine = spine.set_column(i, pa.field(key, column.type), column)
    return spine


_EXACT = {
    "int64": int,
    "int32": int,
    "string": str,
    "bool": bool,
}


def _exact(values: Sequence[Any], dtype: str) -> bool:
    """True when every value already has the key's Python type (no conversion needed)."""
    wanted = _EXACT.get(dtype)
    if wanted is None:
        return dtype != "timestamp" or all(isinstance(v, datetime) for v in values)
    return all(type(v) is wanted for v in values)


def _rows_exact(rows: list[Any], types: Mapping[str, str]) -> bool:
    """:func:`_exact` for a list of row mappings without building columns (the hot path).

    Malformed rows count as exact: the online store's read reports them.
    """
    try:
        for key, dtype in types.items():
            wanted = _EXACT.get(dtype)
            if wanted is None:
                return False
            for row in rows:
                if type(row[key]) is not wanted:
                    return False
    except (KeyError, TypeError):
        return True
    return True


def _convert_list(values: Sequence[Any], dtype: str, key: str) -> list[Any]:
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        # Mixed types (7 beside "8"): each value on its own, by the same rules.
        out: list[Any] = []
        for row, value in enumerate(values):
            try:
                one = pa.array([value], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                raise _refuse(key, dtype, row, value) from None
            out += convert_key(one, dtype, key, offset=row).to_pylist()
        return out
    return list(convert_key(array, dtype, key).to_pylist())


def online_keys(
    entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    types: Mapping[str, str],
) -> dict[str, list[Any]] | None:
    """Entity rows as columns with converted keys; None when no key needs converting.

    None too when the rows lack a key or are malformed: the online store's read then
    reports that in its own words.
    """
    if type(entity_rows) is list and _rows_exact(entity_rows, types):
        return None
    columns: dict[str, Sequence[Any]] = {}
    try:
        for key in types:
            if isinstance(entity_rows, Mapping):
                columns[key] = entity_rows[key]
            else:
                columns[key] = [row[key] for row in entity_rows]
    except (KeyError, TypeError):
        return None
    if all(_exact(columns[k], dtype) for k, dtype in types.items()):
        return None
    from kiln.features.on_demand import columns_dict  # it imports the offline engine

    out = columns_dict(entity_rows)
    for key, dtype in types.items():
        if not _exact(columns[key], dtype):
            out[key] = _convert_list(columns[key], dtype, key)
    return out
