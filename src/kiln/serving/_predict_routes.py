"""The three POST routes that carry predictions, as one plain ASGI app.

Every request of the hot path goes through here: the path is matched by splitting it
(no regular expressions, no routing table walk), the body is read with its size bounded,
and the answer is sent as two ASGI messages. Starlette's request, response and
middleware objects cost more per call than a small model's prediction, so these routes
bypass them; everything else (health, metadata, metrics, the OpenAPI document) is the
Starlette app this one wraps, as middleware wraps an app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson

from kiln.serving._runtime import Answer, Runtime
from kiln.serving.protocols import ProtocolError, check_size, mlflow, native, v2

__all__ = ["PredictionRoutes", "Reply", "Route"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]
Reply = tuple[int, bytes, bytes, Headers]  # status, body, type, headers
Failure = Callable[[BaseException], tuple[int, str, dict[str, str]]]
Handler = Callable[..., Awaitable[Reply]]  # (deployment, version, headers, body)
Route = tuple[Handler, str | None, str | None]  # handler, deployment, version

JSON = b"application/json"


class PredictionRoutes:
    """``/v2/models/{name}[/versions/{v}]/infer``, ``/invocations`` and native predict."""

    def __init__(
        self, runtime: Runtime, app: ASGIApp, failure: Failure, default: str | None = None
    ) -> None:
        self.runtime = runtime
        self.app = app
        self.failure = failure
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route = self.match(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        handler, name, _ = route
        headers = dict(scope["headers"])
        try:
            first = await receive()
            if first["type"] == "http.request" and not first.get("more_body", False):
                body = first.get("body", b"")  # the whole body in one message: most are
            else:
                body = await self._body(first, receive, headers.get(b"content-length"), name)
        except Exception as exc:
            reply = self._refused(handler, name, exc)
        else:
            reply = await self.reply(route, headers, body)
        status, payload, media, more = reply
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", media),
                    (b"content-length", b"%d" % len(payload)),
                    *more,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def reply(
        self, route: Route, headers: dict[bytes, bytes], body: bytes, *, sized: bool = False
    ) -> Reply:
        """The answer to a prediction request whose whole body has been read: a refusal
        (4xx, or 5xx when the model fails) as well as a prediction, never an exception.

        Both ways in share it: the ASGI app above and uvicorn's protocol answering these
        routes without ASGI (:mod:`kiln.serving._http_protocol`), which passes ``sized``
        once it has held the declared Content-Length to the limit (the parser holds the
        body to the Content-Length).
        """
        handler, name, version = route
        try:
            if not sized:
                self._check_size(len(body), headers.get(b"content-length"), name)
            return await handler(name, version, headers, body)
        except Exception as exc:
            return self._refused(handler, name, exc)

    def _refused(self, handler: Handler, name: str | None, exc: BaseException) -> Reply:
        status, message, extra = self.failure(exc)
        if status < 500:
            self._count_invalid(name)
        return (
            status,
            mlflow.error_body(status, message)  # MLflow's clients parse its shape
            if handler == self._invocations
            else orjson.dumps({"error": message}),
            JSON,
            tuple((k.encode(), v.encode()) for k, v in extra.items()),
        )

    def limit(self, name: str | None) -> int:
        """The most body bytes a request for deployment ``name`` may send."""
        live = self.runtime.live
        if name is not None and name in live:
            return live[name].spec.max_body_bytes
        return max((d.spec.max_body_bytes for d in live.values()), default=8 << 20)

    def match(self, path: str) -> Route | None:
        """The handler, deployment and version a prediction path names; None for others.

        The path is split, not matched against patterns: this runs on every request."""
        parts = path.split("/")
        n = len(parts)
        if n == 5 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "infer":
            return self._infer, parts[3], None
        if (
            n == 7
            and parts[1] == "v2"
            and parts[2] == "models"
            and parts[4] == "versions"
            and parts[6] == "infer"
        ):
            return self._infer, parts[3], parts[5]
        if n == 2 and parts[1] == "invocations":
            return self._invocations, None, None
        if n == 4 and parts[1] == "deployments" and parts[3] == "predict":
            return self._predict, parts[2], None
        return None

    def _count_invalid(self, name: str | None) -> None:
        """A refused request counts for a served deployment only (no label per typo)."""
        if name is None:
            served = self.runtime.served
            name = self.default if self.default is not None or len(served) != 1 else served[0]
        if name is not None and name in self.runtime.live:
            self.runtime.metrics.count_invalid(name)

    def _check_size(self, size: int, declared: bytes | None, name: str | None) -> int:
        """Refuse (413) a body over the deployment's limit, as declared or as read."""
        limit = self.limit(name)
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise ProtocolError(f"Content-Length {declared!r} is not a number") from None
            check_size(length, limit)
        check_size(size, limit)
        return limit

    async def _body(
        self, first: Message, receive: Receive, declared: bytes | None, name: str | None
    ) -> bytes:
        """The body of a request sent in several messages (``first`` already received)."""
        limit = self._check_size(0, declared, name)
        chunks: list[bytes] = []
        total = 0
        message = first
        while True:
            if message["type"] == "http.disconnect":
                raise ProtocolError("the client disconnected before sending the body")
            chunk = message.get("body", b"")
            total += len(chunk)
            check_size(total, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- Open Inference Protocol v2 ------------------------------------------------------------

    async def _infer(
        self, name: str, version: str | None, headers: dict[bytes, bytes], body: bytes
    ) -> Reply:
        number = None
        if version is not None:
            if not version.isdigit():
                raise ProtocolError(f"model version must be a positive integer; got {version!r}")
            number = int(version)
        live = self.runtime.get(name)
        slot = live.champion if number is None else live.slot_for_version(number)[0]
        header = headers.get(b"inference-header-content-length")
        decoded = v2.decode_infer_request(
            body, slot.loaded.signature, header_length=header.decode() if header else None
        )
        answer = await self.runtime.infer(
            name, decoded.inputs, version=number, key=decoded.id, request_id=decoded.id
        )
        extra = _served_headers(answer)
        outputs = np.asarray(answer.outputs)
        if decoded.binary_output:
            payload, head = v2.encode_infer_response_binary(
                name, str(answer.version), answer.request_id, outputs
            )
            extra = (*extra, (b"inference-header-content-length", b"%d" % head))
            return 200, payload, b"application/octet-stream", extra
        payload = v2.encode_infer_response(name, str(answer.version), answer.request_id, outputs)
        return 200, payload, JSON, extra

    # -- MLflow scoring protocol -------------------------------------------------------------

    async def _invocations(
        self, _name: str | None, _version: str | None, headers: dict[bytes, bytes], body: bytes
    ) -> Reply:
        name = self.default
        if name is None:
            served = self.runtime.served  # not-ready ones too: the choice must not flip
            if len(served) != 1:
                raise ProtocolError(
                    "/invocations needs one deployment: this server has "
                    f"{', '.join(sorted(served)) or 'none'}; start it with --default NAME"
                )
            name = served[0]
        deployment = self.runtime.get(name)
        content_type = headers.get(b"content-type", JSON).decode("latin-1")
        data = mlflow.decode_invocation(body, content_type, deployment.champion.loaded.signature)
        answer = await self.runtime.infer(name, data)
        return 200, mlflow.encode_predictions(answer.outputs), JSON, _served_headers(answer)

    # -- Kiln native ---------------------------------------------------------------------------

    async def _predict(
        self, name: str, _version: str | None, _headers: dict[bytes, bytes], body: bytes
    ) -> Reply:
        live = self.runtime.get(name)
        req = native.decode_predict(body, live.entity_keys, live.request_fields)
        answer, served = await self.runtime.predict(
            name, req.lookup_rows(), req.rows, request_id=req.request_id
        )
        payload = native.encode_predict_response(
            answer.outputs,
            answer.ref,
            answer.version,
            answer.request_id,
            answer.arm,
            answer.fallback,
            served if req.return_features else None,
        )
        return 200, payload, JSON, _served_headers(answer)


_SERVED: dict[tuple[str, str, bool], Headers] = {}  # made once per version and arm


def _served_headers(answer: Answer) -> Headers:
    """Which model version (and arm) answered, on every successful prediction."""
    key = (answer.ref, answer.arm, answer.fallback)
    extra = _SERVED.get(key)
    if extra is None:
        extra = ((b"kiln-model-version", key[0].encode()), (b"kiln-arm", key[1].encode()))
        if answer.fallback:
            extra = (*extra, (b"kiln-fallback", b"true"))
        if len(_SERVED) < 4096:  # versions come and go; the table never grows unbounded
            _SERVED[key] = extra
    return extra
