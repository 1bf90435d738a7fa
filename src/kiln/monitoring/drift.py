"""Drift between two datasets, column by column, with verdicts that do not flip with size.

Numbers are compared with Kolmogorov-Smirnov, the population stability index or the
normalized Wasserstein distance; categories with the chi-square test of the 2 x k
contingency table or the Jensen-Shannon distance. The defaults follow the sample size:
with at most 1,000 values on either side a test (KS, chi-square) decides at p < 0.05; past
that, a test flags differences too small to matter (every column of a large window
"drifts"), so a distance with a fixed threshold decides instead (Wasserstein over the
reference's standard deviation > 0.1, Jensen-Shannon > 0.1). The smaller side decides:
a distance measured on a few hundred values is mostly sampling noise, so a small current
window is tested even against a large reference.

Each column is read once from Arrow into numpy and sorted once; the columns are compared
on a thread pool (numpy's sorts and searches release the GIL). KS, chi-square and
Jensen-Shannon are scipy's own functions; PSI and the Wasserstein distance are computed
from the sorted values as scipy computes them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput, usable_cores
from kiln.monitoring import _binned
from kiln.monitoring._binned import Binned

if TYPE_CHECKING:
    from kiln.monitoring.served import ServedDrift

__all__ = ["DEFAULT_THRESHOLDS", "METHODS", "ColumnDrift", "DriftResult", "compare", "drift"]

NUMERIC_METHODS = ("ks", "psi", "wasserstein")
CATEGORICAL_METHODS = ("chi2", "jensenshannon", "psi")
METHODS = ("ks", "psi", "wasserstein", "chi2", "jensenshannon")
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05,  # p-value below it: drifted
    "chi2": 0.05,  # p-value below it: drifted
    "psi": 0.2,  # index above it: drifted
    "wasserstein": 0.1,  # distance / reference std above it: drifted
    "jensenshannon": 0.1,  # distance (base 2, in [0, 1]) above it: drifted
}
_SMALL = 1_000  # at most this many values on both sides: a test decides
_PSI_BINS = 10
_PROFILE_KINDS = {
    "int": "numeric",
    "float": "numeric",
    "string": "categorical",
    "bool": "categorical",
}
_OTHER = "\x00other"  # a profile's values beyond its top ones, counted together


NOT_COMPARED = "none"  # the method of a column with no values on a side


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

    @property
    def compared(self) -> bool:
        """False when a side had no values (every one missing): nothing was measured,
        ``method`` is ``"none"``, ``statistic`` NaN and ``drifted`` False, and the
        missing rates say why. One empty column never stops the others' comparison."""
        return self.method != NOT_COMPARED


