"""Profiles: what a dataset looks like, column by column, small enough to keep forever.

A profile is computed in one DuckDB query over the data (plus one grouped query per
categorical column for its most frequent values) and numpy histograms, never per-row
Python. It is stored content-addressed, so the same data profiles to the same digest, and
profiles merge: a week's profile is the merge of seven daily ones. Counts, missing values,
extremes, mean and standard deviation merge exactly (the mean and deviation by Chan's
pairwise update); histograms merge exactly when their edges agree (profile a day ``like=``
the previous one to keep them equal) and are otherwise re-binned in proportion to overlap;
quantiles of a merged profile are read from its histogram and marked approximate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput, NotFound
from kiln.validation._source import describe, read_table

__all__ = [
    "QUANTILES",
    "ColumnProfile",
    "Histogram",
    "Profile",
    "load_profile",
    "profile",
]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_BINS = 100
_TOP_K = 20
_INT_VALUES = 1_000  # an integer column with at most this many values keeps all their counts
_FORMAT = 1

NUMERIC = ("int", "float")
CATEGORICAL = ("string", "bool")


@dataclass(frozen=True)
class Histogram:
    """Counts of the finite values between consecutive ``edges`` (``len(edges) - 1``
    bins; values outside the edges are counted in the outer bins)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(tuple(float(e) for e in data["edges"]), tuple(int(c) for c in data["counts"]))


@dataclass(frozen=True)
class ColumnProfile:
    """One column: its type, how many values are missing, and how the others spread."""

    name: str
    type: str  # int, float, bool, string, timestamp, date or other
    count: int  # rows, missing ones included
    missing: int  # nulls, and NaN in float columns
    min: float | str | None = None  # timestamps and dates as ISO text
    max: float | str | None = None
    mean: float | None = None
    std: float | None = None  # sample standard deviation
    quantiles: Mapping[str, float] = field(default_factory=dict)  # "0.5" -> median
    histogram: Histogram | None = None
    top: tuple[tuple[str, int], ...] = ()  # the most frequent values, most frequent first
    distinct: int = 0
    distinct_exact: bool = True
    quantiles_exact: bool = True

    @property
    def present(self) -> int:
        return self.count - self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "count": self.count,
            "missing": self.missing,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "quantiles": dict(self.quantiles),
            "histogram": self.histogram.to_dict() if self.histogram else None,
            "top": [list(t) for t in self.top],
            "distinct": self.distinct,
            "distinct_exact": self.distinct_exact,
            "quantiles_exact": self.quantiles_exact,
        }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnProfile:
        hist = data.get("histogram")
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            count=int(data["count"]),
            missing=int(data["missing"]),
            min=data.get("min"),
            max=data.get("max"),
            mean=data.get("mean"),
            std=data.get("std"),
            quantiles={str(k): float(v) for k, v in (data.get("quantiles") or {}).items()},
            histogram=Histogram.from_dict(hist) if hist else None,
            top=tuple((str(v), int(c)) for v, c in data.get("top") or ()),
            distinct=int(data.get("distinct", 0)),
            distinct_exact=bool(data.get("distinct_exact", True)),
            quantiles_exact=bool(data.get("quantiles_exact", True)),
        )


