"""Training-serving skew: were the features a deployment served the ones training would see?

For a sample of the requests a deployment answered in a window, the features are
recomputed offline, point in time, and compared with what the model was given. The
prediction log holds both halves: ``features`` (the model's exact input) and ``entities``
(the entity keys the online lookup used, logged by the native endpoint). The offline side
is :meth:`kiln.FeatureStore.get_historical_features` with a spine of those keys and each
request's answer time ``at``: per view, the newest event at or before ``at`` within the
view's TTL, the value a training set built for that moment holds.

What counts as skew, and why it can be real without a bug:

- The online store holds what materialization (or a push) wrote. A source row that
  arrives after the last materialization with an event time before the request makes
  the offline value newer than the served one: staleness skew, real and worth knowing.
- An online value written behind the store's back, or a transformation that differs
  between the paths, shows up the same way, named by feature, with example rows.
- Numbers are equal within ``tolerance`` (absolute plus relative: ``|a - b| <= tol * (1 +
  max(|a|, |b|))``), after the offline value is cast to the served float type (a
  ``float32`` input was rounded so on the way to the model); missing on both sides (null
  or NaN: the server gives a float model NaN for a null) is equal, missing on one side is
  skew. Text, booleans and everything else must be exactly equal.

Inputs that are not read from a feature view are not recomputed and are listed in
``skipped`` with the reason: on-demand features (computed from the request at serving
time) and request fields. Each model version is compared through its own input plan
(which input reads which feature), computed from the deployment's current definition as
the server computes it; requests without entity keys (v2 and MLflow requests, rows logged
before entity keys were) cannot be recomputed and are counted, not compared. Shadow
answers are left out.

The work is columnar: one offline retrieval per model version for every sampled row, the
comparison in Arrow and numpy; only the few example rows become Python values.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kiln.core import InvalidInput, NotFound
from kiln.monitoring.served import _between, _served_nothing, window_bounds

__all__ = ["FeatureSkew", "SkewResult", "skew"]

EXAMPLES = 5
"""Example rows kept per feature."""

_AT = "_kiln_answered_at"  # the spine's timestamp column: no entity key is named so
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass(frozen=True, kw_only=True)
class FeatureSkew:
    """One model input read from a feature: how often and how far served and offline differ.

    ``feature`` is the model input (the ``features`` field of the log), ``source`` the
    ``view:feature`` it is read from, ``models`` the versions compared (``fraud/3``).
    ``compared`` rows, of which ``skewed`` differ (``null_mismatch`` of those because one
    side is missing). ``mean_abs_diff`` and ``max_abs_diff`` measure the skewed rows
    with a number on both sides (0.0 when there are none); None for inputs that are not
    numbers. ``examples`` are up to five skewed rows: ``request_id``, ``row``, ``model``,
    ``at``, the ``entities`` (the view's join keys), ``served`` and ``offline``.
    """

    feature: str
    source: str
    models: tuple[str, ...]
    compared: int
    skewed: int
    skew_rate: float
    null_mismatch: int
    mean_abs_diff: float | None
    max_abs_diff: float | None
    examples: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, valid JSON (non-finite numbers as None, times as ISO text)."""
        return {k: _jsonable(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class SkewResult:
    """Training-serving skew of a deployment's traffic in ``[since, until)``.

    ``requests`` (``rows`` logged rows) were compared, sampled from the
    ``served_requests`` answered with entity keys; ``without_entities`` requests carried
    none and could not be recomputed. ``features`` has one row per model input read from
    a feature; ``skipped`` maps the other inputs to why they were not recomputed.
    """

    deployment: str
    since: datetime
    until: datetime
    requests: int
    rows: int
    served_requests: int
    without_entities: int
    tolerance: float
    features: tuple[FeatureSkew, ...]
    skipped: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def skewed(self) -> list[str]:
        """The inputs with any skew (``skew_rate > 0``), in the order of ``features``."""
        return list(dict.fromkeys(f.feature for f in self.features if f.skew_rate > 0))

    @property
    def skew_rate(self) -> float:
        """The largest feature's skew rate (0.0 when no feature was compared)."""
        return max((f.skew_rate for f in self.features), default=0.0)

    def __getitem__(self, feature: str) -> FeatureSkew:
        for row in self.features:
            if row.feature == feature:
                return row
        known = ", ".join(f.feature for f in self.features) or "none"
        raise KeyError(f"no feature {feature!r} was compared; compared: {known}")

    def to_pandas(self) -> Any:
        """One row per feature (``examples`` as lists of dicts)."""
        import pandas as pd

        fields = list(FeatureSkew.__dataclass_fields__)
        rows = [{k: getattr(f, k) for k in fields} for f in self.features]
        return pd.DataFrame(rows, columns=fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, valid JSON (non-finite numbers as None, times as ISO text)."""
        return {
            "deployment": self.deployment,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "requests": self.requests,
            "rows": self.rows,
            "served_requests": self.served_requests,
            "without_entities": self.without_entities,
            "tolerance": self.tolerance,
            "skew_rate": self.skew_rate,
            "skewed": self.skewed,
            "features": [f.to_dict() for f in self.features],
            "skipped": dict(self.skipped),
        }


def skew(
    deployment: str,
    *,
    window: str | timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sample: int = 1000,
    seed: int = 0,
    tolerance: float = 1e-9,
) -> SkewResult:
    """Recompute a sample of ``deployment``'s served features offline and compare.

    The window is ``until`` (default now) back ``window`` (``"1h"``), or from ``since``.
    ``sample`` requests (all of them when fewer) are drawn from those answered in it,
    the same ones for the same ``seed``. See the module docstring for what is compared
    and how; raises NotFound for an unknown deployment or a window with nothing served,
    InvalidInput for a deployment without online features or a bad argument.
    """
    from kiln.serving import deployments
    from kiln.serving.predlog import read_predictions

    _check_args(deployment, sample, seed, tolerance)
    spec = deployments.get(deployment)
    if not spec.features and spec.service is None:
        raise InvalidInput(
            f"deployment {deployment!r} looks up no online features (it has neither "
            "features= nor service=); skew compares the feature values a deployment served "
            "with the offline store's, so it needs a deployment with online features"
        )
    start, end = window_bounds(window, since, until, owner="skew")
    logged = read_predictions(deployment=deployment, since=start)
    logged = _between(logged.filter(pc.invert(logged["shadow"])), start, end)
    if logged.num_rows == 0:
        raise _served_nothing(deployment, start, end)
    served_ids = pc.count_distinct(logged["request_id"]).as_py()
    keyed = (
        logged.filter(pc.is_valid(logged["entities"]))
        if "entities" in logged.column_names
        else logged.slice(0, 0)
    )
    with_keys = pc.count_distinct(keyed["request_id"]).as_py() if keyed.num_rows else 0
    if with_keys == 0:
        raise NotFound(
            f"none of the {served_ids} requests deployment {deployment!r} answered between "
            f"{start.isoformat()} and {end.isoformat()} carries entity keys; skew recomputes "
            "features from the keys the native endpoint (POST /deployments/"
            f"{deployment}/predict) logs, and v2 or MLflow requests have none"
        )
    keyed = _sampled(keyed, sample, seed)
    compared = _Compared(tolerance)
    for ref in sorted(pc.unique(keyed["model"]).to_pylist()):
        compared.version(spec, ref, keyed.filter(pc.equal(keyed["model"], ref)))
    return SkewResult(
        deployment=deployment,
        since=start,
        until=end,
        requests=pc.count_distinct(keyed["request_id"]).as_py(),
        rows=keyed.num_rows,
        served_requests=with_keys,
        without_entities=served_ids - with_keys,
        tolerance=float(tolerance),
        features=compared.results(),
        skipped=MappingProxyType(dict(compared.skipped)),
    )


def _check_args(deployment: Any, sample: Any, seed: Any, tolerance: Any) -> None:
    from kiln.serving.specs import check_name

    check_name(deployment)
    checks = (
        ("sample", sample, "an integer >= 1", _is_int(sample) and sample >= 1),
        ("seed", seed, "an integer", _is_int(seed)),
        (
            "tolerance",
            tolerance,
            "a finite number >= 0",
            isinstance(tolerance, int | float)
            and not isinstance(tolerance, bool)
            and math.isfinite(tolerance)
            and tolerance >= 0,
        ),
    )
    for param, value, expected, ok in checks:
        if not ok:
            raise InvalidInput(
                f"The {param!r} parameter of skew must be {expected}. Got {value!r}."
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _sampled(table: pa.Table, sample: int, seed: int) -> pa.Table:
    """The rows of ``sample`` requests drawn by id (sorted first, so the draw depends on
    ``seed`` and the ids only, not on file order), in answer order."""
    ids = pc.unique(table["request_id"])
    if len(ids) > sample:
        ids = ids.take(pc.sort_indices(ids))
        rng = np.random.default_rng(int(seed))
        chosen = np.sort(rng.choice(len(ids), size=sample, replace=False))
        table = table.filter(pc.is_in(table["request_id"], value_set=ids.take(pa.array(chosen))))
    return table.sort_by([("at", "ascending"), ("request_id", "ascending"), ("row", "ascending")])


@dataclass
class _Tally:
    """One (input, source) pair's counts across model versions."""

    models: list[str] = field(default_factory=list)
    compared: int = 0
    skewed: int = 0
    null_mismatch: int = 0
    numeric: bool = True
    diffs: list[np.ndarray] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)


class _Compared:
    """Accumulates the comparison of each model version's rows."""

    def __init__(self, tolerance: float) -> None:
        from kiln.features import FeatureStore

        self.tolerance = float(tolerance)
        self.fs = FeatureStore()
        self.tallies: dict[tuple[str, str], _Tally] = {}
        self.skipped: dict[str, str] = {}

    def version(self, spec: Any, ref: str, rows: pa.Table) -> None:
        """Recompute and compare the rows one model version answered."""
        from kiln.features import FeatureView, OnDemandFeatureView, WindowedFeatureView
        from kiln.registry import models
        from kiln.serving.deployments import check_compatible

        plan = check_compatible(spec, models.resolve(ref), client=self.fs.client)
        served = rows["features"].combine_chunks() if "features" in rows.column_names else None
        inputs = (
            [served.type.field(i).name for i in range(served.type.num_fields)]
            if served is not None
            else []
        )
        entities = rows["entities"].combine_chunks()
        logged_keys = {entities.type.field(i).name for i in range(entities.type.num_fields)}
        # model input -> (its source, the view that holds it)
        wanted: dict[str, tuple[str, FeatureView | WindowedFeatureView]] = {}
        for column in inputs:
            source = plan.features.get(column)
            if source is None:
                self.skipped.setdefault(
                    column, "a request field, given by the client: not read from a feature view"
                )
                continue
            view = self.fs.get(source.partition(":")[0])
            if not isinstance(view, FeatureView | WindowedFeatureView):
                self.skipped.setdefault(
                    column,
                    f"computed on demand ({source}) from the request: not recomputed"
                    if isinstance(view, OnDemandFeatureView)
                    else f"{source} is not read from a feature view: not recomputed",
                )
                continue
            missing = [k for k in view.join_keys if k not in logged_keys]
            if missing:
                self.skipped.setdefault(
                    column,
                    f"the log holds no entity key {missing[0]!r} for {source}, whose view "
                    "joins on it",
                )
                continue
            wanted[column] = (source, view)
        if not wanted:
            return
        keys = list(dict.fromkeys(k for _, view in wanted.values() for k in view.join_keys))
        key_columns = {k: pc.struct_field(entities, k) for k in keys}
        present = np.ones(rows.num_rows, dtype=bool)
        for column in key_columns.values():
            present &= np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if not present.all():  # rows of a batch shared with requests that had no keys
            mask = pa.array(present)
            rows, entities = rows.filter(mask), entities.filter(mask)
            served = served.filter(mask) if served is not None else None
            key_columns = {k: c.filter(mask) for k, c in key_columns.items()}
        if rows.num_rows == 0 or served is None:
            return
        spine = pa.table({**key_columns, _AT: rows["at"]})
        sources = list(dict.fromkeys(source for source, _ in wanted.values()))
        offline = self.fs.get_historical_features(
            spine, sources, timestamp=_AT, full_feature_names=True
        ).to_arrow()
        for column, (source, view) in wanted.items():
            view_name, _, feature = source.partition(":")
            self._column(
                column,
                source,
                ref,
                pc.struct_field(served, column),
                offline.column(f"{view_name}__{feature}").combine_chunks(),
                rows,
                {k: key_columns[k] for k in view.join_keys},
            )

    def _column(
        self,
        column: str,
        source: str,
        ref: str,
        served: pa.Array,
        offline: pa.Array,
        rows: pa.Table,
        keys: Mapping[str, pa.Array],
    ) -> None:
        skewed, one_side, diff = _compare(served, offline, self.tolerance)
        tally = self.tallies.setdefault((column, source), _Tally())
        tally.models.append(ref)
        tally.compared += len(skewed)
        tally.skewed += int(skewed.sum())
        tally.null_mismatch += int(one_side.sum())
        if diff is None:
            tally.numeric = False
        else:
            tally.diffs.append(diff[skewed & ~np.isnan(diff)])
        room = EXAMPLES - len(tally.examples)
        if room > 0 and skewed.any():
            picked = pa.array(np.flatnonzero(skewed)[:room])
            chosen = {k: c.take(picked).to_pylist() for k, c in keys.items()}
            fields = zip(
                rows["request_id"].take(picked).to_pylist(),
                rows["row"].take(picked).to_pylist(),
                rows["at"].take(picked).to_pylist(),
                served.take(picked).to_pylist(),
                offline.take(picked).to_pylist(),
                strict=True,
            )
            for i, (request_id, row, at, served_value, offline_value) in enumerate(fields):
                tally.examples.append(
                    {
                        "request_id": request_id,
                        "row": row,
                        "model": ref,
                        "at": at,
                        "entities": {k: values[i] for k, values in chosen.items()},
                        "served": served_value,
                        "offline": offline_value,
                    }
                )

    def results(self) -> tuple[FeatureSkew, ...]:
        out = []
        for (column, source), t in self.tallies.items():
            mean: float | None = None
            most: float | None = None
            if t.numeric:
                diffs = np.concatenate(t.diffs) if t.diffs else np.empty(0)
                mean = float(diffs.mean()) if diffs.size else 0.0
                most = float(diffs.max()) if diffs.size else 0.0
            out.append(
                FeatureSkew(
                    feature=column,
                    source=source,
                    models=tuple(t.models),
                    compared=t.compared,
                    skewed=t.skewed,
                    skew_rate=t.skewed / t.compared if t.compared else 0.0,
                    null_mismatch=t.null_mismatch,
                    mean_abs_diff=mean,
                    max_abs_diff=most,
                    examples=tuple(t.examples),
                )
            )
        return tuple(out)


def _compare(
    served: pa.Array, offline: pa.Array, tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per row: skewed, missing on one side only, and for numbers |served - offline|
    (NaN where either is missing); None for the differences of other types."""
    served, offline = _decoded(served), _decoded(offline)
    if _is_number(served.type) and _is_number(offline.type):
        if pa.types.is_floating(served.type) and not offline.type.equals(served.type):
            offline = pc.cast(offline, served.type, safe=False)  # as the model was given it
        a, b = _float64(served), _float64(offline)
        a_missing, b_missing = np.isnan(a), np.isnan(b)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a - b)
            close = (a == b) | (diff <= tolerance * (1.0 + np.maximum(np.abs(a), np.abs(b))))
        both = ~a_missing & ~b_missing
        one_side = a_missing ^ b_missing
        diff[~both] = np.nan
        diff[both & (a == b)] = 0.0  # equal infinities: no difference
        return one_side | (both & ~close), one_side, diff
    a_null = _nulls(served)
    b_null = _nulls(offline)
    one_side = a_null ^ b_null
    equal = _equal(served, offline)
    return ~(equal | (a_null & b_null)), one_side, None


def _decoded(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values


def _is_number(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    )


def _float64(values: pa.Array) -> np.ndarray:
    """As float64 with NaN for null (a copy: the differences are written in place)."""
    as_float = pc.cast(values, pa.float64(), safe=False)
    return np.array(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)


def _nulls(values: pa.Array) -> np.ndarray:
    return np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _equal(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Row by row exact equality (False where either is null), in Arrow where it can."""
    if not a.type.equals(b.type):
        try:
            b = pc.cast(b, a.type)
        except _ARROW_ERRORS:
            with contextlib.suppress(*_ARROW_ERRORS):  # else compared as they are, below
                a, b = pc.cast(a, pa.string()), pc.cast(b, pa.string())
    try:
        same = pc.equal(a, b)
    except _ARROW_ERRORS:  # lists and other nested values: few inputs are, compare in Python
        return np.array(
            [x is not None and x == y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)],
            dtype=bool,
        )
    return np.asarray(pc.fill_null(same, False).to_numpy(zero_copy_only=False), dtype=bool)


def _jsonable(value: Any) -> Any:
    """``value`` as valid JSON: non-finite floats as None, times as ISO text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_jsonable(v) for v in value]
    return value
