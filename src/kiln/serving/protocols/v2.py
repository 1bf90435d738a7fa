"""The Open Inference Protocol v2 over REST (KServe, Triton): tensors in, tensors out.

A request names input tensors with a ``shape``, a ``datatype`` and row-major ``data``
(flat or nested exactly as ``shape``; its element count is the product of ``shape``). A
model with a *columns* signature of k columns takes either

- one tensor of shape ``[n, k]``, columns in signature order (any name), or
- one tensor per column, named as the column, of shape ``[n]`` or ``[n, 1]``;

a *tensor* signature takes one tensor of shape ``[n, ...]`` matching its trailing
dimensions. :func:`decode_infer_request` returns a 2-D array in signature order when
every column shares one numeric dtype (nothing is split and restacked on the hot path)
and a dict of columns otherwise. Float columns take FP16/FP32/FP64 and integer data,
integer columns integer data and float data of whole numbers (below 2**53), each column
cast on its own, so one FP64 ``[n, k]`` tensor feeds mixed int and float columns; bool
columns take BOOL, string and datetime columns BYTES. A value that does not fit is a 400
naming the column, the row and the value.

Triton's binary tensor extension is read and written too, so ``tritonclient.http`` works
with its defaults: a request whose JSON is followed by raw tensor bytes says how long
its JSON part is in the ``Inference-Header-Content-Length`` header (pass it as
``header_length``) and gives each binary input ``parameters.binary_data_size``. When the
request asks for binary output (``InferRequest.binary_output``), answer with
:func:`encode_infer_response_binary` and set that header from the length it returns.

The work is split by job: datatypes (:mod:`._v2_datatypes`), request decoding
(:mod:`._v2_decode`), reading tensors (:mod:`._v2_tensors`), laying them out in
signature order (:mod:`._v2_layout`), the binary extension (:mod:`._v2_binary`) and
responses (:mod:`._v2_encode`); this module is the protocol's public face and its
metadata answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kiln.registry.signature import Signature
from kiln.serving.protocols._v2_binary import HEADER_LENGTH
from kiln.serving.protocols._v2_datatypes import (
    DATATYPES,
    OUTPUT_NAME,
    TENSOR_NAME,
    accepted_datatypes,
    datatype_of,
    output_names,
)
from kiln.serving.protocols._v2_decode import InferRequest, decode_infer_request
from kiln.serving.protocols._v2_encode import (
    encode_infer_response,
    encode_infer_response_binary,
)

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "accepted_datatypes",
    "datatype_of",
    "decode_infer_request",
    "encode_infer_response",
    "encode_infer_response_binary",
    "model_metadata",
    "output_names",
    "server_metadata",
]


def server_metadata(version: str, name: str = "kiln") -> dict[str, Any]:
    """The ``GET /v2`` answer."""
    return {"name": name, "version": version, "extensions": ["binary_tensor_data"]}


def model_metadata(
    name: str, versions: Sequence[str | int], signature: Signature, *, platform: str = "kiln"
) -> dict[str, Any]:
    """The ``GET /v2/models/{name}[/versions/{v}]`` answer.

    Columns are listed one tensor per column of shape ``[-1]`` (a single ``[-1, k]``
    tensor in signature order is accepted too); a tensor signature as one tensor.
    """
    inputs: list[dict[str, Any]]
    if signature.input_kind == "tensor":
        spec = signature.inputs[0]
        inputs = [
            {
                "name": spec.name or TENSOR_NAME,
                "datatype": datatype_of(spec.dtype),
                "shape": list(spec.shape or (-1,)),
            }
        ]
    else:
        inputs = [
            {"name": s.name, "datatype": datatype_of(s.dtype), "shape": [-1]}
            for s in signature.inputs
        ]
    outputs = [
        {
            "name": s.name or OUTPUT_NAME,
            "datatype": datatype_of(s.dtype),
            "shape": list(s.shape or (-1,)),
        }
        for s in signature.outputs
    ]
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }
