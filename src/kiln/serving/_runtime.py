"""What one server worker runs: the live deployments and the path of a prediction.

Every worker process polls the metadata store (``poll_s``, 0.5 s by default) for
deployment revisions and for the versions their model references resolve to now. A
change is built off to the side (models loaded in a thread, the signature checked against
the deployment's features) and then swapped in with one assignment: a request already
routed keeps the objects it started with, so a promotion or rollback drops nothing. A
version that does not fit the deployment is refused and the previous one keeps serving.

One deployment that cannot be served (its model or version gone, an artifact that fails
its hash check, a model that does not load here) never stops the others: with nothing
loaded for it, it is not ready and answers 503 with the reason; the change of state is
logged once (not every poll), and it is tried again, backing off, until it loads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from kiln.core import InvalidInput, KilnError, NotFound
from kiln.registry import ColumnSpec, ModelVersion
from kiln.serving import deployments as deployments_api
from kiln.serving._slots import ModelSlot, SlotPool
from kiln.serving._stats import StatsBoard
from kiln.serving.batching import Answered, Overloaded, PredictTimeout
from kiln.serving.compatibility import InputPlan
from kiln.serving.guards import ArmStats, judge
from kiln.serving.metrics import Outcome, ServingMetrics
from kiln.serving.predlog import AnsweredRequests, BatchInputs, PredictionLog
from kiln.serving.specs import Deployment
from kiln.serving.traffic import Arm, arm_label, choose_arm, mirrors, request_key
from kiln.tracking import TrackingClient

__all__ = ["Answer", "Live", "Runtime", "Unavailable"]

log = logging.getLogger("kiln.serving")

_ids = itertools.count(1)
_PREFIX = f"{os.getpid():x}-{os.urandom(4).hex()}-"


def new_request_id() -> str:
    """Unique per server process and cheap: a random process prefix and a counter.

    The prefix holds the worker's process id, so a response tells which worker answered.
    """
    return f"{_PREFIX}{next(_ids):x}"


class _Served:
    """A request as the metrics and the prediction log name it, handed to the batcher
    with its rows.

    When its batch is answered, the whole batch is accounted in one piece: the circuit
    breaker hears of its successes once, the request counter and latency histogram move
    once (``accounted``), and the batch is logged as one buffered entry (``logged``).
    Per request, each of these cost as much as the rest of the request's batching. A
    request whose batch could not be taken whole (a request in it timed out, several
    deployments share the batch, no room in the log's buffer) does what is left on its
    own after its answer, as a fallback's answer always does.

    ``entities`` are the entity keys the request's features were looked up with (the
    native path), logged beside its inputs so the features can be recomputed offline.
    """

    __slots__ = (
        "accounted",
        "arm",
        "deployment",
        "entities",
        "logged",
        "request_id",
        "shadow",
    )

    def __init__(
        self,
        deployment: str,
        request_id: str,
        arm: str,
        shadow: bool,
        entities: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.deployment = deployment
        self.request_id = request_id
        self.arm = arm
        self.shadow = shadow
        self.entities = entities
        self.logged = False
        self.accounted = False


class Unavailable(KilnError):
    """No model can answer now (breaker open or failure, and no fallback): a 503."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Answer(NamedTuple):
    """One request's predictions and who made them (a tuple: one is made per request)."""

    outputs: np.ndarray | list[Any]
    ref: str  # the model version that answered, e.g. "fraud/3"
    version: int
    arm: str
    fallback: bool
    request_id: str


@dataclass
class _Failure:
    """Why a deployment could not be (re)built, and when to try the same thing again."""

    reason: str
    attempt: tuple[Any, ...]  # (revision, champion id, challenger id) that failed
    retry_at: float
    delay_s: float


def _reason(exc: BaseException) -> str:
    """One line for a log and a 503: Kiln's own message, else the exception's type too."""
    text = str(exc) if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


_RETRY_MIN_S = 1.0
_RETRY_MAX_S = 30.0