@dataclass(frozen=True)
class DriftResult:
    """Every column compared; ``drifted`` names those that moved."""

    columns: tuple[ColumnDrift, ...]

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share_drifted(self) -> float:
        """Of the columns compared (those with values on both sides)."""
        compared = sum(1 for c in self.columns if c.compared)
        return len(self.drifted) / compared if compared else 0.0

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, valid JSON: an infinite statistic (a constant reference that
        current leaves, under ``wasserstein``) is written as None."""
        return {
            "drifted": self.drifted,
            "share_drifted": self.share_drifted,
            "columns": [
                {
                    k: None if isinstance(v, float) and not math.isfinite(v) else v
                    for k, v in asdict(c).items()
                }
                for c in self.columns
            ],
        }

    def to_pandas(self) -> Any:
        import pandas as pd

        fields = list(ColumnDrift.__dataclass_fields__)
        return pd.DataFrame([asdict(c) for c in self.columns], columns=fields)


@overload
def drift(
    deployment: None = None,
    *,
    reference: Any,
    current: Any,
    columns: Sequence[str] | None = None,
    method: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> DriftResult: ...


@overload
def drift(
    deployment: str,
    *,
    reference: Any = None,
    window: str | timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: Sequence[str] | None = None,
    method: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> ServedDrift: ...


def drift(
    deployment: str | None = None,
    *,
    reference: Any = None,
    current: Any = None,
    window: str | timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: Sequence[str] | None = None,
    method: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Any:
    """Drift of a deployment's served traffic, or between two datasets.

    ``drift("fraud-api", window="1h")`` compares the inputs (and, against a window, the
    predictions) the deployment served in the last hour (or ``since``/``until``) with a
    reference, per model version and traffic arm: ``reference="training"`` (the default:
    each version's reference profile), a profile or data, or a window before the current
    one (``reference="7d"``). It returns a :class:`~kiln.monitoring.ServedDrift`.

    ``drift(reference=df_a, current=df_b)`` compares two datasets and returns a
    :class:`DriftResult` (see :func:`compare`).
    """
    if deployment is not None:
        from kiln.monitoring.served import served_drift

        if current is not None:
            raise InvalidInput(
                "drift of a deployment compares what it served: give window= or since=, "
                "not current="
            )
        return served_drift(
            deployment,
            reference="training" if reference is None else reference,
            window=window,
            since=since,
            until=until,
            columns=columns,
            method=method,
            thresholds=thresholds,
        )
    if reference is None or current is None:
        raise InvalidInput(
            "drift takes a deployment name, or reference= and current= (two datasets)"
        )
    if window is not None or since is not None or until is not None:
        raise InvalidInput("window=, since= and until= select a deployment's traffic")
    return compare(reference, current, columns=columns, method=method, thresholds=thresholds)


def compare(
    reference: Any,
    current: Any,
    *,
    columns: Sequence[str] | None = None,
    method: str | Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` (each a DataFrame, an Arrow table or a
    Parquet/Delta path), every column both have unless ``columns`` lists them.

    ``reference`` may also be a :class:`kiln.validation.Profile` (a model version's
    reference profile): the reference's rows are then never read again, and numbers are
    compared with its histogram (see :mod:`kiln.monitoring._binned`).

    ``method`` is one method for every column or a mapping of column to method (the rest
    take the defaults); ``thresholds`` maps a method to its threshold.
    """
    from kiln.validation import Profile, read_table

    cur = read_table(current, "current")
    if isinstance(reference, Profile):
        ref: Any = reference
        ref_names = list(reference.columns)
        ref_types = {n: _PROFILE_KINDS.get(c.type) for n, c in reference.columns.items()}
    else:
        ref = read_table(reference, "reference")
        ref_names = ref.column_names
        ref_types = {n: _kind_of(ref.schema.field(n).type) for n in ref_names}
    names = _columns(ref_names, cur, columns)
    limits = _thresholds(thresholds)
    chosen = _methods(method, names)
    kinds = {n: _kind(ref_types[n], cur.schema.field(n).type, n) for n in names}
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
        if isinstance(ref, Profile):
            side = _from_profile(ref[name], kinds[name])
        else:
            side = (_numbers if kinds[name] == "numeric" else _categories)(ref.column(name))
        return _compare(name, kinds[name], side, cur.column(name), chosen, limits)

    workers = min(len(names), usable_cores())
    if workers <= 1:
        return DriftResult(tuple(one(n) for n in names))
    with ThreadPoolExecutor(workers, thread_name_prefix="kiln-drift") as pool:
        return DriftResult(tuple(pool.map(one, names)))


def _columns(ref: Sequence[str], cur: pa.Table, columns: Sequence[str] | None) -> list[str]:
    for side, have in (("reference", list(ref)), ("current", cur.column_names)):
        if not have:
            raise InvalidInput(f"{side} has no columns to compare (an empty table or folder?)")
    if columns is None:
        names = [c for c in ref if c in set(cur.column_names)]
        if not names:
            raise InvalidInput(
                "reference and current have no column in common; reference has: "
                f"{', '.join(ref)}; current has: {', '.join(cur.column_names)}"
            )
        return names
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput(f"columns must be a list of column names; got {columns!r}")
    if not columns:
        raise InvalidInput("columns is empty: name at least one column, or leave it out")
    for name in columns:
        for side, have in (("reference", list(ref)), ("current", cur.column_names)):
            if name not in have:
                raise InvalidInput(f"no column {name!r} in {side}; it has: {', '.join(have)}")
    return list(dict.fromkeys(columns))


def _thresholds(given: Mapping[str, float] | None) -> dict[str, float]:
    limits = dict(DEFAULT_THRESHOLDS)
    if given is not None and not isinstance(given, Mapping):
        raise InvalidInput(
            f"thresholds must map a method to its threshold, such as {{'psi': 0.1}}; got {given!r}"
        )
    for name, value in (given or {}).items():
        if name not in METHODS:
            raise InvalidInput(
                f"thresholds names unknown method {name!r}; known: {', '.join(METHODS)}"
            )
        if (
            isinstance(value, bool | np.bool_)
            or not isinstance(value, numbers.Real)
            or math.isnan(value)
        ):
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


def _kind(ka: str | None, b: pa.DataType, name: str) -> str:
    kb = _kind_of(b)
    if ka is None or kb is None:
        where = "reference" if ka is None else f"current ({b})"
        raise InvalidInput(
            f"column {name!r} in {where} holds values drift cannot compare: it compares "
            "numbers and categories (text, booleans)"
        )
    if ka != kb:
        raise InvalidInput(f"column {name!r} is {ka} in reference and {kb} in current ({b})")
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
    reference: tuple[Any, float],
    cur_col: pa.ChunkedArray,
    chosen: Mapping[str, str],
    limits: Mapping[str, float],
) -> ColumnDrift:
    ref, ref_missing = reference
    cur, cur_missing = (_numbers if kind == "numeric" else _categories)(cur_col)
    n_ref, n_cur = _count(ref), _count(cur)
    if n_ref == 0 or n_cur == 0:
        return ColumnDrift(
            column=name,
            kind=kind,
            method=NOT_COMPARED,
            statistic=math.nan,
            p_value=None,
            threshold=math.nan,
            drifted=False,
            reference_count=n_ref,
            current_count=n_cur,
            missing_reference=ref_missing,
            missing_current=cur_missing,
        )
    small = min(n_ref, n_cur) <= _SMALL  # a distance on a small sample is mostly noise
    default = ("ks", "wasserstein") if kind == "numeric" else ("chi2", "jensenshannon")
    method = chosen.get(name) or default[0 if small else 1]
    if method == "wasserstein":
        for side, values in (("reference", ref), ("current", cur)):
            if isinstance(values, np.ndarray) and (
                math.isinf(values[0]) or math.isinf(values[-1])  # sorted: at the ends
            ):
                raise InvalidInput(
                    f"column {name!r} has infinite values in {side}: the Wasserstein "
                    f"distance needs finite ones; compare it with method={{{name!r}: 'ks'}} "
                    "or 'psi', or drop them"
                )
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
    if isinstance(values, Mapping):
        return int(sum(values.values()))
    return int(values.size)


