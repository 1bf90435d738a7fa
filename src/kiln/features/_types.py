"""Which source column types a declared feature dtype takes, and what a column's dtype is.

The rule is one sentence: a source column is accepted for a declared dtype when **every
value its type can hold has an exact value of the declared type with the same meaning**.
So the cast can neither fail on some row nor change a value, and ``apply`` can decide it
from the schema alone, without reading rows. Wider integers, wider floats and integers of
at most 32 bits into ``float64`` (16 bits into ``float32``) pass; text into numbers,
floats into integers, numbers into timestamps and ``int64`` into ``float64`` (which
rounds above 2**53) are refused. Times are the exception that proves it: every temporal
type is a ``timestamp``, since Kiln compares all times at microsecond precision.

DuckDB type names are what the offline engine sees for Parquet, Delta and SQL sources.
"""

from __future__ import annotations

__all__ = ["cast_problem", "dtype_of"]

_SMALL_INTS = frozenset({"TINYINT", "SMALLINT", "UTINYINT", "USMALLINT"})
_INT32 = _SMALL_INTS | {"INTEGER"}
_INT64 = _INT32 | {"BIGINT", "UINTEGER"}

# Declared dtype -> the source types whose every value it holds exactly.
_TAKES: dict[str, frozenset[str]] = {
    "float64": frozenset({"DOUBLE", "FLOAT"} | _INT32 | {"UINTEGER"}),
    "float32": frozenset({"FLOAT"} | _SMALL_INTS),
    "int64": frozenset(_INT64),
    "int32": frozenset(_INT32),
    "bool": frozenset({"BOOLEAN"}),
    "string": frozenset({"VARCHAR"}),
    "timestamp": frozenset(),  # temporal types, by prefix below
}

# Source type -> the dtype a feature of that column gets when the schema is inferred.
_INFERRED = {
    "DOUBLE": "float64",
    "FLOAT": "float32",
    "BIGINT": "int64",
    "UINTEGER": "int64",
    **dict.fromkeys(_INT32, "int32"),
    "BOOLEAN": "bool",
    "VARCHAR": "string",
}


def _is_temporal(duck_type: str) -> bool:
    return duck_type == "DATE" or duck_type.startswith("TIMESTAMP")


def dtype_of(duck_type: str) -> str | None:
    """The Kiln dtype that holds every value of a source column type; None if none does."""
    t = duck_type.upper()
    if _is_temporal(t):
        return "timestamp"
    if t.startswith("ENUM"):
        return "string"
    return _INFERRED.get(t)


def cast_problem(duck_type: str, declared: str) -> str | None:
    """Why a column of ``duck_type`` cannot be read as ``declared``; None when it can."""
    t = duck_type.upper()
    if t == "NULL":  # an untyped NULL column (from SQL) holds nothing to lose
        return None
    if declared == "timestamp":
        ok = _is_temporal(t)
    elif declared == "string":
        ok = t == "VARCHAR" or t.startswith("ENUM")
    else:
        ok = t in _TAKES[declared]
    if ok:
        return None
    fits = dtype_of(t)
    hint = f"declare it {fits}" if fits else "leave it out of the schema"
    return (
        f"{duck_type} does not convert to {declared} without failing or changing values; "
        f"{hint}, or cast it in the view's transformation if the conversion is intended"
    )