@dataclass
class Live:
    """One deployment as this worker serves it now; replaced whole, never edited."""

    spec: Deployment
    champion: ModelSlot
    challenger: ModelSlot | None
    fallback: ModelSlot | None
    entity_keys: tuple[str, ...]
    request_fields: tuple[ColumnSpec, ...]
    features: Sequence[str] | str | None  # feature refs, a service name, or nothing
    plans: dict[str, InputPlan]  # per model version id: where each input comes from
    key: tuple[int, str, str | None]  # revision, champion id, challenger id
    started: float = field(default_factory=time.time)
    stats: dict[str, ArmStats] = field(default_factory=dict)
    judged: bool = field(init=False)  # a guard compares the arms: per-arm stats are kept

    def __post_init__(self) -> None:
        traffic = self.spec.traffic
        self.judged = (
            traffic.guard is not None
            and self.challenger is not None
            and traffic.policy in ("canary", "blue_green")
        )

    def slot_for_version(self, version: int | None) -> tuple[ModelSlot, Arm]:
        """The slot answering a request that names ``version`` (or follows the policy)."""
        arms: tuple[tuple[ModelSlot | None, Arm], ...] = (
            (self.champion, "champion"),
            (self.challenger, "challenger"),
        )
        for slot, arm in arms:
            if slot is not None and (version is None or slot.version.version == version):
                return slot, arm
        known = [s.version.version for s in (self.champion, self.challenger) if s is not None]
        raise NotFound(
            f"deployment {self.spec.name!r} does not serve version {version}; it serves "
            f"{', '.join(map(str, known))}"
        )