@dataclass(frozen=True)
class Profile:
    """A dataset's profile: its row count and one :class:`ColumnProfile` per column."""

    rows: int
    columns: Mapping[str, ColumnProfile]
    source: str = ""

    def __getitem__(self, name: str) -> ColumnProfile:
        try:
            return self.columns[name]
        except KeyError:
            raise NotFound(
                f"the profile has no column {name!r}; it has: {', '.join(self.columns)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kiln_profile": _FORMAT,
            "rows": self.rows,
            "source": self.source,
            "columns": [c.to_dict() for c in self.columns.values()],
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        if data.get("kiln_profile") != _FORMAT:
            raise InvalidInput("not a Kiln profile (no 'kiln_profile' format marker)")
        cols = [ColumnProfile.from_dict(c) for c in data["columns"]]
        return cls(int(data["rows"]), {c.name: c for c in cols}, str(data.get("source", "")))

    @classmethod
    def from_json(cls, text: bytes | str) -> Profile:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"a profile must be JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, blobs: Any = None) -> str:
        """Store the profile in the artifact store; returns its digest (the same data
        gives the same digest, so a profile is stored once)."""
        return str(_blobs(blobs).put_bytes(self.to_json()).digest)

    def merge(self, other: Profile) -> Profile:
        """The profile of both datasets together (their rows appended)."""
        if not isinstance(other, Profile):
            raise InvalidInput(f"merge takes a Profile; got {type(other).__name__}")
        names = list(self.columns)
        if set(names) != set(other.columns):
            only = sorted(set(names) ^ set(other.columns))
            raise InvalidInput(
                f"profiles of different columns cannot merge; in one only: {', '.join(only)}"
            )
        merged = {n: _merge_column(self.columns[n], other.columns[n]) for n in names}
        sources = [s for s in (self.source, other.source) if s]
        return Profile(self.rows + other.rows, merged, " + ".join(dict.fromkeys(sources)))


def load_profile(digest: str, blobs: Any = None) -> Profile:
    """A profile stored with :meth:`Profile.save`."""
    return Profile.from_json(_blobs(blobs).get_bytes(digest))


def _blobs(blobs: Any) -> Any:
    if blobs is not None:
        return blobs
    from kiln.core import get_settings
    from kiln.store import open_blob_store

    settings = get_settings()
    return open_blob_store(settings.artifact_uri, s3_endpoint_url=settings.s3_endpoint_url)


# -- computing ------------------------------------------------------------------------------


def profile(
    data: Any,
    *,
    columns: Sequence[str] | None = None,
    bins: int = _BINS,
    top_k: int = _TOP_K,
    like: Profile | None = None,
) -> Profile:
    """Profile ``data`` (a DataFrame, an Arrow table, a Parquet file or directory, a
    Delta table). ``like=`` takes the histogram edges of an earlier profile, so the two
    compare and merge bin for bin."""
    bins = _positive("bins", bins)
    top_k = _positive("top_k", top_k)
    if like is not None and not isinstance(like, Profile):
        raise InvalidInput(f"like must be a Profile; got {type(like).__name__}")
    table = read_table(data)
    names = table.column_names if columns is None else _chosen(table, columns)
    table = table.select(names)
    kinds = {n: _kind(table.schema.field(n).type) for n in names}
    stats = _aggregate(table, kinds)
    out: dict[str, ColumnProfile] = {}
    for name in names:
        kind = kinds[name]
        col = _column(table, name, kind)
        s = stats[name]
        base = ColumnProfile(
            name=name,
            type=kind,
            count=table.num_rows,
            missing=table.num_rows - int(s["n"]),
            # an estimate (HyperLogLog), never above the values present
            distinct=min(int(s.get("distinct") or 0), int(s["n"])),
            distinct_exact=False,
        )
        if kind in NUMERIC:
            out[name] = _numeric(base, s, col, bins, like.columns.get(name) if like else None)
        elif kind in CATEGORICAL:
            out[name] = _categorical(base, col, top_k)
        elif kind in ("timestamp", "date"):
            out[name] = replace(base, min=_iso(s["min"]), max=_iso(s["max"]))
        else:
            out[name] = base
    return Profile(table.num_rows, out, describe(data))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be an integer >= 1; got {value!r}")
    return value


def _chosen(table: pa.Table, columns: Sequence[str]) -> list[str]:
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput(f"columns must be a list of column names; got {columns!r}")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InvalidInput(
            f"no column {missing[0]!r} in the data; it has: {', '.join(table.column_names)}"
        )
    return list(dict.fromkeys(columns))


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    return "other"


def _column(table: pa.Table, name: str, kind: str) -> pa.ChunkedArray:
    """The column as its kind reads it: dictionaries decoded, NaN as missing."""
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if kind == "float":
        col = col.cast(pa.float64())
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col)
    return col


