"""JSON values to typed numpy columns, by the rules every protocol shares.

A column of the model's signature accepts, from JSON:

- a float column (``float16/32/64``): numbers (integers too); ``null`` is a missing value
  (NaN); a number beyond the column's float range is refused;
- an integer column: integral numbers within the column's range (``3`` or ``3.0``);
- a ``bool`` column: ``true`` / ``false``;
- a ``string`` / ``category`` column: strings, ``null`` for missing;
- a ``datetime64`` column: ISO-8601 strings without a time zone (``2024-05-01T12:30:00``),
  ``null`` for missing (NaT).

Booleans are never numbers and numbers never strings. The numeric paths run in numpy;
Python walks the values only to name the first bad one, or when the body holds a JSON
``true``/``false`` somewhere (``has_bools``) and a boolean might hide among numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.registry.signature import ColumnSpec
from kiln.serving.protocols._json import ProtocolError

__all__ = [
    "Columns",
    "Plan",
    "a_column",
    "column_from_json",
    "column_from_text",
    "describe",
    "family",
    "has_bools",
    "inexact",
    "join",
    "jsonable",
    "number_schema",
    "plan",
    "stack",
    "value_schema",
]

Columns = dict[str, np.ndarray]

#: float64 holds every integer of magnitude below this, and not all from here on
FLOAT_EXACT = 2.0**53
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?$")
DATETIME_PATTERN = DATETIME_RE.pattern
_TEXT = ("string", "object", "category")


def has_bools(body: bytes) -> bool:
    """Whether a JSON body may hold a boolean (cheap; checked before trusting numpy)."""
    return b"true" in body or b"false" in body


_FAMILIES: dict[str, str] = {}


def family(spec: ColumnSpec) -> str:
    """``float``, ``int``, ``uint``, ``bool``, ``text`` or ``datetime``."""
    found = _FAMILIES.get(spec.dtype)
    if found is not None:
        return found
    dtype = spec.dtype
    if dtype in _TEXT:
        found = "text"
    elif dtype.startswith("datetime64"):
        found = "datetime"
    else:
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = "O"
        found = {"f": "float", "i": "int", "u": "uint", "b": "bool"}.get(kind, "text")
    _FAMILIES[dtype] = found
    return found


_NUMERIC = ("float", "int", "uint", "bool")


class Plan:
    """What the codecs need to know about a list of columns, worked out once per list."""

    __slots__ = ("dtypes", "families", "index", "names", "source", "specs", "text", "uniform")

    def __init__(self, source: object, specs: Sequence[ColumnSpec]) -> None:
        self.source = source
        self.specs = tuple(specs)
        self.names = tuple(s.name or "" for s in self.specs)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.families = tuple(family(s) for s in self.specs)
        self.dtypes: tuple[np.dtype[Any] | None, ...] = tuple(
            np.dtype(s.dtype) if f in _NUMERIC else None
            for s, f in zip(self.specs, self.families, strict=True)
        )
        kinds = set(self.dtypes)
        uniform = next(iter(kinds)) if len(kinds) == 1 else None
        #: the one numeric dtype of every column, when they share one: stack into a matrix
        self.uniform: np.dtype[Any] | None = uniform
        #: the first column a numeric matrix cannot hold (text or datetime), if any
        self.text: ColumnSpec | None = next(
            (s for s, f in zip(self.specs, self.families, strict=True) if f not in _NUMERIC),
            None,
        )


_PLANS: dict[int, Plan] = {}


def plan(source: object, specs: Sequence[ColumnSpec]) -> Plan:
    """The cached :class:`Plan` of ``specs`` (``source``: the object that owns them)."""
    found = _PLANS.get(id(source))
    if found is not None and found.source is source:
        return found
    if len(_PLANS) > 1024:
        _PLANS.clear()
    made = _PLANS[id(source)] = Plan(source, specs)
    return made


def a_column(dtype: str) -> str:
    """``an int64 column``, ``a float32 column``."""
    return f"{'an' if dtype[:1] in ('i', 'o') else 'a'} {dtype} column"


def join(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "(none)"


def describe(value: Any) -> str:
    """A JSON value as a message shows it: ``the string 'abc'``, ``null``, ``true``."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _first_bool(values: Sequence[Any]) -> int | None:
    for i, v in enumerate(values):
        if v is True or v is False:
            return i
    return None


