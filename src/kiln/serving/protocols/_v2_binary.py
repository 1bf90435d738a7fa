"""Triton's binary tensor extension: raw tensor bytes after the JSON part of a body.

A request (or response) whose JSON is followed by binary data says how long the JSON
part is in the ``Inference-Header-Content-Length`` header, and each binary tensor gives
its ``parameters.binary_data_size``; the chunks follow in the order of the tensors.
Numbers are little-endian; a BYTES element is a 4-byte little-endian length followed
by that many UTF-8 bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.serving.protocols._json import ProtocolError
from kiln.serving.protocols._v2_datatypes import DATATYPES

__all__ = ["HEADER_LENGTH", "BinaryData", "pack", "split_body"]

HEADER_LENGTH = "Inference-Header-Content-Length"


def split_body(body: bytes, header_length: int | str | None) -> tuple[bytes, bytes | None]:
    """The JSON part of ``body`` and the binary data after it (None without the header)."""
    if header_length is None:
        return body, None
    try:
        n = int(header_length)
    except (TypeError, ValueError):
        n = -1
    if not 0 < n <= len(body):
        raise ProtocolError(
            f"the {HEADER_LENGTH} header must be the length of the JSON part of the body "
            f"(1 to {len(body)}); got {header_length!r}"
        )
    return body[:n], body[n:]


class BinaryData:
    """The binary data after a request's JSON, handed out to its tensors in order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(
        self, where: str, shape: list[int], datatype: str, size: Any, count: int
    ) -> np.ndarray:
        """The next ``size`` bytes as a tensor of ``shape`` (numbers widened as in JSON)."""
        if type(size) is not int or size < 0:
            raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer")
        chunk = self.data[self.offset : self.offset + size]
        if len(chunk) != size:
            raise ProtocolError(
                f"{where}: binary_data_size is {size} but only {len(chunk)} bytes remain "
                "after the JSON"
            )
        self.offset += size
        if datatype == "BYTES":
            return _unpack_bytes(chunk, shape, count, where)
        dtype = DATATYPES[datatype].newbyteorder("<")
        if size != count * dtype.itemsize:
            raise ProtocolError(
                f"{where}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes; "
                f"binary_data_size is {size}"
            )
        return np.frombuffer(chunk, dtype=dtype).reshape(shape).astype(DATATYPES[datatype])

    def finish(self) -> None:
        """Refuse bytes no tensor claimed."""
        if self.offset != len(self.data):
            raise ProtocolError(
                f"{len(self.data) - self.offset} bytes of binary data after the JSON belong "
                "to no input (check binary_data_size)"
            )


def _unpack_bytes(chunk: bytes, shape: list[int], count: int, where: str) -> np.ndarray:
    values: list[str] = []
    pos = 0
    try:
        while pos < len(chunk):
            n = int.from_bytes(chunk[pos : pos + 4], "little")
            if pos + 4 + n > len(chunk):
                raise ValueError("truncated")
            values.append(chunk[pos + 4 : pos + 4 + n].decode("utf-8"))
            pos += 4 + n
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(
            f"{where}: binary BYTES data must be 4-byte little-endian lengths each followed "
            "by that many UTF-8 bytes"
        ) from None
    if len(values) != count:
        raise ProtocolError(
            f"{where}: shape {shape} holds {count} elements but the binary data has {len(values)}"
        )
    out = np.empty(count, dtype=object)
    out[:] = values
    return out.reshape(shape)


def pack(arr: np.ndarray, texts: list[str] | None) -> bytes:
    """An output's binary data: ``texts`` (BYTES) length-prefixed, else ``arr``'s bytes."""
    if texts is not None:
        parts = []
        for text in texts:
            raw = text.encode("utf-8")
            parts.append(len(raw).to_bytes(4, "little") + raw)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
