"""``FeatureStore``: one object over the catalog, the offline engine and the online store.

It holds no feature logic of its own: it resolves feature references against the applied
definitions and hands the work to :mod:`kiln.features.offline` (training data,
materialization reads) and :mod:`kiln.features.online` (serving reads and writes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from kiln.core import (
    InvalidInput,
    KilnError,
    NotFound,
    close_matches,
    from_millis,
    get_settings,
    now_millis,
    to_millis,
)
from kiln.features import _tables as t
from kiln.features._gates import all_rows, gate_rows
from kiln.features._keys import key_types, online_keys
from kiln.features._resolve import resolve_view
from kiln.features._specs import NAMESPACES, Definition
from kiln.features.catalog import Catalog, DefinitionRecord, Plan, require_views
from kiln.features.datasets import TrainingSet
from kiln.features.definitions import (
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    WindowedFeatureView,
)
from kiln.features.offline import (
    RetrievalJob,
    ViewRequest,
    check_view_source,
    get_historical_features,
    latest_per_entity,
    recent_events,
)
from kiln.features.on_demand import (
    OnDemandJob,
    Resolved,
    columns_dict,
    columns_of,
    hidden,
    records,
    run_on_demand,
)
from kiln.features.online import OnlineRequest, OnlineStore
from kiln.features.push import offline_schema, online_rows, prepare, write_offline
from kiln.features.windows import read_windows, update_windows
from kiln.tracking import TrackingClient, default_client

__all__ = [
    "FeatureRequirements",
    "FeatureStore",
    "MaterializationRecord",
    "MaterializeFailure",
    "MaterializeReport",
    "MaterializeResult",
    "OnDemandJob",
    "OnlineResponse",
]


@dataclass(frozen=True, kw_only=True)
class FeatureRequirements:
    """What an online read of a feature list needs from a request, and what it returns.

    A server checks a model against this before the model takes traffic: the entity
    keys and request fields a request must carry, and the output column names.
    """

    entity_keys: tuple[str, ...]
    request_fields: tuple[Field, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class MaterializeResult:
    """What one view's materialization wrote: entities read and values that changed."""

    view: str
    start: datetime | None
    end: datetime
    entities: int
    written: int
    validation: Any = None  # the gate's report (kiln.validation) for a view with checks


@dataclass(frozen=True, kw_only=True)
class MaterializationRecord:
    """How fresh a view version's online values are: when it was last materialized, up
    to which time (``watermark``: the latest ``end`` asked for), the newest event time
    materialized so far, and how many entities the last run read. ``newest_event`` is
    None when no run found a row (or the record predates it being kept)."""

    view: str
    version: int
    materialized_at: datetime
    watermark: datetime
    newest_event: datetime | None
    rows: int


@dataclass(frozen=True, kw_only=True)
class MaterializeFailure:
    """A view that could not be materialized, and why (its online values are unchanged)."""

    view: str
    error: str
    validation: Any = None  # the failed gate's report, when a quality gate stopped it


