"""JSON in and out of the wire formats, and the one error every codec raises.

:class:`ProtocolError` carries the HTTP status a server answers with (400 unless said
otherwise: 413 for a body over the limit, 415 for a content type no codec reads) and a
message naming the offending field; :meth:`ProtocolError.body` is the ``{"error": ...}``
document all three protocols answer with.
"""

from __future__ import annotations

from typing import Any

import orjson

from kiln.core import InvalidInput

__all__ = ["ProtocolError", "check_size", "dumps", "error_body", "loads"]

_DUMPS = orjson.OPT_SERIALIZE_NUMPY


class ProtocolError(InvalidInput):
    """A request a protocol codec cannot accept; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self) -> bytes:
        """The response body: ``{"error": message}``."""
        return error_body(self.message)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def dumps(obj: Any) -> bytes:
    """``obj`` as JSON bytes; numpy arrays and scalars serialize natively."""
    return orjson.dumps(obj, option=_DUMPS)


def check_size(size: int, limit: int) -> None:
    """Raise a 413 ProtocolError when a body of ``size`` bytes is over ``limit``."""
    if size > limit:
        raise ProtocolError(
            f"request body is {size} bytes, over this deployment's limit of {limit} bytes "
            "(max_body_bytes); send fewer rows per request",
            status=413,
        )


def loads(body: bytes | bytearray | memoryview | str, what: str) -> Any:
    """Parse ``body`` as JSON, or raise a ProtocolError saying where and why it is not."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(_parse_message(body, exc, what)) from None


def _parse_message(
    body: bytes | bytearray | memoryview | str, exc: orjson.JSONDecodeError, what: str
) -> str:
    raw = bytes(body) if not isinstance(body, str) else body.encode("utf-8", "replace")
    if not raw.strip():
        return f"{what} is empty; send a JSON object"
    pos = exc.pos
    if raw[pos : pos + 9].lstrip(b"-+").startswith((b"NaN", b"Infinity")):
        return (
            f"{what} is not valid JSON at character {pos}: NaN and Infinity are not JSON "
            "numbers; send finite numbers (null marks a missing value where a column allows it)"
        )
    if "infinity when parsed as double" in exc.msg:
        return (
            f"{what} is not valid JSON at character {pos}: a number is too large for a "
            "64-bit float; send finite numbers"
        )
    return f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
