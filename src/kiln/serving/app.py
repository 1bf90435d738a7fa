"""The ASGI app: three protocols over one runtime, composed Starlette-style.

The prediction routes (:mod:`kiln.serving._predict_routes`) read the body (bounded),
decode it with the protocol's codec, hand numpy to the runtime and encode the answer;
the Starlette app they wrap serves health, metadata, metrics and the OpenAPI document.
Every client mistake is a 4xx with ``{"error": ...}`` naming the field; an overloaded
model is a 503 with ``Retry-After``; nothing a client sends can produce a 500.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kiln._version import __version__
from kiln.core import InvalidInput, KilnError, NotFound
from kiln.serving._predict_routes import PredictionRoutes
from kiln.serving._runtime import Runtime, Unavailable
from kiln.serving.batching import Overloaded, PredictTimeout
from kiln.serving.protocols import ProtocolError, mlflow, openapi, v2

__all__ = ["create_app"]

log = logging.getLogger("kiln.serving")
JSON = "application/json"
_SWITCH_INTERVAL_S = 0.001  # while serving; see the lifespan
Handler = Callable[[Request], Awaitable[Response]]


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


def failure(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """Status, message and headers for an exception: only a server fault is a 500."""
    if isinstance(exc, ProtocolError):
        return exc.status, exc.message, {}
    if isinstance(exc, NotFound):
        return 404, str(exc), {}
    if isinstance(exc, InvalidInput):
        return 400, str(exc), {}
    if isinstance(exc, Overloaded | Unavailable):
        return 503, str(exc), {"retry-after": str(max(1, round(exc.retry_after_s)))}
    if isinstance(exc, PredictTimeout):
        return 504, str(exc) or "the model did not answer in time", {}
    log.error("request failed", exc_info=exc)
    if isinstance(exc, KilnError):
        return 500, f"{type(exc).__name__}: {exc}", {}
    return 500, f"internal error: {type(exc).__name__}", {}


def _guarded(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            status, message, headers = failure(exc)
            return _error(status, message, headers)

    return wrapped


def create_app(runtime: Runtime, *, default: str | None = None) -> PredictionRoutes:
    """The app serving ``runtime``'s deployments; ``default`` answers ``/invocations``."""

    # -- health ---------------------------------------------------------------------------

    async def live_(_: Request) -> Response:
        return _json({"live": True})

    async def ready_(_: Request) -> Response:
        """Ready while anything is served; every deployment is listed with its state, so a
        broken one shows here without taking the healthy ones out of a load balancer."""
        deployments: dict[str, dict[str, Any]] = {
            name: {"ready": True, "model": live.champion.ref} for name, live in runtime.live.items()
        }
        for name, reason in runtime.not_ready().items():
            deployments[name] = {"ready": False, "reason": reason}
        body = {"ready": runtime.ready, "deployments": deployments}
        return _json(body, 200 if runtime.ready else 503)

    async def server_meta(_: Request) -> Response:
        return _json(v2.server_metadata(__version__))

    async def ping(_: Request) -> Response:
        return Response(b"\n", status_code=200 if runtime.ready else 503)

    async def version_(_: Request) -> Response:
        return Response(__version__, media_type="text/plain")  # as MLflow's /version

    # -- model metadata (Open Inference Protocol v2) -----------------------------------------

    def _version(request: Request) -> int | None:
        raw = request.path_params.get("version")
        if raw is None:
            return None
        if not str(raw).isdigit():
            raise ProtocolError(f"model version must be a positive integer; got {raw!r}")
        return int(raw)

    async def model_meta(request: Request) -> Response:
        name = request.path_params["name"]
        live = runtime.get(name)
        slot, _ = live.slot_for_version(_version(request))
        versions = [str(s.version.version) for s in (live.champion, live.challenger) if s]
        return _json(v2.model_metadata(name, versions, slot.loaded.signature))

    async def model_ready(request: Request) -> Response:
        name = request.path_params["name"]
        version = _version(request)
        reason = runtime.not_ready().get(name)
        if reason is not None:
            return _json({"name": name, "ready": False, "reason": reason}, 503)
        live = runtime.get(name)
        live.slot_for_version(version)
        return _json({"name": live.spec.name, "ready": True})

    # -- operations -------------------------------------------------------------------------

    async def metrics(_: Request) -> Response:
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    async def openapi_json(_: Request) -> Response:
        infos = [
            openapi.DeploymentInfo(
                name=live.spec.name,
                signature=live.champion.loaded.signature,
                entity_keys=live.entity_keys,
                request_fields=live.request_fields,
                versions=[
                    s.version.version for s in (live.champion, live.challenger) if s is not None
                ],
                max_body_bytes=live.spec.max_body_bytes,
            )
            for live in runtime.live.values()
        ]
        return _json(openapi.openapi_document(infos, __version__, default=default))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        # Objects alive now (modules, models) live as long as the server: keeping them out
        # of the collector's scans keeps full collections short under load.
        gc.collect()
        gc.freeze()
        # Threads beside the event loop (the prediction log's writer, predict threads)
        # hold the GIL in bursts; Python hands it back to a waiting thread only every
        # switch interval (5 ms by default), so a request could wait that long behind a
        # log write. 1 ms cut single-row p99 at concurrency 8 by about a quarter in paired
        # runs of `kiln serve`, with no loss of throughput at concurrency 64.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, _SWITCH_INTERVAL_S))
        try:
            yield
        finally:
            sys.setswitchinterval(interval)
            gc.unfreeze()
            await runtime.stop()

    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, _guarded(handler), methods=methods)

    routes = [
        route("/v2/health/live", live_, ["GET"]),
        route("/v2/health/ready", ready_, ["GET"]),
        route("/v2", server_meta, ["GET"]),
        route("/v2/models/{name}", model_meta, ["GET"]),
        route("/v2/models/{name}/ready", model_ready, ["GET"]),
        route("/v2/models/{name}/versions/{version}", model_meta, ["GET"]),
        route("/v2/models/{name}/versions/{version}/ready", model_ready, ["GET"]),
        route("/ping", ping, ["GET"]),
        route("/health", ping, ["GET"]),
        route("/version", version_, ["GET"]),
        route("/metrics", metrics, ["GET"]),
        route("/openapi.json", openapi_json, ["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if request.url.path == "/invocations":  # only POST reaches the prediction routes
            message = f"{request.method} is not allowed on /invocations; use POST"
            body = mlflow.error_body(405, message)
            return Response(body, 405, headers={"allow": "POST"}, media_type=JSON)
        if status == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}")
        return _error(404, f"no route {request.url.path}; see /openapi.json")

    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_found)
    return PredictionRoutes(runtime, app, failure, default)
