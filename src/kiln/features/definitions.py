"""Feature definitions: frozen values that read like configuration and do no I/O.

Each definition validates its arguments when constructed (naming the parameter, the rule
and the value received) and has a ``spec()``: a JSON-able dict that is what
``FeatureStore.apply`` stores and ``plan`` diffs. Sources are checked against the data
only by ``plan``/``apply``, never at construction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from kiln.core import InvalidInput

__all__ = [
    "AGGREGATIONS",
    "DTYPES",
    "KEY_DTYPES",
    "Aggregation",
    "DeltaSource",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Field",
    "OnDemandFeatureView",
    "ParquetSource",
    "PushSource",
    "RequestSource",
    "SQLSource",
    "Source",
    "WindowedFeatureView",
    "parse_duration",
]

DTYPES = ("float64", "float32", "int64", "int32", "bool", "string", "timestamp")
KEY_DTYPES = ("int64", "int32", "string", "bool", "timestamp")
AGGREGATIONS = ("count", "sum", "mean", "min", "max", "last")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)\s*$")
_MICRO = timedelta(microseconds=1)
# Microseconds per unit; durations are kept exact in microseconds, never via float seconds.
_UNITS = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}


def _name(owner: str, param: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidInput(
            f"The {param!r} parameter of {owner} must be an identifier (letters, digits, '_', "
            f"not starting with a digit). Got {value!r} instead."
        )
    return value


def parse_duration(value: Any, *, owner: str = "a definition", param: str = "ttl") -> timedelta:
    """``timedelta``, seconds, or text like ``1500ms``, ``30s``, ``15m``, ``2h``, ``7d``, ``1w``.

    Durations are whole microseconds (what ``timedelta`` holds); text is converted exactly,
    so ``1.001s`` is 1,001,000 microseconds, not what float arithmetic makes of it.
    """
    duration: timedelta | None = None
    try:
        if isinstance(value, timedelta):
            duration = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            duration = timedelta(seconds=value) if math.isfinite(value) else None
        elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
            duration = timedelta(microseconds=round(Decimal(m.group(1)) * _UNITS[m.group(2)]))
    except OverflowError:  # beyond timedelta's range (999999999 days)
        duration = None
    if duration is None:
        raise InvalidInput(
            f"The {param!r} parameter of {owner} must be a duration such as '2d', '1h', "
            f"'30m', '500ms', a timedelta or seconds. Got {value!r} instead."
        )
    if duration <= timedelta(0):
        raise InvalidInput(
            f"The {param!r} parameter of {owner} must be positive (at least one microsecond). "
            f"Got {value!r}."
        )
    return duration


def _duration_text(value: timedelta) -> str:
    """The largest unit that divides the duration exactly: ``2h``, ``90s``, ``1001ms``.

    The text is exact (``parse_duration`` reads it back to the same duration) and, after a
    name, still an identifier, so it can be part of a default aggregation name.
    """
    micros = value // _MICRO
    for unit in ("d", "h", "m", "s", "ms"):
        if micros % _UNITS[unit] == 0:
            return f"{micros // _UNITS[unit]}{unit}"
    return f"{micros}us"


def _key_types(
    owner: str, join_keys: tuple[str, ...], key_types: Mapping[str, str] | None
) -> Mapping[str, str]:
    """Join key -> dtype, in join-key order (usually filled in by ``apply`` from the source)."""
    if key_types is None:
        return {}
    if not isinstance(key_types, Mapping):
        raise InvalidInput(
            f"The 'key_types' parameter of {owner} must map join keys to dtypes. "
            f"Got {key_types!r} instead."
        )
    for key, dtype in key_types.items():
        if key not in join_keys:
            raise InvalidInput(
                f"The 'key_types' parameter of {owner} names {key!r}, which is not a join key; "
                f"the join keys are {', '.join(join_keys)}"
            )
        if dtype not in KEY_DTYPES:
            raise InvalidInput(
                f"The 'key_types' parameter of {owner} gives join key {key!r} the dtype "
                f"{dtype!r}; join keys are {', '.join(KEY_DTYPES)}"
            )
    return {k: key_types[k] for k in join_keys if k in key_types}


def _tags(owner: str, tags: Mapping[str, Any] | None) -> Mapping[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidInput(f"The 'tags' parameter of {owner} must be a mapping. Got {tags!r}.")
    return {str(k): str(v) for k, v in tags.items()}


@dataclass(frozen=True)
class Field:
    """One typed column of a view's schema."""

    name: str
    dtype: str

    def __post_init__(self) -> None:
        _name("Field", "name", self.name)
        if self.dtype not in DTYPES:
            raise InvalidInput(
                f"The 'dtype' parameter of Field {self.name!r} must be one of "
                f"{', '.join(DTYPES)}. Got {self.dtype!r} instead."
            )

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}