@dataclass(frozen=True)
class MaterializeReport:
    """Per view, what a materialization wrote or why it failed.

    One failing view does not stop the others. Iterating (and ``len``) goes over the
    views that succeeded; ``failures`` lists the others with their errors, and
    ``raise_for_failures`` turns them into one exception for callers that want one.
    """

    results: tuple[MaterializeResult, ...]
    failures: tuple[MaterializeFailure, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    def __iter__(self) -> Iterator[MaterializeResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def raise_for_failures(self) -> None:
        """KilnError naming every failed view and its error; nothing if all succeeded."""
        if self.failures:
            raise KilnError(
                f"materialization failed for {len(self.failures)} view(s): "
                + "; ".join(f"{f.view}: {f.error}" for f in self.failures)
            )


class OnlineResponse(dict[str, list[Any]]):
    """Online features as a dict of columns; ``to_arrow`` for the columnar path."""

    def to_arrow(self) -> pa.Table:
        return pa.table({k: pa.array(v) for k, v in self.items()})


def _utc(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime; got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class FeatureStore:
    """Features defined once, served offline (training data) and online (serving).

    With no arguments everything comes from settings: the metadata store of
    ``KILN_DB_URL``, the online store of ``KILN_ONLINE_URL`` (SQLite by default) and the
    offline directory ``KILN_OFFLINE_DIR`` (``KILN_HOME/offline``).
    """

    def __init__(
        self,
        *,
        client: TrackingClient | None = None,
        online: OnlineStore | str | None = None,
        offline_dir: str | Path | None = None,
    ) -> None:
        settings = get_settings()
        self.client = client or default_client()
        self.offline_dir = Path(offline_dir or settings.offline_dir or settings.home / "offline")
        self.online = (
            online
            if isinstance(online, OnlineStore)
            else OnlineStore.open(online or settings.online_url)
        )
        self.catalog = Catalog(self.client.meta, self._check_source)
        self._loaded: tuple[dict[str, Definition], dict[str, int]] | None = None
        self._online_plans: dict[tuple[Any, ...], _OnlinePlan] = {}
        self._direct: set[tuple[Any, ...]] = set()

    def __repr__(self) -> str:
        return f"FeatureStore(offline_dir={str(self.offline_dir)!r})"

    # -- definitions ----------------------------------------------------------------------

    def _check_source(self, view: FeatureView | WindowedFeatureView) -> None:
        check_view_source(view, offline_dir=self.offline_dir)

    def plan(self, objects: Iterable[Any], *, base: str | Path | None = None) -> Plan:
        """What ``apply`` would create or update, field by field; writes nothing.

        Views without a schema show the fields inferred from their source.
        """
        batch, inferred = self._resolved(objects, base)
        return _with_inferred(self.catalog.plan(batch), inferred)

    def apply(self, objects: Iterable[Any], *, base: str | Path | None = None) -> Plan:
        """Validate the batch against its sources and store a new version of each change.

        Relative source paths are resolved against ``base`` (the working directory by
        default; the CLI passes the definitions file's directory) and stored absolute.
        """
        batch, inferred = self._resolved(objects, base)
        for view in batch:  # quality gates first: a failing one stores nothing
            if getattr(view, "checks", None) is not None:
                gate_rows(view, all_rows(view, self.offline_dir), "apply")
        plan = self.catalog.apply(batch)
        self.refresh()
        return _with_inferred(plan, inferred)

    def _resolved(
        self, objects: Iterable[Any], base: str | Path | None
    ) -> tuple[list[Any], dict[str, tuple[Field, ...]]]:
        """Views as they will be stored (see :mod:`kiln.features._resolve`)."""
        root = Path(base if base is not None else Path.cwd()).absolute()
        items = [objects] if hasattr(objects, "kind") else list(objects)
        batch: list[Any] = []
        inferred: dict[str, tuple[Field, ...]] = {}
        for obj in items:
            if isinstance(obj, FeatureView | WindowedFeatureView):
                obj, fields = resolve_view(obj, root)
                if fields:
                    inferred[obj.name] = fields
            batch.append(obj)
        return batch, inferred

    def refresh(self) -> None:
        """Forget cached definitions; the next call reads what is applied now."""
        self._loaded = None
        self._online_plans = {}
        self._direct = set()

    def list_definitions(self, kind: str | None = None) -> list[DefinitionRecord]:
        """The latest version of every applied definition (of one ``kind``)."""
        return self.catalog.records(kind)

    def history(self, name: str, *, kind: str = "view") -> list[DefinitionRecord]:
        """Every applied version of one definition, oldest first.

        ``kind`` is ``view`` (any feature view: plain, windowed, on-demand), ``entity`` or
        ``service`` (a definition kind such as ``feature_view`` is accepted too). Pair
        consecutive records with ``DefinitionRecord.changes_from`` for what each version
        changed. NotFound names close matches when ``name`` was never applied.
        """
        namespaces = {**NAMESPACES, **{n: n for n in NAMESPACES.values()}}
        if kind not in namespaces:
            raise InvalidInput(
                f"history: kind must be one of {', '.join(sorted(set(namespaces.values())))} "
                f"(or a definition kind); got {kind!r}"
            )
        return self.catalog.history(namespaces[kind], name)

    def materializations(self, view: str | None = None) -> list[MaterializationRecord]:
        """Freshness: per view version ever materialized (of ``view`` when given), the
        last materialization, its watermark and the newest event time materialized;
        newest materialization first. Views never materialized have no record."""
        m = t.materializations.c
        query = sa.select(t.materializations).order_by(m.updated_at.desc(), m.view)
        if view is not None:
            query = query.where(m.view == view)
        with self.client.meta.read() as conn:
            rows = conn.execute(query).all()
        return [
            MaterializationRecord(
                view=r.view,
                version=int(r.view_version),
                materialized_at=from_millis(r.updated_at),
                watermark=from_millis(r.watermark),
                newest_event=from_millis(r.newest_event),
                rows=int(r.rows),
            )
            for r in rows
        ]

    def _state(self) -> tuple[dict[str, Definition], dict[str, int]]:
        if self._loaded is None:
            self._loaded = self.catalog.load()
        return self._loaded

    @property
    def definitions(self) -> Mapping[str, Definition]:
        return self._state()[0]

    def get(self, name: str) -> Definition:
        found = self.definitions.get(name)
        if found is None:
            raise NotFound(
                f"no feature definition named {name!r}{close_matches(name, self.definitions)}"
            )
        return found

    # -- resolving references -------------------------------------------------------------

    def _refs(self, features: Sequence[str] | FeatureService | str) -> list[str]:
        if isinstance(features, FeatureService):
            return list(features.features)
        if isinstance(features, str):
            service = self.get(features)
            if not isinstance(service, FeatureService):
                raise InvalidInput(
                    f"{features!r} is a {service.kind.replace('_', ' ')}, not a feature service; "
                    "pass a list of 'view:feature' references"
                )
            return list(service.features)
        refs = list(features)
        if not refs:
            raise InvalidInput("ask for at least one feature ('view:feature')")
        return refs

    def _resolve(self, features: Sequence[str] | FeatureService | str, full: bool) -> Resolved:
        """Which views to read, under which names, including on-demand views' inputs."""
        refs = self._refs(features)
        require_views(refs, self.definitions)
        wanted: dict[str, list[tuple[str, str]]] = {}
        outputs: list[str] = []
        on_demand: list[tuple[OnDemandFeatureView, list[tuple[str, str]]]] = []

        def add(view_name: str, feature: str, output: str) -> None:
            pairs = wanted.setdefault(view_name, [])
            if (feature, output) not in pairs:
                pairs.append((feature, output))

        for ref in refs:
            view_name, _, feature = ref.partition(":")
            output = f"{view_name}__{feature}" if full else feature
            if output in outputs:
                continue
            outputs.append(output)
            view = self.definitions[view_name]
            if isinstance(view, OnDemandFeatureView):
                entry = next((e for e in on_demand if e[0] is view), None)
                if entry is None:
                    entry = (view, [])
                    on_demand.append(entry)
                    for input_ref in view.inputs:
                        in_view, _, in_feature = input_ref.partition(":")
                        add(in_view, in_feature, hidden(input_ref))
                entry[1].append((feature, output))
            else:
                add(view_name, feature, output)
        return Resolved(wanted=wanted, outputs=outputs, on_demand=on_demand)

    # -- offline --------------------------------------------------------------------------

    def get_historical_features(
        self,
        spine: Any,
        features: Sequence[str] | FeatureService | str,
        *,
        timestamp: str = "event_timestamp",
        full_feature_names: bool = False,
    ) -> TrainingSet:
        """Point-in-time-correct features for every spine row (entity keys + timestamp).

        On-demand features run their function vectorized over the whole result; their
        request fields must be spine columns. The result is lazy; ``.save(name, run=)``
        snapshots it with its lineage.
        """
        resolved = self._resolve(features, full_feature_names)
        versions = self._state()[1]
        used = {name: versions[name] for name in resolved.wanted}
        used.update({view.name: versions[view.name] for view, _ in resolved.on_demand})
        return TrainingSet(
            self._historical(spine, resolved, timestamp, full_feature_names),
            feature_views=used,
            offline_dir=self.offline_dir,
            client=self.client,
        )

    def _historical(
        self, spine: Any, resolved: Resolved, timestamp: str, full_feature_names: bool
    ) -> RetrievalJob | OnDemandJob:
        requests = []
        for view_name, pairs in resolved.wanted.items():
            view = self.definitions[view_name]
            assert isinstance(view, FeatureView | WindowedFeatureView)
            requests.append(
                ViewRequest(view=view, features=tuple(dict.fromkeys(f for f, _ in pairs)))
            )
        if not resolved.on_demand:
            return get_historical_features(
                spine,
                requests,
                offline_dir=self.offline_dir,
                timestamp=timestamp,
                full_feature_names=full_feature_names,
            )
        job = get_historical_features(
            spine,
            requests,
            offline_dir=self.offline_dir,
            timestamp=timestamp,
            full_feature_names=True,
        )
        return OnDemandJob(job, resolved, spine_columns=columns_of(spine))

    # -- materialization ------------------------------------------------------------------

    def _online_views(self, views: Sequence[str] | None) -> list[FeatureView | WindowedFeatureView]:
        chosen = [self.get(v) for v in views] if views else list(self.definitions.values())
        out: list[FeatureView | WindowedFeatureView] = [
            v
            for v in chosen
            if (isinstance(v, FeatureView) and v.online) or isinstance(v, WindowedFeatureView)
        ]
        if views and len(out) != len(chosen):
            bad = next(v for v in chosen if v not in out)
            raise InvalidInput(
                f"{bad.name!r} is not a feature view with online=True or a windowed view"
            )
        return out

    def _materialize_windows(self, view: WindowedFeatureView, end: datetime) -> MaterializeResult:
        """Each entity's online event list becomes exactly the window before ``end``."""
        events = recent_events(view, end=end, offline_dir=self.offline_dir)
        version = self._online_version(view.name)
        written = update_windows(self.online, view, version, events, replace=True)
        self._record_materialization(view, end, events, written)
        return MaterializeResult(
            view=view.name,
            start=end - view.max_window,
            end=end,
            entities=written,
            written=written,
        )

    def _version(self, view: FeatureView | WindowedFeatureView) -> int:
        return self._state()[1][view.name]

    def _online_version(self, view_name: str) -> str:
        """The online key space of a view: each applied version writes and reads its own."""
        return f"v{self._state()[1][view_name]}"

    def _materialize_view(
        self,
        view: FeatureView | WindowedFeatureView,
        start: datetime | None,
        end: datetime,
        *,
        incremental: bool = False,
    ) -> MaterializeResult:
        if isinstance(view, WindowedFeatureView):
            return self._materialize_windows(view, end)
        table = latest_per_entity(
            view,
            start=None if incremental else start,
            arrived_after=start if incremental else None,
            end=end,
            offline_dir=self.offline_dir,
        )
        report = gate_rows(view, table, "materialize")
        written = self.online.write(
            view.name,
            self._online_version(view.name),
            table,
            join_keys=view.join_keys,
            features=view.feature_names,
        )
        self._record_materialization(view, end, table, table.num_rows)
        return MaterializeResult(
            view=view.name,
            start=start,
            end=end,
            entities=table.num_rows,
            written=written,
            validation=report,
        )

    def _record_materialization(
        self, view: FeatureView | WindowedFeatureView, end: datetime, table: pa.Table, rows: int
    ) -> None:
        """Keep the view version's freshness: watermark and newest event only move forward."""
        newest = pc.max(table["event_ts"]).as_py() if table.num_rows else None
        m = t.materializations
        version = self._version(view)
        with self.client.meta.write() as conn:
            key = (m.c.view == view.name) & (m.c.view_version == version)
            old = conn.execute(sa.select(m.c.watermark, m.c.newest_event).where(key)).first()
            marks = [to_millis(end)] + ([old.watermark] if old is not None else [])
            events = [to_millis(newest)] if newest is not None else []
            if old is not None and old.newest_event is not None:
                events.append(old.newest_event)
            conn.execute(m.delete().where(key))
            conn.execute(
                m.insert().values(
                    view=view.name,
                    view_version=version,
                    watermark=max(marks),
                    newest_event=max(events) if events else None,
                    rows=rows,
                    updated_at=now_millis(),
                )
            )

    def profile(self, view: str, **options: Any) -> Any:
        """The :class:`kiln.validation.Profile` of a feature view's rows (its source with
        its transformation, and the rows pushed to it): join keys and features."""
        from kiln.validation import profile

        definition = self.get(view)
        if not isinstance(definition, FeatureView | WindowedFeatureView):
            raise InvalidInput(
                f"{view!r} is not a feature view (its kind: {definition.kind}); only feature "
                "views have rows to profile"
            )
        return profile(all_rows(definition, self.offline_dir), **options)

    def materialize(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        views: Sequence[str] | None = None,
    ) -> MaterializeReport:
        """Write the latest value per entity with event time in (start, end] online.

        Each view is materialized on its own: one that fails (its source is gone, its
        data no longer fits its schema) is reported in ``failures`` and the others are
        still written.
        """
        end_utc = _utc(end, "end") or datetime.now(UTC)
        start_utc = _utc(start, "start")
        if start_utc is not None and start_utc >= end_utc:
            raise InvalidInput(f"materialize: start {start_utc} must be before end {end_utc}")
        return _each_view(
            self._online_views(views), lambda v: self._materialize_view(v, start_utc, end_utc)
        )

    def materialize_incremental(
        self, end: datetime | None = None, *, views: Sequence[str] | None = None
    ) -> MaterializeReport:
        """Materialize what arrived since each view's last run, up to ``end``.

        Rows are selected by arrival (``created``, or event time without it), so a row
        that arrives late with an old event time is still picked up; running twice
        changes nothing.
        """
        end_utc = _utc(end, "end") or datetime.now(UTC)
        m = t.materializations.c

        def one(view: FeatureView | WindowedFeatureView) -> MaterializeResult:
            version = self._version(view)
            with self.client.meta.read() as conn:
                mark = conn.execute(
                    sa.select(m.watermark).where(m.view == view.name, m.view_version == version)
                ).scalar_one_or_none()
            start = datetime.fromtimestamp(mark / 1000, UTC) if mark is not None else None
            if start is not None and start >= end_utc:
                return MaterializeResult(
                    view=view.name, start=start, end=end_utc, entities=0, written=0
                )
            return self._materialize_view(view, start, end_utc, incremental=True)

        return _each_view(self._online_views(views), one)

    # -- online ---------------------------------------------------------------------------

    def get_online_features(
        self,
        entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
        features: Sequence[str] | FeatureService | str,
        *,
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        """Latest values per entity (nulls for unknown entities or values past their TTL).

        Entity rows carry the join keys and, for on-demand features, the request fields.
        """
        key = (
            tuple(features) if not isinstance(features, str | FeatureService) else (features,),
            full_feature_names,
        )
        plan = self._online_plans.get(key)
        if plan is None:
            plan = self._online_plans[key] = self._online_plan(features, full_feature_names)
        batch, windows, resolved, keys, types = plan
        if types:
            entity_rows = online_keys(entity_rows, types) or entity_rows
        if key in self._direct:  # the store's answer is already the response, in order
            return OnlineResponse(self.online.read(batch, entity_rows))
        out: dict[str, list[Any]] = self.online.read(batch, entity_rows) if batch else {}
        request: dict[str, list[Any]] | None = None
        if windows or resolved.on_demand or any(k not in out for k in keys):
            request = columns_dict(entity_rows)
        if windows:
            rows = records(entity_rows)
            for view, version, pairs in windows:
                out.update(read_windows(self.online, view, version, pairs, rows))
        if resolved.on_demand:
            assert request is not None
            run_on_demand(resolved, out, request)
        head = {k: out[k] if k in out else (request or {})[k] for k in keys}
        response = OnlineResponse({**head, **{k: out[k] for k in resolved.outputs}})
        if not windows and not resolved.on_demand and list(out) == list(response):
            self._direct.add(key)
        return response

    def _online_plan(
        self, features: Sequence[str] | FeatureService | str, full_feature_names: bool
    ) -> _OnlinePlan:
        resolved = self._resolve(features, full_feature_names)
        batch: list[OnlineRequest] = []
        windows = []
        keys: list[str] = []
        types = key_types(
            v
            for v in map(self.definitions.__getitem__, resolved.wanted)
            if isinstance(v, FeatureView | WindowedFeatureView)
        )
        for view_name, pairs in resolved.wanted.items():
            view = self.definitions[view_name]
            assert isinstance(view, FeatureView | WindowedFeatureView)
            keys.extend(k for k in view.join_keys if k not in keys)
            version = self._online_version(view_name)
            if isinstance(view, WindowedFeatureView):
                windows.append((view, version, pairs))
                continue
            assert isinstance(view, FeatureView)
            batch.append(
                OnlineRequest(
                    view=view.name,
                    version=version,
                    join_keys=view.join_keys,
                    features=view.feature_names,
                    wanted=tuple(pairs),
                    ttl=view.ttl,
                )
            )
        return batch, windows, resolved, keys, types

    def requirements(
        self, features: Sequence[str] | FeatureService | str, *, full_feature_names: bool = False
    ) -> FeatureRequirements:
        """The entity keys and request fields ``get_online_features`` needs for ``features``."""
        _, _, resolved, keys, _ = self._online_plan(features, full_feature_names)
        fields: dict[str, Field] = {}
        for view, _ in resolved.on_demand:
            for source in view.sources:
                for f in source.schema:
                    fields.setdefault(f.name, f)
        return FeatureRequirements(
            entity_keys=tuple(keys),
            request_fields=tuple(f for name, f in fields.items() if name not in keys),
            outputs=tuple(resolved.outputs),
        )

    # -- push -----------------------------------------------------------------------------

    def push(self, view: str, rows: Any) -> int:
        """Append rows (events or feature rows) to the view offline and update it online.

        Returns the number of rows pushed. Offline readers see the whole push or none of
        it; online values move forward only (an older row never replaces a newer one).
        """
        target = self.get(view)
        if not isinstance(target, FeatureView | WindowedFeatureView):
            raise InvalidInput(
                f"{view!r} is a {target.kind.replace('_', ' ')}; push takes a feature view or "
                "a windowed view"
            )
        table = prepare(target, rows, offline=offline_schema(self.offline_dir, target))
        write_offline(self.offline_dir, target, table)
        version = self._online_version(target.name)
        if isinstance(target, WindowedFeatureView):
            update_windows(self.online, target, version, online_rows(target, table))
        elif target.online:
            self.online.write(
                target.name,
                version,
                online_rows(target, table),
                join_keys=target.join_keys,
                features=target.feature_names,
            )
        return int(table.num_rows)


_OnlinePlan = tuple[
    list[OnlineRequest],
    list[tuple[WindowedFeatureView, str, list[tuple[str, str]]]],
    "Resolved",
    list[str],
    dict[str, str],  # join key -> the dtype requests are converted to
]


def _with_inferred(plan: Plan, inferred: Mapping[str, tuple[Field, ...]]) -> Plan:
    if not inferred:
        return plan
    return Plan(
        tuple(
            dataclasses.replace(c, inferred=tuple(f"{f.name}: {f.dtype}" for f in fields))
            if c.kind == "feature_view" and (fields := inferred.get(c.name))
            else c
            for c in plan.changes
        )
    )


def _each_view(
    views: Sequence[FeatureView | WindowedFeatureView],
    work: Callable[[FeatureView | WindowedFeatureView], MaterializeResult],
) -> MaterializeReport:
    """``work`` for every view; a view that fails is reported, and the rest still run."""
    results: list[MaterializeResult] = []
    failures: list[MaterializeFailure] = []
    for view in views:
        try:
            results.append(work(view))
        except Exception as exc:  # reported per view, never swallowed
            reason = str(exc) if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"
            report = getattr(exc, "report", None)
            failures.append(MaterializeFailure(view=view.name, error=reason, validation=report))
    return MaterializeReport(tuple(results), tuple(failures))