def _float_range(dtype: np.dtype[Any]) -> float:
    return float(np.finfo(dtype).max)


def _at(arr: np.ndarray, flat: int, columns: Sequence[str] | None) -> str:
    """Where element ``flat`` of ``arr`` is: ``row 3``, ``row 3, column 'count'``."""
    if arr.ndim == 0:
        return "value"
    index = np.unravel_index(flat, arr.shape)
    where = f"row {int(index[0])}"
    if arr.ndim == 2:
        j = int(index[1])
        shown = repr(columns[j]) if columns is not None and j < len(columns) else str(j)
        where += f", column {shown}"
    elif arr.ndim > 2:
        where += f", element {[int(i) for i in index[1:]]}"
    return where


def _first(arr: np.ndarray, mask: np.ndarray, columns: Sequence[str] | None) -> tuple[str, Any]:
    """The position and value of the first element where ``mask`` holds."""
    flat = int(np.argmax(mask.ravel()))
    return _at(arr, flat, columns), arr.ravel()[flat].item()


def check_float_range(
    arr: np.ndarray, target: np.dtype[Any], where: str, columns: Sequence[str] | None = None
) -> None:
    """Refuse values a narrower float column would turn into infinity."""
    if target.itemsize >= 8 or not arr.size or arr.dtype.kind not in "fiu":
        return
    limit = _float_range(target)
    hi, lo = arr.max(), arr.min()
    if hi > limit or lo < -limit:  # NaN compares false: missing values pass
        at, bad = _first(arr, np.abs(arr) > limit, columns)
        raise ProtocolError(
            f"{where}: {at}: {bad!r} is out of range for {target.name} (|x| <= {limit:g})"
        )


def check_int_range(
    arr: np.ndarray, target: np.dtype[Any], where: str, columns: Sequence[str] | None = None
) -> None:
    """Refuse integral values outside ``target``'s range, naming the first one and where."""
    if not arr.size:
        return
    info = np.iinfo(target)
    src = arr.dtype
    if src.kind in "iu" and np.iinfo(src).min >= info.min and np.iinfo(src).max <= info.max:
        return
    hi, lo = arr.max(), arr.min()
    if src.kind == "f":  # compare in floats exactly: the integer bounds are 2**k - 1
        over, under = bool(hi >= float(info.max) + 1.0), bool(lo < float(info.min))
        if target == np.int64:  # a float this far out may be a rounded integer below -2**63
            under = bool(lo <= float(info.min))
    else:
        over, under = bool(hi > info.max), bool(lo < info.min)
    if over or under:
        at, bad = _first(arr, arr == (hi if over else lo), columns)
        raise ProtocolError(
            f"{where}: {at}: {int(bad)} is out of range for {target.name} "
            f"([{info.min}, {info.max}])"
        )


def _scan_numbers(values: Sequence[Any], where: str, *, nullable: bool, what: str) -> None:
    """Raise naming the first value that is not a number (or null when allowed)."""
    for i, v in enumerate(values):
        if v is None and nullable:
            continue
        if v is True or v is False or not isinstance(v, int | float):
            allowed = "numbers or null" if nullable else "numbers"
            raise ProtocolError(f"{where}: row {i} is {describe(v)}; {what} takes {allowed}")


def _numeric(values: Sequence[Any], spec: ColumnSpec, where: str, bools: bool) -> np.ndarray:
    target = np.dtype(spec.dtype)
    fam = family(spec)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):  # ragged nesting
        arr = np.asarray(values, dtype=object) if _flat(values) else np.empty(0, dtype=object)
        if arr.size == 0 and values:
            raise ProtocolError(f"{where}: values must be single numbers, not lists") from None
    kind = arr.dtype.kind
    if arr.ndim != 1:
        raise ProtocolError(f"{where}: values must be single numbers, not lists")
    what = f"{a_column(target.name)}"
    if kind == "b":
        raise ProtocolError(f"{where}: got booleans; {what} takes numbers")
    if kind in "US":
        first = next(i for i, v in enumerate(values) if isinstance(v, str))
        raise ProtocolError(
            f"{where}: row {first} is {describe(values[first])}; {what} takes numbers"
        )
    if kind not in "fiu":  # object: nulls, huge integers, nested values
        _scan_numbers(values, where, nullable=fam == "float", what=what)
        if fam == "float":
            arr = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        else:
            return _exact_ints(values, target, where)
    elif bools:
        i = _first_bool(values)
        if i is not None:
            raise ProtocolError(f"{where}: row {i} is {describe(values[i])}; {what} takes numbers")
    if kind == "f" and fam != "float" and inexact(arr):  # big integers among floats
        return _exact_ints(values, target, where)
    return cast_numeric(arr, target, where)


