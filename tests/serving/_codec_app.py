"""A small Starlette app over the protocol codecs, for driving them with real clients.

It is no serving app (no batching, no rollouts): each route decodes with a codec, runs a
stand-in model (the row sums of the signature-enforced input) and encodes the answer, so
tritonclient and schemathesis exercise exactly the wire formats.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kiln.registry.signature import ColumnSpec, Signature, enforce
from kiln.serving.protocols import ProtocolError, check_size, mlflow, native, openapi, v2
from kiln.serving.protocols._json import dumps

LIMIT = 64 * 1024


@dataclass(frozen=True)
class Served:
    name: str
    signature: Signature
    entity_keys: tuple[str, ...] = ()
    request_fields: tuple[ColumnSpec, ...] = ()
    versions: tuple[str, ...] = ("1", "2")
    info: dict[str, Any] = field(default_factory=dict)


def predict(signature: Signature, data: Any) -> np.ndarray:
    """Row sums of the numeric inputs (0 for a row of text), after ``enforce``."""
    batch = enforce(signature, data)
    with np.errstate(over="ignore", invalid="ignore"):  # huge fuzzed values may overflow
        if batch.matrix is not None:
            m = batch.matrix.reshape(len(batch), -1)
            return np.nan_to_num(m.astype(np.float64).sum(axis=1))
        assert batch.columns is not None
        out = np.zeros(len(batch))
        for col in batch.columns.values():
            arr = np.asarray(col)
            if arr.dtype.kind in "fiub":
                out += np.nan_to_num(arr.astype(np.float64))
        return np.nan_to_num(out)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def make_app(deployments: Sequence[Served], *, default: str | None = None) -> Starlette:
    by_name = {d.name: d for d in deployments}
    doc = openapi.openapi_document(
        [
            {
                "name": d.name,
                "signature": d.signature,
                "entity_keys": d.entity_keys,
                "request_fields": d.request_fields,
                "versions": d.versions,
                "max_body_bytes": LIMIT,
            }
            for d in deployments
        ],
        "0.1.0",
        default=default,
    )
    fallback = default or (deployments[0].name if len(deployments) == 1 else None)

    def served(request: Request) -> Served | Response:
        d = by_name.get(request.path_params["model_name"])
        if d is None:
            return _error(f"unknown model {request.path_params['model_name']!r}", 404)
        version = request.path_params.get("model_version")
        if version is not None and version not in d.versions:
            return _error(f"unknown version {version!r}", 404)
        return d

    async def body_of(request: Request) -> bytes:
        body = await request.body()
        check_size(len(body), LIMIT)
        return body

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        return _json({"ready": True})

    async def server_meta(request: Request) -> Response:
        return _json(v2.server_metadata("0.1.0"))

    async def model_meta(request: Request) -> Response:
        d = served(request)
        if isinstance(d, Response):
            return d
        return _json(v2.model_metadata(d.name, d.versions, d.signature, platform="test"))

    async def model_ready(request: Request) -> Response:
        d = served(request)
        if isinstance(d, Response):
            return d
        return _json({"name": d.name, "ready": True})

    async def infer(request: Request) -> Response:
        d = served(request)
        if isinstance(d, Response):
            return d
        try:
            body = await body_of(request)
            req = v2.decode_infer_request(
                body, d.signature, header_length=request.headers.get(v2.HEADER_LENGTH)
            )
            out = predict(d.signature, req.inputs)
            version = request.path_params.get("model_version", d.versions[-1])
            if req.binary_output:
                payload, n = v2.encode_infer_response_binary(d.name, version, req.id, out)
                return Response(
                    payload,
                    media_type="application/octet-stream",
                    headers={v2.HEADER_LENGTH: str(n)},
                )
            return Response(
                v2.encode_infer_response(d.name, version, req.id, out),
                media_type="application/json",
            )
        except ProtocolError as exc:
            return Response(exc.body(), status_code=exc.status, media_type="application/json")

    def mlflow_error(message: str, status: int) -> Response:
        return Response(
            mlflow.error_body(status, message), status_code=status, media_type="application/json"
        )

    async def invocations(request: Request) -> Response:
        if fallback is None:
            return mlflow_error("no default deployment", 404)
        d = by_name[fallback]
        try:
            body = await body_of(request)
            data = mlflow.decode_invocation(body, request.headers.get("content-type"), d.signature)
            return Response(
                mlflow.encode_predictions(predict(d.signature, data)),
                media_type="application/json",
            )
        except ProtocolError as exc:
            return mlflow_error(exc.message, exc.status)

    async def predict_native(request: Request) -> Response:
        d = by_name.get(request.path_params["name"])
        if d is None:
            return _error("unknown deployment", 404)
        try:
            body = await body_of(request)
            req = native.decode_predict(body, d.entity_keys, d.request_fields)
            out = np.zeros(req.rows)
            with np.errstate(over="ignore", invalid="ignore"):
                for col in req.request.values():
                    if col.dtype.kind in "fiub":
                        out = np.nan_to_num(out + np.nan_to_num(col.astype(np.float64)))
            return Response(
                native.encode_predict_response(
                    out,
                    f"{d.name}@champion",
                    2,
                    req.request_id or "generated",
                    "champion",
                    False,
                    req.request,
                ),
                media_type="application/json",
            )
        except ProtocolError as exc:
            return Response(exc.body(), status_code=exc.status, media_type="application/json")

    async def ping(request: Request) -> Response:
        return Response(status_code=200)

    async def version(request: Request) -> Response:
        return PlainTextResponse("0.1.0")

    async def metrics(request: Request) -> Response:
        return PlainTextResponse("# no metrics\n")

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(doc)

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_meta),
        Route("/v2/models/{model_name}", model_meta),
        Route("/v2/models/{model_name}/ready", model_ready),
        Route("/v2/models/{model_name}/versions/{model_version}", model_meta),
        Route("/v2/models/{model_name}/versions/{model_version}/ready", model_ready),
        Route("/v2/models/{model_name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model_name}/versions/{model_version}/infer", infer, methods=["POST"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping),
        Route("/health", ping),
        Route("/version", version),
        Route("/deployments/{name}/predict", predict_native, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi_json),
    ]
    return Starlette(routes=routes)


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 in a thread; yield ``host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", http="h11", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