def _from_profile(column: Any, kind: str) -> tuple[Any, float]:
    """A reference column as its profile knows it: a histogram for numbers, the counts of
    its top values for categories (the rest as one "other" count when not all are
    listed)."""
    if (
        kind == "numeric"
        and column.distinct_exact
        and column.top
        and len(column.top) == column.distinct
    ):
        # every value the profile saw, with its count: the reference itself, exactly
        values = np.array([float(v) for v, _ in column.top])
        repeats = np.array([n for _, n in column.top], dtype=np.int64)
        order = np.argsort(values)
        return np.repeat(values[order], repeats[order]), column.missing_rate
    if kind == "numeric":
        hist = column.histogram
        if hist is None:
            return np.empty(0), column.missing_rate
        binned = Binned(
            edges=np.asarray(hist.edges, dtype=np.float64),
            counts=np.asarray(hist.counts, dtype=np.float64),
            std=float(column.std or 0.0) * math.sqrt((column.present - 1) / column.present)
            if column.present > 1
            else 0.0,
            present=int(column.present),
        )
        return binned, column.missing_rate
    listed = dict(column.top)
    rest = column.present - sum(listed.values())
    if rest > 0:
        listed[_OTHER] = rest
    return listed, column.missing_rate


def _numbers(col: pa.ChunkedArray) -> tuple[Any, float]:
    """The column's values as sorted float64, missing ones (null, NaN) dropped."""
    total = len(col)
    # unsafe: integers past 2**53 round to the nearest float rather than fail
    values = pc.cast(col.drop_null(), pa.float64(), safe=False).to_numpy()
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


def _ks(ref: Any, cur: np.ndarray) -> tuple[float, float | None]:
    from scipy.stats import ks_2samp

    if isinstance(ref, Binned):
        return _binned.ks(ref, cur)
    result = ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def _psi(ref: Any, cur: Any) -> tuple[float, float | None]:
    """Population stability index over the reference's deciles (open-ended outer bins),
    empty shares floored at 1e-4 before the log; over a profile's histogram bins; over
    the categories of both sides (a new category is a share the reference lacks)."""
    if isinstance(ref, Binned):
        return _binned.psi(ref, cur)
    if isinstance(ref, Mapping):
        r, c = _table(ref, cur)
        return _binned.psi_of(r / r.sum(), c / c.sum()), None
    edges = np.quantile(ref, np.linspace(0, 1, _PSI_BINS + 1)[1:-1])
    r = np.diff(np.searchsorted(ref, edges, side="right"), prepend=0, append=ref.size)
    c = np.diff(np.searchsorted(cur, edges, side="right"), prepend=0, append=cur.size)
    return _binned.psi_of(r / ref.size, c / cur.size), None


def _wasserstein(ref: Any, cur: np.ndarray) -> tuple[float, float | None]:
    """The first Wasserstein distance over the reference's standard deviation; with a
    constant reference, 0 when current equals it and infinity otherwise.

    As ``scipy.stats.wasserstein_distance``: the area between the two empirical CDFs,
    summed between consecutive values of both samples. The two sorted samples are merged
    (a stable sort of two runs is a linear merge), and each CDF is the running count of
    its own sample's values; where values tie the step between them is 0, so the sum is
    the same as scipy's searches give.
    """
    if isinstance(ref, Binned):
        return _binned.wasserstein(ref, cur)
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
    if _OTHER in ref:  # a profile listed only its top values: the rest of current joins
        listed = set(ref) - {_OTHER}  # their "other" count
        other = sum(n for k, n in cur.items() if k not in listed)
        cur = {**{k: n for k, n in cur.items() if k in listed}, _OTHER: other}
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
    with np.errstate(invalid="ignore"):  # sqrt of a rounding error below 0: no distance
        distance = float(jensenshannon(r / r.sum(), c / c.sum(), base=2))
    return (0.0 if math.isnan(distance) else distance), None


_STATS: dict[str, Any] = {
    "ks": _ks,
    "psi": _psi,
    "wasserstein": _wasserstein,
    "chi2": _chi2,
    "jensenshannon": _jensenshannon,
}