def _flat(values: Sequence[Any]) -> bool:
    return not any(isinstance(v, list | dict) for v in values)


def _exact_ints(values: Sequence[Any], target: np.dtype[Any], where: str) -> np.ndarray:
    info = np.iinfo(target)
    for i, v in enumerate(values):
        if isinstance(v, float) and not v.is_integer():
            raise ProtocolError(
                f"{where}: row {i} is {v!r}; {a_column(target.name)} takes integers"
            )
        if not info.min <= v <= info.max or (isinstance(v, float) and v <= -(2.0**63)):
            raise ProtocolError(
                f"{where}: row {i} is {int(v)}, out of range for {target.name} "
                f"([{info.min}, {info.max}])"
            )
    return np.array([int(v) for v in values], dtype=target)


def cast_numeric(
    arr: np.ndarray, target: np.dtype[Any], where: str, columns: Sequence[str] | None = None
) -> np.ndarray:
    """A numeric array as ``target`` when no value changes (ints) or overflows (floats).

    A refusal names the first bad value and where it is (row, and column of a 2-D array:
    by name from ``columns`` when given). Numpy does the checking; Python only names.
    """
    if arr.dtype == target:
        return arr
    if target.kind == "f":
        check_float_range(arr, target, where, columns)
        return arr.astype(target)
    if arr.dtype.kind == "f" and arr.size:
        fraction = arr != np.trunc(arr)  # NaN too
        if fraction.any():
            at, bad = _first(arr, fraction, columns)
            raise ProtocolError(
                f"{where}: {at}: {bad!r} is not an integer; {a_column(target.name)} takes integers"
            )
        check_int_range(arr, target, where, columns)
        beyond = np.abs(arr) >= FLOAT_EXACT
        if beyond.any():
            at, bad = _first(arr, beyond, columns)
            raise ProtocolError(
                f"{where}: {at}: {bad!r} is a float of 2**53 or more, which may not be the "
                "integer sent (floats skip integers there); send it as an integer"
            )
        return arr.astype(target)
    check_int_range(arr, target, where, columns)
    return arr.astype(target)


def inexact(arr: np.ndarray) -> bool:
    """Whether a float array holds a value where float64 no longer holds every integer.

    Numpy reads JSON numbers mixing floats and big integers as float64, rounding the
    integers; a caller holding the JSON values reads them exactly instead.
    """
    return arr.dtype.kind == "f" and arr.size > 0 and bool(np.abs(arr).max() >= FLOAT_EXACT)


def _bools(values: Sequence[Any], where: str) -> np.ndarray:
    for i, v in enumerate(values):
        if v is not True and v is not False:
            raise ProtocolError(
                f"{where}: row {i} is {describe(v)}; a bool column takes true or false"
            )
    return np.array(values, dtype=bool)


def _texts(values: Sequence[Any], where: str) -> np.ndarray:
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            raise ProtocolError(f"{where}: row {i} is {describe(v)}; a string column takes strings")
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def datetimes(
    values: Sequence[Any], dtype: str, where: str, *, nullable: bool = True
) -> np.ndarray:
    for i, v in enumerate(values):
        if v is None and nullable:
            continue
        if not isinstance(v, str) or not DATETIME_RE.match(v):
            raise ProtocolError(
                f"{where}: row {i} is {describe(v)}; a {dtype} column takes ISO-8601 strings "
                "without a time zone, such as '2024-05-01T12:30:00'"
            )
    try:
        return np.array(["NaT" if v is None else v for v in values], dtype=dtype)
    except ValueError as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def column_from_json(
    values: Sequence[Any], spec: ColumnSpec, where: str, *, bools: bool = True
) -> np.ndarray:
    """One column of JSON scalars as the numpy array the signature's ``spec`` expects."""
    fam = family(spec)
    if fam in ("float", "int", "uint"):
        return _numeric(values, spec, where, bools)
    if fam == "bool":
        return _bools(values, where)
    if fam == "datetime":
        return datetimes(values, spec.dtype, where)
    return _texts(values, where)