class Runtime:
    """The live deployments of one worker and everything a prediction touches.

    ``names`` are the stored deployments to serve (all of them when None and nothing is
    ``static``); ``static`` deployments are served as given, never stored (``kiln serve
    --model``): their model reference is still resolved every poll, so alias moves reach
    them too.
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        *,
        client: TrackingClient,
        static: Sequence[Deployment] = (),
        feature_store: Any = None,
        predlog: PredictionLog | None = None,
        metrics: ServingMetrics | None = None,
        board: StatsBoard | None = None,
        poll_s: float = 0.5,
        threads: int = 4,
    ) -> None:
        self._static = {spec.name: spec for spec in static}
        self._names = tuple(names) if names else (() if static else None)
        self._client = client
        self._fs = feature_store
        self.predlog = predlog
        self.metrics = metrics or ServingMetrics()
        self._board = board
        self._poll_s = poll_s
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="kiln-predict")
        self.pool = SlotPool(
            client,
            self._executor,
            self._observe_batch,
            self._answered,
        )
        self.live: dict[str, Live] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._breakers: dict[tuple[str, str], str] = {}  # last state put in the gauge
        self.failures: dict[str, _Failure] = {}  # by deployment name
        self._poll_error: str | None = None
        self._started = False
        self._ready_gauge: dict[str, bool | None] = {}
        self.served: tuple[str, ...] = ()  # every deployment meant to be served, ready or not

    @property
    def ready(self) -> bool:
        """Started, and serving something unless nothing is there to serve."""
        return self._started and (bool(self.live) or not self.failures)

    def not_ready(self) -> dict[str, str]:
        """The deployments this worker should serve and cannot, with the reason."""
        return {n: f.reason for n, f in self.failures.items() if n not in self.live}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every deployment that can be served; the others are reported not ready."""
        await self.refresh()
        self._started = True
        self._tasks.append(asyncio.create_task(self._watch(), name="kiln-watch"))
        self._tasks.append(asyncio.create_task(self._judge_loop(), name="kiln-guards"))

    async def stop(self) -> None:
        """Graceful: stop watching, let queued predictions finish, flush the log."""
        self._started = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._background:
            await asyncio.wait(self._background, timeout=5.0)
        await self.pool.close()
        self._executor.shutdown(wait=True)
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.close)

    def get(self, name: str) -> Live:
        live = self.live.get(name)
        if live is None:
            failure = self.failures.get(name)
            if failure is not None:
                raise Unavailable(
                    f"deployment {name!r} is not ready: {failure.reason}",
                    retry_after_s=failure.delay_s,
                )
            raise NotFound(
                f"no deployment {name!r} is served here; served: "
                f"{', '.join(sorted(self.live)) or 'none'}"
            )
        return live

    # -- building and swapping ---------------------------------------------------------------

    def _versions(self, spec: Deployment) -> tuple[ModelVersion, ModelVersion | None]:
        champion = self.pool.resolve(spec.model)
        challenger = None
        if spec.traffic.policy != "single" and spec.traffic.challenger is not None:
            challenger = self.pool.resolve(spec.traffic.challenger)
        return champion, challenger

    async def _build(
        self, spec: Deployment, versions: tuple[ModelVersion, ModelVersion | None]
    ) -> Live:
        acquired: list[ModelSlot] = []
        try:
            return await self._assemble(spec, versions, acquired)
        except BaseException:
            for slot in acquired:  # a half-built deployment holds no model
                self._spawn(self.pool.release(slot, grace_s=0.0))
            raise

    async def _assemble(
        self,
        spec: Deployment,
        versions: tuple[ModelVersion, ModelVersion | None],
        acquired: list[ModelSlot],
    ) -> Live:
        champion_v, challenger_v = versions
        requirements = None
        if spec.features or spec.service:
            requirements = await asyncio.to_thread(self._requirements, spec)
        plans: dict[str, InputPlan] = {}
        for version in (champion_v, challenger_v):
            if version is not None:
                plans[version.id] = deployments_api.check_compatible(
                    spec, version, requirements=requirements, client=self._client
                )

        async def acquire(version: ModelVersion) -> ModelSlot:
            slot = await self.pool.acquire(version, spec.batching, spec.breaker)
            acquired.append(slot)
            return slot

        champion = await acquire(champion_v)
        challenger = None
        if challenger_v is not None:
            challenger = await acquire(challenger_v)
        fallback = None
        if spec.fallback is not None and spec.fallback.model is not None:
            fallback = await acquire(
                await asyncio.to_thread(self.pool.resolve, spec.fallback.model)
            )
        request: dict[str, ColumnSpec] = {}
        for plan in plans.values():
            for column in plan.request:
                if column.name is not None:
                    request.setdefault(column.name, column)
        features: Sequence[str] | str | None = spec.features or spec.service
        return Live(
            spec=spec,
            champion=champion,
            challenger=challenger,
            fallback=fallback,
            entity_keys=plans[champion_v.id].entity_keys,
            request_fields=tuple(request.values()),
            features=features,
            plans=plans,
            key=(spec.revision, champion_v.id, challenger_v.id if challenger_v else None),
            stats={"champion": ArmStats(), "challenger": ArmStats()},
        )

    def _requirements(self, spec: Deployment) -> Any:
        fs = self._feature_store()
        return fs.requirements(list(spec.features) if spec.features else spec.service)

    def _feature_store(self) -> Any:
        if self._fs is None:
            from kiln.features import FeatureStore

            self._fs = FeatureStore()
        return self._fs

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed poll must not stop the next one
                reason = _reason(exc)
                if reason != self._poll_error:
                    log.error("checking for deployment changes failed: %s", reason)
                self._poll_error = reason
            else:
                if self._poll_error is not None:
                    log.warning("checking for deployment changes works again")
                self._poll_error = None

    async def refresh(self) -> None:
        """Swap in every deployment whose revision or resolved versions changed.

        Each deployment is refreshed on its own: one that cannot be built keeps what it
        served (or, with nothing loaded, is not ready) and the others carry on.
        """
        revisions: dict[str, int] = {}
        if self._names != ():
            revisions = await asyncio.to_thread(deployments_api.revisions, client=self._client)
        names = self._names if self._names is not None else tuple(revisions)
        names = (*names, *self._static)
        revisions.update((name, spec.revision) for name, spec in self._static.items())
        for name in [n for n in (*self.live, *self.failures) if n not in names]:
            self.failures.pop(name, None)  # no longer stored: no longer served
            self._set_ready(name, None)
            gone = self.live.pop(name, None)
            if gone is not None:
                await self._release(gone)
        self.served = names
        for name in names:
            await self._refresh_one(name, revisions.get(name))

    async def _refresh_one(self, name: str, revision: int | None) -> None:
        current = self.live.get(name)
        attempt: tuple[Any, ...] = (revision,)  # what is being tried, for the back-off
        try:
            if revision is None:  # named on the command line, and not (or no longer) stored
                if current is not None:
                    del self.live[name]
                    await self._release(current)
                    current = None
                raise NotFound(f"deployment {name!r} does not exist")
            if self._backing_off(name, attempt):
                return
            spec = self._static.get(name)
            if current is not None and current.spec.revision == revision:
                spec = current.spec
            elif spec is None:
                spec = await asyncio.to_thread(deployments_api.get, name, client=self._client)
            versions = await asyncio.to_thread(self._versions, spec)
            attempt = (spec.revision, versions[0].id, versions[1].id if versions[1] else None)
            if current is not None and attempt == current.key:
                self._recovered(name, current)
                return
            if self._backing_off(name, attempt):
                return
            fresh = await self._build(spec, versions)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(name, attempt, exc, current)
            return
        self.live[name] = fresh
        log.info("deployment %r now serves %s", name, fresh.champion.ref)
        self._recovered(name, fresh)
        if current is not None:
            await self._release(current)

    def _backing_off(self, name: str, attempt: tuple[Any, ...]) -> bool:
        """Whether ``attempt`` failed a moment ago: a broken artifact is not reloaded
        every poll, only after a delay that doubles up to :data:`_RETRY_MAX_S`."""
        failure = self.failures.get(name)
        return (
            failure is not None
            and failure.attempt == attempt
            and time.monotonic() < failure.retry_at
        )

    def _failed(
        self, name: str, attempt: tuple[Any, ...], exc: BaseException, current: Live | None
    ) -> None:
        """Record why ``name`` could not be built; log only a change of state or reason."""
        reason = _reason(exc)
        previous = self.failures.get(name)
        same = previous is not None and previous.reason == reason
        delay = min(previous.delay_s * 2.0, _RETRY_MAX_S) if same and previous else _RETRY_MIN_S
        self.failures[name] = _Failure(reason, attempt, time.monotonic() + delay, delay)
        if same:
            return
        if current is not None:
            log.error(
                "deployment %r keeps serving %s; its change cannot be served: %s",
                name,
                current.champion.ref,
                reason,
            )
        else:
            log.error("deployment %r is not ready: %s", name, reason)
            self._set_ready(name, False)

    def _recovered(self, name: str, live: Live) -> None:
        failure = self.failures.pop(name, None)
        if failure is not None:
            log.warning("deployment %r is ready: serves %s", name, live.champion.ref)
        self._set_ready(name, True)

    def _set_ready(self, name: str, ready: bool | None) -> None:
        """The readiness gauge of ``name`` (None: it is no longer served here)."""
        if self._ready_gauge.get(name) != ready:
            self._ready_gauge[name] = ready
            self.metrics.set_ready(name, ready)

    async def _release(self, live: Live) -> None:
        for slot in (live.champion, live.challenger, live.fallback):
            if slot is not None:
                self._spawn(self.pool.release(slot))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- predicting -------------------------------------------------------------------------------

    def infer(
        self,
        name: str,
        data: np.ndarray | Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        key: str | None = None,
        request_id: str | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, Answer]:
        """Model input already assembled (v2, MLflow): route, batch, predict, log.

        Routes now and returns the answer's coroutine (await it), not a coroutine of its
        own: one level less to enter and resume on every request.
        """
        live = self.get(name)
        if version is not None:
            slot, arm = live.slot_for_version(version)
        else:
            slot, arm = self._route(live, key)
        return self._answer(live, slot, arm, data, request_id, features)

    async def predict(
        self,
        name: str,
        lookup: Mapping[str, Sequence[Any]],
        rows: int,
        *,
        request_id: str | None = None,
    ) -> tuple[Answer, dict[str, list[Any]]]:
        """The native path: look up online features, add request fields, then predict.

        ``lookup`` holds the entity keys and request fields as columns of ``rows`` values.
        """
        live = self.get(name)
        key = None
        if live.spec.traffic.sticky_key is not None and rows:
            key = request_key(live.spec.traffic, {k: v[0] for k, v in lookup.items()})
        slot, arm = self._route(live, key)
        if not slot.layout.names:
            raise InvalidInput(
                f"model {slot.ref} of deployment {name!r} takes one unnamed tensor, which the "
                f"native endpoint cannot build from fields; send it to /v2/models/{name}/infer "
                "or /invocations"
            )
        plan = live.plans[slot.version.id]
        online: Mapping[str, list[Any]] = {}
        if live.features is not None:
            online = self._feature_store().get_online_features(lookup, live.features)
        columns: dict[str, Any] = {}
        for column in slot.layout.names:
            source = plan.features.get(column)
            if source is not None:
                columns[column] = online[_online_name(source, online)]
            elif column in lookup:
                columns[column] = lookup[column]
        data = slot.layout.from_columns(columns, rows)
        served = {n: _plain_list(columns[n]) for n in slot.layout.names}
        entities = None
        if self.predlog is not None and live.entity_keys and live.features is not None:
            entities = {k: _key_column(lookup[k]) for k in live.entity_keys if k in lookup}
        answer = await self._answer(live, slot, arm, data, request_id, served, entities)
        return answer, served

    def _route(self, live: Live, key: str | None) -> tuple[ModelSlot, Arm]:
        traffic = live.spec.traffic
        if live.challenger is None or traffic.policy in ("single", "shadow"):
            return live.champion, "champion"
        arm = choose_arm(traffic, key, random.random())
        return (live.challenger, arm) if arm == "challenger" else (live.champion, arm)

    async def _answer(
        self,
        live: Live,
        slot: ModelSlot,
        arm: Arm,
        data: np.ndarray | Mapping[str, np.ndarray],
        request_id: str | None,
        features: Mapping[str, Any] | None,
        entities: Mapping[str, np.ndarray] | None = None,
    ) -> Answer:
        rid = request_id or new_request_id()
        spec = live.spec
        _check_rows(data)  # a malformed request is refused before it can join a batch
        if not slot.accepts_nan:
            nulls = slot.layout.nan_inputs(data)
            if nulls:
                raise InvalidInput(
                    f"input {nulls[0]!r} is null or NaN, which model {slot.ref} cannot take; "
                    "send a number"
                )
        start = time.perf_counter()
        label = arm_label(spec.traffic, arm)
        if live.challenger is not None and mirrors(spec.traffic):
            self._spawn(self._shadow(live, data, rid, features, entities))
        outputs: np.ndarray | list[Any] | None = None
        answered_by: ModelSlot | None = slot
        fallback = False
        outcome: Outcome = "ok"
        served = _Served(spec.name, rid, label, False, entities)
        if slot.breaker.allow():
            batcher = slot.batcher
            try:
                ticket = batcher.enqueue(data, timeout_s=spec.timeout_ms / 1000.0, tag=served)
                try:  # awaited here, not through Batcher.submit: one coroutine less
                    outputs = await ticket.fut
                except asyncio.CancelledError:
                    batcher.abandon(ticket)
                    raise
                if not served.accounted:
                    slot.breaker.record_success()
            except Overloaded:
                self.metrics.observe_request(spec.name, slot.ref, label, "overloaded", 0.0)
                raise
            except PredictTimeout:
                slot.breaker.record_failure()
                outcome = "timeout"
            except Exception as exc:
                slot.breaker.record_failure()
                outcome = "error"
                log.warning("%s failed on %s: %s", slot.ref, spec.name, exc)
            if not served.accounted:
                self._report_breaker(spec.name, slot)
        else:
            outcome = "error"  # the breaker is open: the model is not even asked
        if live.judged:  # the statistics a guard compares; nothing else reads them
            live.stats[arm].record(
                (time.perf_counter() - start) * 1000.0,
                error=outcome != "ok",
                predictions=_scores(outputs),
            )
        if outputs is None:
            self.metrics.observe_error(spec.name, slot.ref, outcome)
            outputs, answered_by = await self._fallback(live, data, outcome)
            fallback, outcome = True, "fallback"
        seconds = time.perf_counter() - start
        if not served.accounted:
            self.metrics.observe_request(spec.name, slot.ref, label, outcome, seconds)
        answer = Answer(
            outputs=outputs,
            ref=answered_by.ref if answered_by is not None else "fallback",
            version=answered_by.version.version if answered_by is not None else 0,
            arm=label,
            fallback=fallback,
            request_id=rid,
        )
        if not served.logged:  # a fallback's answer is never logged yet
            await self._log(
                live, slot, answer, features, data, seconds, shadow=False, entities=entities
            )
        return answer

    async def _fallback(
        self, live: Live, data: np.ndarray | Mapping[str, np.ndarray], outcome: str
    ) -> tuple[np.ndarray | list[Any], ModelSlot | None]:
        spec = live.spec
        rows = _rows(data)
        if spec.fallback is None:
            raise Unavailable(
                f"deployment {spec.name!r}: the model could not answer ({outcome}) and the "
                "deployment has no fallback",
                retry_after_s=spec.breaker.open_s or 1.0,
            )
        if spec.fallback.model is None or live.fallback is None:
            self.metrics.count_fallback(spec.name, "constant")
            return [spec.fallback.value] * rows, None
        slot = live.fallback
        try:
            outputs = await slot.batcher.submit(data, timeout_s=spec.timeout_ms / 1000.0)
        except Exception as exc:
            raise Unavailable(
                f"deployment {spec.name!r}: the model ({outcome}) and its fallback "
                f"{slot.ref} both failed: {exc}"
            ) from None
        self.metrics.count_fallback(spec.name, slot.ref)
        return outputs, slot

    async def _shadow(
        self,
        live: Live,
        data: np.ndarray | Mapping[str, np.ndarray],
        request_id: str,
        features: Mapping[str, Any] | None,
        entities: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """The challenger answers a copy of the request; logged, never returned."""
        slot = live.challenger
        assert slot is not None
        start = time.perf_counter()
        ok, outputs = True, None
        served = (
            _Served(live.spec.name, request_id, "shadow", True, entities)
            if self.predlog is not None
            else None
        )
        try:
            outputs = await slot.batcher.submit(
                data, timeout_s=live.spec.timeout_ms / 1000.0, tag=served
            )
        except Exception:
            ok = False
        seconds = time.perf_counter() - start
        live.stats["challenger"].record(
            seconds * 1000.0, error=not ok, predictions=_scores(outputs)
        )
        self.metrics.observe_shadow(live.spec.name, slot.ref, "ok" if ok else "error", seconds)
        if outputs is not None and (served is None or not served.logged):
            answer = Answer(outputs, slot.ref, slot.version.version, "shadow", False, request_id)
            await self._log(
                live, slot, answer, features, data, seconds, shadow=True, entities=entities
            )

    async def _log(
        self,
        live: Live,
        slot: ModelSlot,
        answer: Answer,
        features: Mapping[str, Any] | None,
        data: np.ndarray | Mapping[str, np.ndarray],
        seconds: float,
        *,
        shadow: bool,
        entities: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """One call per request: the log keeps references to the arrays served, no copies.

        The inputs are what the model was given: ``data`` (the matrix in signature order,
        labelled with the input names, or the columns), so the native path's ``features``
        lists are only needed for their names. ``entities`` are the entity keys of a
        native request with features.
        """
        if self.predlog is None:
            return
        deployment = live.spec.name
        inputs = _logged_inputs(live, slot, answer.ref, features, data)
        try:
            rows = await self.predlog.append_batch_async(
                deployment=deployment,
                model=answer.ref,
                version=answer.version,
                arm=answer.arm,
                request_id=answer.request_id,
                inputs=inputs,
                outputs=answer.outputs,
                latency_ms=seconds * 1000.0,
                at=time.time_ns() // 1000,
                fallback=answer.fallback,
                shadow=shadow,
                entities=entities,
            )
        except InvalidInput as exc:  # never fail an answer already given over its log row
            log.error("%s: request %s not logged: %s", deployment, answer.request_id, exc)
            return
        self.metrics.count_logged(deployment, rows)

    def _answered(self, slot: ModelSlot, batch: Answered) -> None:
        """Account and log a batch answered for one deployment in one piece (``_Served``)."""
        tags = batch.tags
        first = tags[0]
        if type(first) is not _Served:
            return
        deployment = first.deployment
        if any(type(t) is not _Served or t.deployment != deployment for t in tags):
            return
        live = self.live.get(deployment)
        if live is None:
            return
        served: list[_Served] = tags
        latencies = batch.at - np.asarray(batch.submitted)
        self._account(deployment, slot, served, latencies)
        if self.predlog is not None:
            self._log_batch(live, slot, served, batch, latencies)

    def _account(
        self, deployment: str, slot: ModelSlot, served: list[_Served], seconds: np.ndarray
    ) -> None:
        """Breaker and request metrics for a batch's requests (shadow copies excluded:
        they answer no one, and ``_shadow`` counts them as such)."""
        answered = [i for i, t in enumerate(served) if not t.shadow]
        if not answered:
            return
        slot.breaker.record_success(len(answered))
        self._report_breaker(deployment, slot)
        arm = served[answered[0]].arm
        if len(answered) == len(served) and all(t.arm == arm for t in served):
            self.metrics.observe_answered(deployment, slot.ref, arm, seconds)
        else:
            for i in answered:  # mixed arms (a version pinned on two): rare, per request
                t = served[i]
                self.metrics.observe_answered(deployment, slot.ref, t.arm, seconds[i : i + 1])
        for i in answered:
            served[i].accounted = True

    def _log_batch(
        self,
        live: Live,
        slot: ModelSlot,
        served: list[_Served],
        batch: Answered,
        latencies: np.ndarray,
    ) -> None:
        predlog = self.predlog
        assert predlog is not None
        deployment = live.spec.name
        try:
            answered = AnsweredRequests(
                deployment=deployment,
                model=slot.ref,
                version=slot.version.version,
                request_ids=[t.request_id for t in served],
                arms=[t.arm for t in served],
                shadows=[t.shadow for t in served],
                counts=batch.counts,
                inputs=_logged_inputs(live, slot, slot.ref, None, batch.inputs),
                outputs=np.asarray(batch.outputs),
                latency_ms=latencies * 1000.0,
                at=time.time_ns() // 1000,
                entities=_joined_entities(served, batch.counts),
            )
            rows = predlog.try_append_requests(answered)
        except InvalidInput as exc:  # refused as each request would be: said once
            log.error("%s: %d requests not logged: %s", deployment, len(served), exc)
            rows = 0
        if rows is None:  # no room: each request awaits room on its own
            return
        for t in served:
            t.logged = True
        if rows:
            self.metrics.count_logged(deployment, rows)

    def _report_breaker(self, deployment: str, slot: ModelSlot) -> None:
        """Sets the breaker gauge when the state changed, not on every request."""
        state = slot.breaker.state
        key = (deployment, slot.ref)
        if self._breakers.get(key) != state:
            self._breakers[key] = state
            self.metrics.set_breaker(deployment, slot.ref, state)

    def _observe_batch(self, ref: str, size: int, seconds: float) -> None:
        self.metrics.observe_batch(ref.partition("/")[0], ref, size)

    # -- guards ---------------------------------------------------------------------------------

    async def _judge_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.judge_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("judging rollout guards failed")

    async def judge_once(self) -> None:
        for live in list(self.live.values()):
            traffic = live.spec.traffic
            if traffic.guard is None or not live.judged:
                continue
            champion, challenger = live.stats["champion"], live.stats["challenger"]
            if self._board is not None:
                champion, challenger = await asyncio.to_thread(
                    self._board.exchange, live.spec.name, live.spec.revision, live.stats
                )
            verdict = judge(traffic.guard, champion, challenger, live.started, time.time())
            if verdict.action == "rollback":
                await asyncio.to_thread(
                    deployments_api.rollback,
                    live.spec.name,
                    reason="; ".join(verdict.reasons),
                    breach=True,
                    expected_revision=live.spec.revision,
                    client=self._client,
                )
            elif verdict.action == "promote":
                await asyncio.to_thread(
                    deployments_api.promote,
                    live.spec.name,
                    reason="; ".join(verdict.reasons) or "guard passed",
                    expected_revision=live.spec.revision,
                    client=self._client,
                )


def _online_name(source: str, online: Mapping[str, Any]) -> str:
    """The response column of ``view:feature``: its short name, or ``view__feature``."""
    if source in online:
        return source
    view, _, feature = source.partition(":")
    return feature if feature in online else f"{view}__{feature}"


def _key_column(values: Any) -> np.ndarray:
    """One entity key's values, as the request gave them, as a column for the log: O(1)
    numpy calls. Integers are int64 and text is text; keys beyond int64 are text."""
    if isinstance(values, np.ndarray):
        return values
    column = np.asarray(values)
    if column.dtype.kind not in "iuU":  # a key beyond int64 (numpy keeps it as an object)
        column = np.asarray([str(v) for v in values])
    return column


def _joined_entities(
    served: Sequence[_Served], counts: Sequence[int]
) -> dict[str, np.ndarray] | None:
    """The entity keys of a batch's requests, one column per key across the batch.

    None when no request carries any. A request without them (a v2 request in the same
    batch) gets nulls; requests that gave one key as integers and others as text are
    joined as objects (the log writes them as text).
    """
    first = next((t.entities for t in served if t.entities is not None), None)
    if first is None:
        return None
    if len(served) == 1:
        return dict(first)
    out: dict[str, np.ndarray] = {}
    for key in first:
        parts = []
        for t, n in zip(served, counts, strict=True):
            column = t.entities.get(key) if t.entities is not None else None
            parts.append(column if column is not None else np.full(n, None, dtype=object))
        try:
            out[key] = np.concatenate(parts)
        except (TypeError, ValueError):  # int64 beside text: no common numpy type
            out[key] = np.concatenate([p.astype(object) for p in parts])
    return out


def _plain_list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _rows(data: np.ndarray | Mapping[str, np.ndarray]) -> int:
    if isinstance(data, np.ndarray):
        return int(data.shape[0])
    return len(next(iter(data.values()))) if data else 0


def _check_rows(data: np.ndarray | Mapping[str, np.ndarray]) -> None:
    """Refuse (400) input no batch can hold: no rows, or columns of different lengths.

    Checked before the request reaches its model, so that a client's mistake is never
    counted as the model's failure (circuit breaker, guard, error metrics) and never
    fails a batch other clients' requests are in.
    """
    if isinstance(data, np.ndarray):
        if data.ndim == 0 or data.shape[0] == 0:
            raise InvalidInput(f"the request has no rows (input of shape {data.shape})")
        return
    lengths = {len(values) for values in data.values()}
    if not lengths or 0 in lengths:
        raise InvalidInput("the request has no rows; send at least one")
    if len(lengths) > 1:
        raise InvalidInput(
            "the request's inputs have different numbers of rows: "
            + ", ".join(f"{name}={len(values)}" for name, values in data.items())
        )


def _scores(outputs: Any) -> np.ndarray | None:
    """One number per row for drift checks: the last column of class probabilities."""
    if outputs is None:
        return None
    arr = np.asarray(outputs)
    if arr.dtype.kind not in "fiub":
        return None
    return arr[:, -1] if arr.ndim == 2 else arr.reshape(-1)


def _logged_inputs(
    live: Live,
    routed: ModelSlot,
    ref: str,
    features: Mapping[str, Any] | None,
    data: np.ndarray | Mapping[str, np.ndarray],
) -> BatchInputs:
    """A request's model input for the prediction log: O(inputs) work, no copies."""
    if not isinstance(data, np.ndarray):
        if features is None or len(features) == len(data):
            return data
        return {n: v if isinstance(v, np.ndarray) else np.asarray(v) for n, v in features.items()}
    matrix = data if data.ndim == 2 else data.reshape(data.shape[0], -1)
    width = matrix.shape[1]
    if features is not None and len(features) == width:
        return tuple(features), matrix  # the native path: the plan's names, in order
    # v2 and MLflow: the matrix is in the signature order of the model that answered
    # (the routed one for a fallback's answer: the champion's, or the challenger's).
    if routed.ref == ref and len(routed.layout.names) == width:
        return routed.layout.names, matrix  # the routed model answered: the common case
    slots = (live.champion, live.challenger, live.fallback)
    for slot in (*(s for s in slots if s is not None and s.ref == ref), live.champion):
        if len(slot.layout.names) == width:
            return slot.layout.names, matrix
    return tuple(f"input_{j}" for j in range(width)), matrix