def _aggregate(table: pa.Table, kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Counts, extremes, moments, quantiles and distinct counts of every column, in one
    DuckDB query over the table."""
    import duckdb

    exprs: list[str] = []
    keys: list[tuple[str, str]] = []
    inner: list[str] = []
    qs = ", ".join(str(q) for q in QUANTILES)
    for i, (name, kind) in enumerate(kinds.items()):
        c = f'"c{i}"'
        src = _quote(name)
        if kind == "float":
            inner.append(f"CASE WHEN isnan({src}::DOUBLE) THEN NULL ELSE {src}::DOUBLE END AS {c}")
        elif kind == "other":
            inner.append(f"({src} IS NOT NULL) AS {c}")
        else:
            inner.append(f"{src} AS {c}")
        parts = {"n": f"count({c})"}
        if kind in NUMERIC:
            parts |= {
                "min": f"min({c})::DOUBLE",
                "max": f"max({c})::DOUBLE",
                "quantiles": f"quantile_cont({c}::DOUBLE, [{qs}])",
                "distinct": f"approx_count_distinct({c})",
            }
        elif kind in ("timestamp", "date"):
            parts |= {"min": f"min({c})", "max": f"max({c})"}
            parts |= {"distinct": f"approx_count_distinct({c})"}
        elif kind == "other":
            parts = {"n": f"count(*) FILTER (WHERE {c})"}
        for key, expr in parts.items():
            keys.append((name, key))
            exprs.append(expr)
    con = duckdb.connect()
    try:
        con.register("profiled", table)
        sql = f"SELECT {', '.join(exprs)} FROM (SELECT {', '.join(inner)} FROM profiled)"
        row = con.execute(sql).fetchone()
    finally:
        con.close()
    out: dict[str, dict[str, Any]] = {name: {} for name in kinds}
    for (name, key), value in zip(keys, row or (), strict=True):
        out[name][key] = value
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _numeric(
    base: ColumnProfile,
    s: Mapping[str, Any],
    col: pa.ChunkedArray,
    bins: int,
    like: ColumnProfile | None,
) -> ColumnProfile:
    if base.present == 0:
        return replace(base, distinct_exact=True)
    values = col.drop_null().to_numpy().astype(np.float64, copy=False)
    finite = values[np.isfinite(values)] if base.type == "float" else values
    edges = _edges(s["min"], s["max"], bins, like)
    counts = _counts(finite.astype(np.float64, copy=False), edges)
    qs = s["quantiles"] or []
    top: tuple[tuple[str, int], ...] = ()
    if base.type == "int" and base.distinct <= _INT_VALUES:  # few values: keep them all
        found, freq = np.unique(values.astype(np.int64), return_counts=True)
        if found.size <= _INT_VALUES:
            order = np.lexsort((found, -freq))
            top = tuple((str(int(found[i])), int(freq[i])) for i in order)
            base = replace(base, distinct=int(found.size), distinct_exact=True)
    return replace(
        base,
        top=top,
        min=float(s["min"]),
        max=float(s["max"]),
        # numpy's pairwise sums over the whole column: the same data gives the same bits
        # (a parallel SQL sum depends on how the rows were split), so the same digest
        mean=float(np.mean(values)),
        std=float(np.std(values, ddof=1)) if values.size > 1 else None,
        quantiles={str(q): float(v) for q, v in zip(QUANTILES, qs, strict=True)},
        histogram=Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in counts)),
    )


def _edges(lo: float, hi: float, bins: int, like: ColumnProfile | None) -> np.ndarray:
    if like is not None and like.histogram is not None:
        return np.asarray(like.histogram.edges, dtype=np.float64)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    return np.linspace(lo, hi, bins + 1)


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin, values beyond the edges in the outer bins."""
    index = np.searchsorted(edges, values, side="right") - 1
    np.clip(index, 0, len(edges) - 2, out=index)
    counts: np.ndarray = np.bincount(index, minlength=len(edges) - 1)
    return counts


def _categorical(base: ColumnProfile, col: pa.ChunkedArray, top_k: int) -> ColumnProfile:
    """The most frequent values and, exactly, how many distinct ones there are."""
    counts = pc.value_counts(col.drop_null())
    if len(counts) == 0:
        return replace(base, distinct=0, distinct_exact=True)
    values = counts.field("values").to_pylist()
    freq = counts.field("counts").to_numpy()
    order = np.lexsort((np.arange(len(freq)), -freq))[:top_k]
    top = tuple((_text(values[i]), int(freq[i])) for i in order)
    return replace(base, top=top, distinct=len(values), distinct_exact=True)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


# -- merging -------------------------------------------------------------------------------


def _merge_column(a: ColumnProfile, b: ColumnProfile) -> ColumnProfile:
    if a.type != b.type:
        raise InvalidInput(
            f"column {a.name!r} is {a.type} in one profile and {b.type} in the other"
        )
    merged = replace(
        a,
        count=a.count + b.count,
        missing=a.missing + b.missing,
        distinct=max(a.distinct, b.distinct),
        distinct_exact=False,
    )
    if a.type in NUMERIC:
        return _merge_numeric(merged, a, b)
    if a.type in CATEGORICAL:
        return _merge_top(merged, a, b)
    if a.type in ("timestamp", "date"):
        lows = [v for v in (a.min, b.min) if v is not None]
        highs = [v for v in (a.max, b.max) if v is not None]
        return replace(merged, min=min(lows, default=None), max=max(highs, default=None))
    return merged


def _merge_numeric(merged: ColumnProfile, a: ColumnProfile, b: ColumnProfile) -> ColumnProfile:
    if a.present == 0 or b.present == 0:
        full = a if b.present == 0 else b
        return replace(
            merged,
            min=full.min,
            max=full.max,
            mean=full.mean,
            std=full.std,
            quantiles=full.quantiles,
            histogram=full.histogram,
            quantiles_exact=full.quantiles_exact,
        )
    na, nb = a.present, b.present
    ma, mb = float(a.mean or 0.0), float(b.mean or 0.0)
    m2a = (a.std or 0.0) ** 2 * (na - 1)
    m2b = (b.std or 0.0) ** 2 * (nb - 1)
    n = na + nb
    delta = mb - ma
    mean = ma + delta * nb / n
    m2 = m2a + m2b + delta * delta * na * nb / n
    hist = _merge_histograms(a.histogram, b.histogram)
    return replace(
        merged,
        min=min(float(a.min), float(b.min)),  # type: ignore[arg-type]
        max=max(float(a.max), float(b.max)),  # type: ignore[arg-type]
        mean=mean,
        std=math.sqrt(m2 / (n - 1)) if n > 1 else None,
        histogram=hist,
        quantiles=_quantiles_from(hist) if hist else {},
        quantiles_exact=False,
    )


def _merge_histograms(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    if a is None or b is None:
        return a or b
    if a.edges == b.edges:
        return Histogram(a.edges, tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)))
    bins = max(len(a.counts), len(b.counts))
    edges = np.linspace(min(a.edges[0], b.edges[0]), max(a.edges[-1], b.edges[-1]), bins + 1)
    counts = _rebin(a, edges) + _rebin(b, edges)
    rounded = _round_keeping_total(counts, sum(a.counts) + sum(b.counts))
    return Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in rounded))