def stack(columns: Mapping[str, np.ndarray], layout: Plan) -> np.ndarray | Columns:
    """One 2-D array when every column shares a numeric dtype; else the columns in order."""
    if layout.uniform is not None:
        return np.column_stack([columns[n] for n in layout.names])
    return {n: columns[n] for n in layout.names}


_TRUE = frozenset(("true", "True", "TRUE", "1"))
_FALSE = frozenset(("false", "False", "FALSE", "0"))
_MISSING = frozenset(("", "nan", "NaN", "NA", "null"))


def column_from_text(values: list[str], spec: ColumnSpec, where: str) -> np.ndarray:
    """One column of CSV fields as the numpy array ``spec`` expects.

    An empty field (or ``NaN``, ``NA``, ``null``) is a missing value where the column
    allows one (float, string, datetime); infinities are refused like in JSON.
    """
    fam = family(spec)
    if fam == "text":
        out = np.empty(len(values), dtype=object)
        out[:] = [None if v == "" else v for v in values]
        return out
    if fam == "datetime":
        return datetimes([None if v in _MISSING else v.strip() for v in values], spec.dtype, where)
    if fam == "bool":
        flags = []
        for i, v in enumerate(values):
            v = v.strip()
            if v not in _TRUE and v not in _FALSE:
                raise ProtocolError(f"{where}: row {i} is {v!r}; a bool column takes true or false")
            flags.append(v in _TRUE)
        return np.array(flags, dtype=bool)
    target = np.dtype(spec.dtype)
    text = np.array(values, dtype=str)
    if fam == "float":
        text = np.where(np.isin(np.char.strip(text), list(_MISSING)), "nan", text)
        parse: np.dtype[Any] = np.dtype(np.float64)
    else:
        parse = np.dtype(np.int64 if fam == "int" else np.uint64)
    try:
        arr = text.astype(parse)
    except (ValueError, OverflowError):
        bad = next((i for i, v in enumerate(values) if not _parses(v, parse)), 0)
        raise ProtocolError(
            f"{where}: row {bad} is {values[bad]!r}; {a_column(target.name)} takes "
            + ("numbers (empty for missing)" if fam == "float" else "integers")
        ) from None
    if fam == "float" and np.isinf(arr).any():
        raise ProtocolError(f"{where}: infinite values are not accepted; send finite numbers")
    return cast_numeric(arr, target, where)


def _parses(value: str, dtype: np.dtype[Any]) -> bool:
    try:
        np.array([value], dtype=str).astype(dtype)
    except (ValueError, OverflowError):
        return False
    return True


def jsonable(value: Any) -> Any:
    """``value`` in a form :func:`dumps` writes: numeric numpy arrays as they are."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf" and value.ndim:
            return np.ascontiguousarray(value)
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# -- the same rules as JSON Schema (for the OpenAPI document) -----------------------------


def number_schema(dtype: np.dtype[Any]) -> dict[str, Any]:
    """A JSON number that fits a numpy numeric dtype.

    Every JSON number that parses to a finite double fits float64, so float64 has no
    bounds; narrower floats are bounded by their range.
    """
    if dtype.kind == "f":
        if dtype.itemsize >= 8:
            return {"type": "number"}
        limit = _float_range(dtype)
        return {"type": "number", "minimum": -limit, "maximum": limit}
    if dtype.kind == "b":
        return {"type": "boolean"}
    info = np.iinfo(dtype)
    return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}


DATE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date",
    "description": "ISO-8601 date or date-time without a time zone ('2024-05-01T12:30:00')",
}


def value_schema(spec: ColumnSpec, *, nullable: bool) -> dict[str, Any]:
    """The JSON Schema of one value of ``spec`` that :func:`column_from_json` accepts.

    (Datetime columns are documented as dates, a subset of what they accept.)
    """
    fam = family(spec)
    if fam in ("float", "int", "uint", "bool"):
        schema = number_schema(np.dtype(spec.dtype))
    elif fam == "datetime":
        schema = dict(DATE_SCHEMA)
    else:
        schema = {"type": "string"}
    if nullable and fam in ("float", "text", "datetime"):
        schema["type"] = [schema["type"], "null"]
    return schema