def _fields(owner: str, schema: Iterable[Field]) -> tuple[Field, ...]:
    fields = tuple(schema)
    if not fields or not all(isinstance(f, Field) for f in fields):
        raise InvalidInput(
            f"The 'schema' parameter of {owner} must be a non-empty list of kiln.Field. "
            f"Got {schema!r} instead."
        )
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            raise InvalidInput(f"{owner} declares the field {f.name!r} twice")
        seen.add(f.name)
    return fields


@dataclass(frozen=True, kw_only=True)
class Entity:
    """What features describe (a user, a merchant), identified by its join keys."""

    name: str
    join_keys: tuple[str, ...]
    description: str = ""

    def __init__(self, name: str, join_keys: Sequence[str], *, description: str = "") -> None:
        object.__setattr__(self, "name", _name("Entity", "name", name))
        if isinstance(join_keys, str) or not join_keys:
            raise InvalidInput(
                f"The 'join_keys' parameter of Entity {name!r} must be a non-empty list of "
                f"column names. Got {join_keys!r} instead."
            )
        keys = tuple(_name(f"Entity {name!r}", "join_keys", k) for k in join_keys)
        object.__setattr__(self, "join_keys", keys)
        object.__setattr__(self, "description", str(description))

    kind = "entity"

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "join_keys": list(self.join_keys),
            "description": self.description,
        }


# -- sources ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Timed:
    timestamp: str = "event_timestamp"
    created: str | None = None

    def _set_times(self, owner: str, timestamp: str, created: str | None) -> None:
        """Store and check the time columns every source names (from its ``__init__``)."""
        object.__setattr__(self, "timestamp", _name(owner, "timestamp", timestamp))
        if created is not None:
            _name(owner, "created", created)
        object.__setattr__(self, "created", created)

    def _times(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "created": self.created}


@dataclass(frozen=True, kw_only=True)
class ParquetSource(_Timed):
    """Parquet files (a path or a glob) with an event-time column and, ideally, ``created``.

    ``created`` is when each row was written; rows written after a training example's
    time are never used for it, so backfills cannot leak the future.
    """

    path: str

    def __init__(
        self, path: str, *, timestamp: str = "event_timestamp", created: str | None = None
    ) -> None:
        if not isinstance(path, str) or not path:
            raise InvalidInput(
                f"The 'path' parameter of ParquetSource must be a path. Got {path!r}."
            )
        object.__setattr__(self, "path", path)
        self._set_times("ParquetSource", timestamp, created)

    def spec(self) -> dict[str, Any]:
        return {
            "type": "parquet",
            "path": self.path,
            **self._times(),
        }


@dataclass(frozen=True, kw_only=True)
class DeltaSource(_Timed):
    """A Delta Lake table, optionally pinned to a table version (time travel)."""

    path: str
    version: int | None = None

    def __init__(
        self,
        path: str,
        *,
        timestamp: str = "event_timestamp",
        created: str | None = None,
        version: int | None = None,
    ) -> None:
        if not isinstance(path, str) or not path:
            raise InvalidInput(f"The 'path' parameter of DeltaSource must be a path. Got {path!r}.")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 0
        ):
            raise InvalidInput(
                "The 'version' parameter of DeltaSource must be a table version >= 0. "
                f"Got {version!r}."
            )
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "version", version)
        self._set_times("DeltaSource", timestamp, created)

    def spec(self) -> dict[str, Any]:
        return {
            "type": "delta",
            "path": self.path,
            "version": self.version,
            **self._times(),
        }


@dataclass(frozen=True, kw_only=True)
class SQLSource(_Timed):
    """A DuckDB query over named sources.

    ``SQLSource("SELECT ... FROM tx", sources={"tx": ParquetSource(...)})``
    """

    query: str
    sources: Mapping[str, ParquetSource | DeltaSource] = field(default_factory=dict)

    def __init__(
        self,
        query: str,
        *,
        sources: Mapping[str, ParquetSource | DeltaSource],
        timestamp: str = "event_timestamp",
        created: str | None = None,
    ) -> None:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput(
                f"The 'query' parameter of SQLSource must be SQL text. Got {query!r}."
            )
        if not isinstance(sources, Mapping) or not sources:
            raise InvalidInput(
                "The 'sources' parameter of SQLSource must map table names used in the query "
                f"to ParquetSource or DeltaSource. Got {sources!r}."
            )
        for name, src in sources.items():
            _name("SQLSource", "sources", name)
            if not isinstance(src, ParquetSource | DeltaSource):
                raise InvalidInput(
                    f"SQLSource source {name!r} must be a ParquetSource or DeltaSource; got {src!r}"
                )
        object.__setattr__(self, "query", query)
        object.__setattr__(self, "sources", dict(sources))
        self._set_times("SQLSource", timestamp, created)

    def spec(self) -> dict[str, Any]:
        return {
            "type": "sql",
            "query": self.query,
            "sources": {k: v.spec() for k, v in sorted(self.sources.items())},
            **self._times(),
        }


