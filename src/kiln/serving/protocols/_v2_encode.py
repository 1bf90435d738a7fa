"""Inference responses: one output array as a JSON tensor or as Triton binary data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.serving.protocols._json import dumps
from kiln.serving.protocols._v2_binary import pack
from kiln.serving.protocols._v2_datatypes import OUTPUT_NAME, datatype_of

__all__ = ["encode_infer_response", "encode_infer_response_binary"]


_DATATYPES: dict[np.dtype[Any], str] = {}  # by output dtype: a model has one or two


def _output(outputs: Any) -> tuple[np.ndarray, str]:
    arr = np.asarray(outputs)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    datatype = _DATATYPES.get(arr.dtype)
    if datatype is None:
        datatype = datatype_of(arr.dtype)
        if len(_DATATYPES) < 256:  # structured dtypes are many; the table stays small
            _DATATYPES[arr.dtype] = datatype
    return arr, datatype


def _response_head(
    model_name: str,
    model_version: str | int | None,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
) -> dict[str, Any]:
    head: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        head["model_version"] = str(model_version)
    if request_id is not None:
        head["id"] = request_id
    if parameters:
        head["parameters"] = dict(parameters)
    return head


def _texts(arr: np.ndarray) -> list[str]:
    return [v if isinstance(v, str) else _text(v) for v in arr.ravel().tolist()]


def encode_infer_response(
    model_name: str,
    model_version: str | int | None,
    request_id: str | None,
    outputs: Any,
    output_name: str = OUTPUT_NAME,
    *,
    parameters: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON inference response for one output array (datatype from its dtype)."""
    arr, datatype = _output(outputs)
    if datatype == "BYTES":
        data: Any = _texts(arr)
    else:
        data = np.ascontiguousarray(arr).reshape(-1)
    head = _response_head(model_name, model_version, request_id, parameters)
    head["outputs"] = [
        {"name": output_name, "shape": list(arr.shape), "datatype": datatype, "data": data}
    ]
    return dumps(head)


def encode_infer_response_binary(
    model_name: str,
    model_version: str | int | None,
    request_id: str | None,
    outputs: Any,
    output_name: str = OUTPUT_NAME,
    *,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int]:
    """The response with the output as binary data: the body and its JSON part's length.

    Send the length as the ``Inference-Header-Content-Length`` header, with
    ``Content-Type: application/octet-stream``.
    """
    arr, datatype = _output(outputs)
    payload = pack(arr, _texts(arr) if datatype == "BYTES" else None)
    head = _response_head(model_name, model_version, request_id, parameters)
    head["outputs"] = [
        {
            "name": output_name,
            "shape": list(arr.shape),
            "datatype": datatype,
            "parameters": {"binary_data_size": len(payload)},
        }
    ]
    json_part = dumps(head)
    return json_part + payload, len(json_part)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
