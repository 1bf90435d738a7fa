"""Drift between two datasets, column by column, with verdicts that do not flip with size.

Numbers are compared with Kolmogorov-Smirnov, the population stability index or the
normalized Wasserstein distance; categories with the chi-square test of the 2 x k
contingency table or the Jensen-Shannon distance. The defaults follow the sample size:
with at most 1,000 values on both sides a test (KS, chi-square) decides at p < 0.05; past
that, a test flags differences too small to matter (every column of a large window
"drifts"), so a distance with a fixed threshold decides instead (Wasserstein over the
reference's standard deviation > 0.1, Jensen-Shannon > 0.1).

Each column is read once from Arrow into numpy and sorted once; the columns are compared
on a thread pool (numpy's sorts and searches release the GIL). KS, chi-square and
Jensen-Shannon are scipy's own functions; PSI and the Wasserstein distance are computed
from the sorted values as scipy computes them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput

__all__ = ["DEFAULT_THRESHOLDS", "METHODS", "ColumnDrift", "DriftResult", "drift"]

NUMERIC_METHODS = ("ks", "psi", "wasserstein")
CATEGORICAL_METHODS = ("chi2", "jensenshannon")
METHODS = (*NUMERIC_METHODS, *CATEGORICAL_METHODS)
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05,  # p-value below it: drifted
    "chi2": 0.05,  # p-value below it: drifted
    "psi": 0.2,  # index above it: drifted
    "wasserstein": 0.1,  # distance / reference std above it: drifted
    "jensenshannon": 0.1,  # distance (base 2, in [0, 1]) above it: drifted
}
_SMALL = 1_000  # at most this many values on both sides: a test decides
_PSI_BINS = 10
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class ColumnDrift:
    """One column's comparison."""

    column: str
    kind: str  # numeric or categorical
    method: str
    statistic: float
    p_value: float | None  # for ks and chi2
    threshold: float
    drifted: bool
    reference_count: int  # values compared (missing ones left out)
    current_count: int
    missing_reference: float  # share of missing values
    missing_current: float


@dataclass(frozen=True)
class DriftResult:
    """Every column compared; ``drifted`` names those that moved."""

    columns: tuple[ColumnDrift, ...]

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "share_drifted": self.share_drifted,
            "columns": [asdict(c) for c in self.columns],
        }

    def to_pandas(self) -> Any:
        import pandas as pd

        fields = list(ColumnDrift.__dataclass_fields__)
        return pd.DataFrame([asdict(c) for c in self.columns], columns=fields)