@dataclass(frozen=True, kw_only=True)
class PushSource(_Timed):
    """Rows arrive only through ``FeatureStore.push``; they live in Kiln's offline store."""

    def __init__(self, *, timestamp: str = "event_timestamp", created: str | None = None) -> None:
        self._set_times("PushSource", timestamp, created)

    def spec(self) -> dict[str, Any]:
        return {"type": "push", **self._times()}


Source = ParquetSource | DeltaSource | SQLSource | PushSource
_SOURCES = (ParquetSource, DeltaSource, SQLSource, PushSource)


@dataclass(frozen=True, kw_only=True)
class RequestSource:
    """Fields that arrive with each request (the transaction amount being scored)."""

    name: str
    schema: tuple[Field, ...]

    def __init__(self, name: str, schema: Iterable[Field]) -> None:
        object.__setattr__(self, "name", _name("RequestSource", "name", name))
        object.__setattr__(self, "schema", _fields(f"RequestSource {name!r}", schema))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "schema": [f.spec() for f in self.schema]}


# -- views --------------------------------------------------------------------------------


def _entities(owner: str, entities: Iterable[Entity]) -> tuple[Entity, ...]:
    found = tuple(entities)
    if not found or not all(isinstance(e, Entity) for e in found):
        raise InvalidInput(
            f"The 'entities' parameter of {owner} must be a non-empty list of kiln.Entity. "
            f"Got {entities!r} instead."
        )
    return found


@dataclass(frozen=True, kw_only=True)
class FeatureView:
    """Features of one or more entities read from a batch source, valid for ``ttl``.

    ``transformation`` is optional SQL over the source, which is visible as the table
    ``source`` (``SELECT user_id, event_timestamp, amount * 2 AS doubled FROM source``).
    Without ``schema`` the features are every other column of the source, typed by it;
    ``apply`` reads the source's schema and stores the fields it found. ``key_types``
    (join key -> dtype) is filled in the same way, so that a request's keys can be
    converted to what the source holds.
    """

    name: str
    entities: tuple[Entity, ...]
    source: Source
    schema: tuple[Field, ...]
    ttl: timedelta | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    transformation: str | None = None
    online: bool = True
    description: str = ""
    key_types: Mapping[str, str] = field(default_factory=dict)
    checks: Any = None  # a kiln.validation.Schema the view's rows must meet (a quality gate)

    def __init__(
        self,
        name: str,
        *,
        entities: Iterable[Entity],
        source: Source,
        schema: Iterable[Field] | None = None,
        ttl: timedelta | str | float | None = None,
        tags: Mapping[str, Any] | None = None,
        transformation: str | None = None,
        online: bool = True,
        description: str = "",
        key_types: Mapping[str, str] | None = None,
        checks: Any = None,
    ) -> None:
        owner = f"FeatureView {name!r}"
        object.__setattr__(self, "name", _name("FeatureView", "name", name))
        object.__setattr__(self, "entities", _entities(owner, entities))
        if not isinstance(source, _SOURCES):
            raise InvalidInput(
                f"The 'source' parameter of {owner} must be a ParquetSource, DeltaSource, "
                f"SQLSource or PushSource. Got {source!r} instead."
            )
        object.__setattr__(self, "source", source)
        # No schema (None, or the empty one of a copy) means: inferred by apply.
        fields = () if schema is None or schema == () else _fields(owner, schema)
        if not fields and isinstance(source, PushSource):
            raise InvalidInput(
                f"{owner} needs schema=: a PushSource has no columns to infer features from "
                "until rows are pushed"
            )
        keys = set(self.join_keys)
        clash = [
            f.name for f in fields if f.name in keys or f.name in (source.timestamp, source.created)
        ]
        if clash:
            raise InvalidInput(
                f"{owner}: field {clash[0]!r} is a join key or time column; the schema lists "
                "only feature columns"
            )
        object.__setattr__(self, "schema", fields)
        object.__setattr__(
            self, "ttl", parse_duration(ttl, owner=owner) if ttl is not None else None
        )
        object.__setattr__(self, "tags", _tags(owner, tags))
        if transformation is not None and (
            not isinstance(transformation, str) or not transformation.strip()
        ):
            raise InvalidInput(
                f"The 'transformation' parameter of {owner} must be SQL text over the table "
                f"'source'. Got {transformation!r} instead."
            )
        object.__setattr__(self, "transformation", transformation)
        object.__setattr__(self, "online", bool(online))
        object.__setattr__(self, "description", str(description))
        object.__setattr__(self, "key_types", _key_types(owner, self.join_keys, key_types))
        object.__setattr__(self, "checks", _checks(owner, checks))

    kind = "feature_view"

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(k for e in self.entities for k in e.join_keys)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entities": [e.name for e in self.entities],
            "source": self.source.spec(),
            "schema": [f.spec() for f in self.schema],
            "ttl": _duration_text(self.ttl) if self.ttl else None,
            "tags": dict(sorted(self.tags.items())),
            "transformation": self.transformation,
            "online": self.online,
            "description": self.description,
            **_key_spec(self.key_types),
            **({"checks": self.checks.to_dict()} if self.checks is not None else {}),
        }


