"""Decoding an ``/infer`` request: the request object, its parameters and outputs.

The body's JSON part is checked field by field (``id``, ``parameters``, ``inputs``,
``outputs``); the input tensors are read by :mod:`._v2_tensors` and laid out in
signature order by :mod:`._v2_layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from kiln.registry.signature import Signature
from kiln.serving.protocols._columns import Columns, describe, has_bools, join
from kiln.serving.protocols._json import ProtocolError, loads
from kiln.serving.protocols._v2_binary import HEADER_LENGTH, split_body
from kiln.serving.protocols._v2_datatypes import output_names
from kiln.serving.protocols._v2_layout import as_columns, as_tensor, plain_matrix
from kiln.serving.protocols._v2_tensors import Tensors, parameters

__all__ = ["InferRequest", "decode_infer_request"]

_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
_REQUEST_KEY_SET = frozenset(_REQUEST_KEYS)


class InferRequest(NamedTuple):
    """A decoded inference request: ``id`` (or None), the model input, ``parameters``.

    ``inputs`` is a 2-D array in signature order or a dict of columns (see
    :mod:`._v2_layout`). ``parameters`` holds the request's parameters with
    ``binary_data_output`` set to whether the output is wanted as binary data, per
    Triton's rule (an output's own ``binary_data`` wins over the request's).
    """

    id: str | None
    inputs: np.ndarray | Columns
    parameters: dict[str, Any]

    @property
    def binary_output(self) -> bool:
        return self.parameters.get("binary_data_output") is True

    @property
    def rows(self) -> int:
        if isinstance(self.inputs, np.ndarray):
            return int(self.inputs.shape[0])
        return len(next(iter(self.inputs.values()))) if self.inputs else 0


def decode_infer_request(
    body: bytes,
    signature: Signature,
    *,
    header_length: int | str | None = None,
    outputs: Sequence[str] | None = None,
) -> InferRequest:
    """Decode an ``/infer`` body into the model's input, or raise ProtocolError (400).

    ``header_length`` is the ``Inference-Header-Content-Length`` header when the request
    has one (binary tensor data follows the JSON); ``outputs`` are the output names a
    request may ask for (default: :func:`output_names`).
    """
    json_part, binary = split_body(body, header_length)
    try:
        doc = loads(json_part, "inference request body")
    except ProtocolError:
        if binary is None and b'"binary_data_size"' in body:
            raise ProtocolError(
                "the body holds binary tensor data (binary_data_size) but no "
                f"{HEADER_LENGTH} header says where its JSON part ends"
            ) from None
        raise
    if not isinstance(doc, dict):
        raise ProtocolError(
            f"inference request body must be a JSON object with 'inputs'; got {describe(doc)}"
        )
    if not doc.keys() <= _REQUEST_KEY_SET:
        extra = next(k for k in doc if k not in _REQUEST_KEY_SET)
        raise ProtocolError(
            f"unexpected field {extra!r} in the inference request; allowed: "
            f"{', '.join(_REQUEST_KEYS)}"
        )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"'id' must be a string; got {describe(request_id)}")
    params = parameters(doc.get("parameters"), "parameters")
    binary_out = params.get("binary_data_output")
    if binary_out is not None and not isinstance(binary_out, bool):
        raise ProtocolError(
            f"parameters.binary_data_output must be true or false; got {describe(binary_out)}"
        )
    requested = doc.get("outputs")
    if requested is not None:
        wanted = _requested_outputs(requested, outputs or output_names(signature))
        if wanted is not None:
            params = {**params, "binary_data_output": wanted}
    raw = doc.get("inputs")
    if raw is None:
        raise ProtocolError(
            "the inference request has no 'inputs'; send "
            '{"inputs": [{"name", "shape", "datatype", "data"}, ...]}'
        )
    if not isinstance(raw, list) or not raw:
        raise ProtocolError(f"'inputs' must be a non-empty list of tensors; got {describe(raw)}")
    data: np.ndarray | Columns | None = None
    if binary is None:
        data = plain_matrix(raw, signature, json_part)
    if data is None:
        tensors = Tensors(raw, binary, has_bools(json_part))
        if signature.input_kind == "tensor":
            data = as_tensor(tensors, signature)
        else:
            data = as_columns(tensors, signature)
        tensors.finish()
    return InferRequest(request_id, data, params)


def _requested_outputs(value: Any, names: Sequence[str]) -> bool | None:
    """Check requested outputs; the binary_data choice one of them makes, if any."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError(
            f"'outputs' must be a list of {{\"name\"}} objects; got {describe(value)}"
        )
    choice: bool | None = None
    for i, out in enumerate(value):
        where = f"outputs[{i}]"
        if not isinstance(out, dict):
            raise ProtocolError(f"{where} must be an object with a 'name'; got {describe(out)}")
        for key in out:
            if key not in ("name", "parameters"):
                raise ProtocolError(
                    f"unexpected field {key!r} in {where}; allowed: name, parameters"
                )
        name = out.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"{where}.name must be a string; got {describe(name)}")
        if name not in names:
            raise ProtocolError(
                f"{where}.name: unknown output {name!r}; this model's outputs: {join(names)}"
            )
        params = parameters(out.get("parameters"), f"{where}.parameters")
        for key, v in params.items():
            if key != "binary_data":
                raise ProtocolError(
                    f"{where}.parameters.{key} is not supported by this server; "
                    "supported: binary_data"
                )
            if not isinstance(v, bool):
                raise ProtocolError(
                    f"{where}.parameters.binary_data must be true or false; got {describe(v)}"
                )
            choice = v
    return choice