def drift(
    *,
    reference: Any,
    current: Any,
    columns: Sequence[str] | None = None,
    method: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` (each a DataFrame, an Arrow table or a
    Parquet/Delta path), every column both have unless ``columns`` lists them.

    ``method`` is one method for every column or a mapping of column to method (the rest
    take the defaults); ``thresholds`` maps a method to its threshold.
    """
    from kiln.validation import read_table

    ref = read_table(reference, "reference")
    cur = read_table(current, "current")
    names = _columns(ref, cur, columns)
    limits = _thresholds(thresholds)
    chosen = _methods(method, names)
    kinds = {n: _kind(ref.schema.field(n).type, cur.schema.field(n).type, n) for n in names}
    for name in names:
        m = chosen.get(name)
        if m is not None:
            fits = NUMERIC_METHODS if kinds[name] == "numeric" else CATEGORICAL_METHODS
            if m not in fits:
                raise InvalidInput(
                    f"method {m!r} does not compare {kinds[name]} column {name!r}; "
                    f"use one of {', '.join(fits)}"
                )

    def one(name: str) -> ColumnDrift:
        return _compare(name, kinds[name], ref.column(name), cur.column(name), chosen, limits)

    workers = min(len(names), os.cpu_count() or 1)
    if workers <= 1:
        return DriftResult(tuple(one(n) for n in names))
    with ThreadPoolExecutor(workers, thread_name_prefix="kiln-drift") as pool:
        return DriftResult(tuple(pool.map(one, names)))


def _columns(ref: pa.Table, cur: pa.Table, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        names = [c for c in ref.column_names if c in set(cur.column_names)]
        if not names:
            raise InvalidInput(
                "reference and current have no column in common; reference has: "
                f"{', '.join(ref.column_names)}; current has: {', '.join(cur.column_names)}"
            )
        return names
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput(f"columns must be a list of column names; got {columns!r}")
    for name in columns:
        for side, table in (("reference", ref), ("current", cur)):
            if name not in table.column_names:
                raise InvalidInput(
                    f"no column {name!r} in {side}; it has: {', '.join(table.column_names)}"
                )
    return list(dict.fromkeys(columns))


def _thresholds(given: Mapping[str, float] | None) -> dict[str, float]:
    limits = dict(DEFAULT_THRESHOLDS)
    for name, value in (given or {}).items():
        if name not in METHODS:
            raise InvalidInput(
                f"thresholds names unknown method {name!r}; known: {', '.join(METHODS)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise InvalidInput(f"the threshold of {name!r} must be a number; got {value!r}")
        limits[name] = float(value)
    return limits


def _methods(method: str | Mapping[str, str] | None, names: Sequence[str]) -> dict[str, str]:
    if method is None:
        return {}
    if isinstance(method, str):
        chosen = dict.fromkeys(names, method)
    elif isinstance(method, Mapping):
        unknown = [c for c in method if c not in names]
        if unknown:
            raise InvalidInput(
                f"method names column {unknown[0]!r}, which is not compared; compared: "
                f"{', '.join(names)}"
            )
        chosen = dict(method)
    else:
        raise InvalidInput(f"method must be a method name or a mapping; got {method!r}")
    for m in chosen.values():
        if m not in METHODS:
            raise InvalidInput(f"unknown drift method {m!r}; known: {', '.join(METHODS)}")
    return chosen


def _kind(a: pa.DataType, b: pa.DataType, name: str) -> str:
    ka, kb = _kind_of(a), _kind_of(b)
    if ka is None or kb is None:
        raise InvalidInput(
            f"column {name!r} holds {a if ka is None else b}: drift compares numbers and "
            "categories (text, booleans)"
        )
    if ka != kb:
        raise InvalidInput(f"column {name!r} is {ka} in reference ({a}) and {kb} in current ({b})")
    return ka


def _kind_of(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return "categorical"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    return None


def _compare(
    name: str,
    kind: str,
    ref_col: pa.ChunkedArray,
    cur_col: pa.ChunkedArray,
    chosen: Mapping[str, str],
    limits: Mapping[str, float],
) -> ColumnDrift:
    read = _numbers if kind == "numeric" else _categories
    ref, ref_missing = read(ref_col)
    cur, cur_missing = read(cur_col)
    n_ref, n_cur = _count(ref), _count(cur)
    for side, n in (("reference", n_ref), ("current", n_cur)):
        if n == 0:
            raise InvalidInput(f"column {name!r} has no values in {side} to compare")
    small = n_ref <= _SMALL and n_cur <= _SMALL
    default = ("ks", "wasserstein") if kind == "numeric" else ("chi2", "jensenshannon")
    method = chosen.get(name) or default[0 if small else 1]
    statistic, p_value = _STATS[method](ref, cur)
    threshold = limits[method]
    drifted = p_value < threshold if p_value is not None else statistic > threshold
    return ColumnDrift(
        column=name,
        kind=kind,
        method=method,
        statistic=float(statistic),
        p_value=None if p_value is None else float(p_value),
        threshold=threshold,
        drifted=bool(drifted),
        reference_count=n_ref,
        current_count=n_cur,
        missing_reference=ref_missing,
        missing_current=cur_missing,
    )


def _count(values: Any) -> int:
    return int(values.size) if isinstance(values, np.ndarray) else int(sum(values.values()))


def _numbers(col: pa.ChunkedArray) -> tuple[Any, float]:
    """The column's values as sorted float64, missing ones (null, NaN) dropped."""
    total = len(col)
    values = pc.cast(col.drop_null(), pa.float64()).to_numpy()
    values = values[~np.isnan(values)]
    values.sort()  # in place: the copy above is already ours
    return values, (total - values.size) / total if total else 0.0


def _categories(col: pa.ChunkedArray) -> tuple[Any, float]:
    total = len(col)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    present = col.drop_null()
    counts = pc.value_counts(present)
    values = [
        str(v).lower() if isinstance(v, bool) else str(v)
        for v in counts.field("values").to_pylist()
    ]
    out = dict(zip(values, counts.field("counts").to_pylist(), strict=True))
    return out, (total - len(present)) / total if total else 0.0


def _ks(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None]:
    from scipy.stats import ks_2samp

    result = ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def _psi(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None]:
    """Population stability index over the reference's deciles (open-ended outer bins),
    empty shares floored at 1e-4 before the log."""
    edges = np.quantile(ref, np.linspace(0, 1, _PSI_BINS + 1)[1:-1])
    r = np.diff(np.searchsorted(ref, edges, side="right"), prepend=0, append=ref.size)
    c = np.diff(np.searchsorted(cur, edges, side="right"), prepend=0, append=cur.size)
    rs = np.maximum(r / ref.size, _PSI_FLOOR)
    cs = np.maximum(c / cur.size, _PSI_FLOOR)
    return float(np.sum((cs - rs) * np.log(cs / rs))), None


def _wasserstein(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float | None]:
    """The first Wasserstein distance over the reference's standard deviation; with a
    constant reference, 0 when current equals it and infinity otherwise.

    As ``scipy.stats.wasserstein_distance``: the area between the two empirical CDFs,
    summed between consecutive values of both samples. The two sorted samples are merged
    (a stable sort of two runs is a linear merge), and each CDF is the running count of
    its own sample's values; where values tie the step between them is 0, so the sum is
    the same as scipy's searches give.
    """
    both = np.concatenate([ref, cur])
    order = np.argsort(both, kind="stable")
    from_ref = order < ref.size
    ref_cdf = np.cumsum(from_ref)[:-1] / ref.size
    cur_cdf = np.cumsum(~from_ref)[:-1] / cur.size
    deltas = np.diff(both[order])
    distance = float(np.sum(np.abs(ref_cdf - cur_cdf) * deltas))
    scale = float(np.std(ref))
    if scale > 0:
        return distance / scale, None
    return (0.0 if distance == 0 else math.inf), None


def _table(ref: Mapping[str, int], cur: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(ref) | set(cur))
    return (
        np.array([ref.get(k, 0) for k in keys], dtype=np.float64),
        np.array([cur.get(k, 0) for k in keys], dtype=np.float64),
    )


def _chi2(ref: Mapping[str, int], cur: Mapping[str, int]) -> tuple[float, float | None]:
    from scipy.stats import chi2_contingency

    r, c = _table(ref, cur)
    if r.size < 2:  # one category on both sides: nothing moved
        return 0.0, 1.0
    result = chi2_contingency(np.vstack([r, c]))
    return float(result.statistic), float(result.pvalue)


def _jensenshannon(ref: Mapping[str, int], cur: Mapping[str, int]) -> tuple[float, float | None]:
    from scipy.spatial.distance import jensenshannon

    r, c = _table(ref, cur)
    return float(jensenshannon(r / r.sum(), c / c.sum(), base=2)), None


_STATS: dict[str, Any] = {
    "ks": _ks,
    "psi": _psi,
    "wasserstein": _wasserstein,
    "chi2": _chi2,
    "jensenshannon": _jensenshannon,
}