def _checks(owner: str, checks: Any) -> Any:
    """A quality gate's schema, or None; a dict is read as a saved schema."""
    from kiln.validation import Schema

    if checks is None or isinstance(checks, Schema):
        return checks
    if isinstance(checks, Mapping):
        return Schema.from_dict(checks)
    raise InvalidInput(
        f"The 'checks' parameter of {owner} must be a kiln.validation.Schema. "
        f"Got {type(checks).__name__} instead."
    )


def _key_spec(key_types: Mapping[str, str]) -> dict[str, Any]:
    # Left out when unknown, so definitions stored before key types existed keep their digest.
    return {"key_types": dict(key_types)} if key_types else {}


@dataclass(frozen=True)
class Aggregation:
    """``function`` of ``column`` over the trailing ``window`` (``count`` needs no column)."""

    column: str | None
    function: str
    window: timedelta
    name: str

    def __init__(
        self,
        column: str | None,
        function: str,
        window: timedelta | str,
        *,
        name: str | None = None,
    ) -> None:
        if function not in AGGREGATIONS:
            raise InvalidInput(
                f"The 'function' parameter of Aggregation must be one of "
                f"{', '.join(AGGREGATIONS)}. Got {function!r} instead."
            )
        if column is None and function != "count":
            raise InvalidInput(f"Aggregation {function!r} needs a column; only 'count' takes none")
        if column is not None:
            _name("Aggregation", "column", column)
        win = parse_duration(window, owner="Aggregation", param="window")
        default = f"{column or 'events'}_{function}_{_duration_text(win)}"
        object.__setattr__(self, "column", column)
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "window", win)
        object.__setattr__(self, "name", _name("Aggregation", "name", name or default))

    def spec(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "function": self.function,
            "window": _duration_text(self.window),
            "name": self.name,
        }


@dataclass(frozen=True, kw_only=True)
class WindowedFeatureView:
    """Aggregations of an event stream per entity over trailing windows (1h, 1d, 7d...).

    The same definition is computed offline (SQL over the event table, point in time)
    and kept up to date online as events are pushed.
    """

    name: str
    entities: tuple[Entity, ...]
    source: Source
    aggregations: tuple[Aggregation, ...]
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    key_types: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        name: str,
        *,
        entities: Iterable[Entity],
        source: Source,
        aggregations: Iterable[Aggregation],
        tags: Mapping[str, Any] | None = None,
        description: str = "",
        key_types: Mapping[str, str] | None = None,
    ) -> None:
        owner = f"WindowedFeatureView {name!r}"
        object.__setattr__(self, "name", _name("WindowedFeatureView", "name", name))
        object.__setattr__(self, "entities", _entities(owner, entities))
        if not isinstance(source, _SOURCES):
            raise InvalidInput(
                f"The 'source' parameter of {owner} must be a source. Got {source!r}."
            )
        object.__setattr__(self, "source", source)
        aggs = tuple(aggregations)
        if not aggs or not all(isinstance(a, Aggregation) for a in aggs):
            raise InvalidInput(
                f"The 'aggregations' parameter of {owner} must be a non-empty list of "
                f"kiln.Aggregation. Got {aggregations!r} instead."
            )
        names = [a.name for a in aggs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInput(f"{owner} names the aggregation {dupes[0]!r} twice")
        object.__setattr__(self, "aggregations", aggs)
        object.__setattr__(self, "tags", _tags(owner, tags))
        object.__setattr__(self, "description", str(description))
        object.__setattr__(self, "key_types", _key_types(owner, self.join_keys, key_types))

    kind = "windowed_view"

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(k for e in self.entities for k in e.join_keys)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.aggregations)

    @property
    def max_window(self) -> timedelta:
        return max(a.window for a in self.aggregations)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entities": [e.name for e in self.entities],
            "source": self.source.spec(),
            "aggregations": [a.spec() for a in self.aggregations],
            "tags": dict(sorted(self.tags.items())),
            "description": self.description,
            **_key_spec(self.key_types),
        }