def _rebin(h: Histogram, edges: np.ndarray) -> np.ndarray:
    """Spread each bin's count over the new bins in proportion to their overlap."""
    old = np.asarray(h.edges)
    out = np.zeros(len(edges) - 1)
    for lo, hi, count in zip(old[:-1], old[1:], h.counts, strict=True):
        if count == 0:
            continue
        width = hi - lo
        if width <= 0:
            out[min(max(np.searchsorted(edges, lo, side="right") - 1, 0), len(out) - 1)] += count
            continue
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
        out += count * overlap / width
    return out


def _round_keeping_total(counts: np.ndarray, total: int) -> np.ndarray:
    floor: np.ndarray = np.floor(counts).astype(np.int64)
    short = int(total - floor.sum())
    if short > 0:
        floor[np.argsort(-(counts - floor), kind="stable")[:short]] += 1
    return floor


def _quantiles_from(h: Histogram) -> dict[str, float]:
    counts = np.asarray(h.counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return {}
    cum = np.concatenate([[0.0], np.cumsum(counts)]) / total
    return {str(q): float(np.interp(q, cum, h.edges)) for q in QUANTILES}


def _merge_top(merged: ColumnProfile, a: ColumnProfile, b: ColumnProfile) -> ColumnProfile:
    counts: dict[str, int] = {}
    for value, count in (*a.top, *b.top):
        counts[value] = counts.get(value, 0) + count
    k = max(len(a.top), len(b.top))
    top = tuple(sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:k])
    complete = a.distinct_exact and b.distinct_exact
    complete = complete and len(a.top) == a.distinct and len(b.top) == b.distinct
    if complete:  # every value of both is listed: the union is exact
        return replace(merged, top=top, distinct=len(counts), distinct_exact=True)
    return replace(merged, top=top)