@dataclass(frozen=True, kw_only=True)
class OnDemandFeatureView:
    """Features computed by a Python function from request data and other features.

    ``function`` takes a pandas DataFrame with the input columns (request fields and the
    features named in ``inputs``) and returns a DataFrame (or dict of columns) with the
    schema's columns. The same function runs vectorized over a training batch and on
    each online request, so the two paths cannot drift apart.
    """

    name: str
    sources: tuple[RequestSource, ...]
    inputs: tuple[str, ...]
    schema: tuple[Field, ...]
    function: Callable[[Any], Any]
    description: str = ""

    def __init__(
        self,
        name: str,
        *,
        schema: Iterable[Field],
        function: Callable[[Any], Any],
        sources: Iterable[RequestSource] = (),
        inputs: Iterable[str] = (),
        description: str = "",
    ) -> None:
        owner = f"OnDemandFeatureView {name!r}"
        object.__setattr__(self, "name", _name("OnDemandFeatureView", "name", name))
        srcs = tuple(sources)
        if not all(isinstance(s, RequestSource) for s in srcs):
            raise InvalidInput(
                f"The 'sources' parameter of {owner} must be a list of kiln.RequestSource. "
                f"Got {sources!r} instead."
            )
        refs = tuple(inputs)
        for ref in refs:
            if not isinstance(ref, str) or ref.count(":") != 1:
                raise InvalidInput(
                    f"The 'inputs' parameter of {owner} takes feature references "
                    f"'view:feature'. Got {ref!r}."
                )
        if not callable(function):
            raise InvalidInput(
                f"The 'function' parameter of {owner} must be callable. Got {function!r}."
            )
        object.__setattr__(self, "sources", srcs)
        object.__setattr__(self, "inputs", refs)
        object.__setattr__(self, "schema", _fields(owner, schema))
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "description", str(description))

    kind = "on_demand_view"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema)

    @property
    def request_fields(self) -> tuple[Field, ...]:
        return tuple(f for s in self.sources for f in s.schema)

    def spec(self) -> dict[str, Any]:
        import inspect

        try:
            code = inspect.getsource(self.function)
        except (OSError, TypeError):
            code = None
        fn = self.function
        return {
            "name": self.name,
            "sources": [s.spec() for s in self.sources],
            "inputs": list(self.inputs),
            "schema": [f.spec() for f in self.schema],
            "function": {
                "ref": f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}",
                "source": code,
            },
            "description": self.description,
        }


@dataclass(frozen=True, kw_only=True)
class FeatureService:
    """The named set of features a model consumes: ``view:feature`` refs or whole views."""

    name: str
    features: tuple[str, ...]
    description: str = ""

    def __init__(
        self,
        name: str,
        *,
        features: Iterable[str | FeatureView | WindowedFeatureView | OnDemandFeatureView],
        description: str = "",
    ) -> None:
        object.__setattr__(self, "name", _name("FeatureService", "name", name))
        refs: list[str] = []
        for item in features:
            if isinstance(item, FeatureView) and not item.schema:
                raise InvalidInput(
                    f"FeatureService {name!r} takes view {item.name!r}, whose schema is "
                    f"inferred when it is applied; list its features as '{item.name}:feature'"
                )
            if isinstance(item, FeatureView | WindowedFeatureView | OnDemandFeatureView):
                refs.extend(f"{item.name}:{f}" for f in item.feature_names)
            elif isinstance(item, str) and item.count(":") == 1:
                refs.append(item)
            else:
                raise InvalidInput(
                    f"The 'features' parameter of FeatureService {name!r} takes 'view:feature' "
                    f"references or views. Got {item!r}."
                )
        if not refs:
            raise InvalidInput(f"FeatureService {name!r} needs at least one feature")
        object.__setattr__(self, "features", tuple(refs))
        object.__setattr__(self, "description", str(description))

    kind = "feature_service"

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "features": list(self.features), "description": self.description}


Definition = Entity | FeatureView | WindowedFeatureView | OnDemandFeatureView | FeatureService
