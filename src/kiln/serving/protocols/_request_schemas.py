"""Request body schemas of the OpenAPI document, written from the codecs' column rules.

One schema per protocol and deployment: a body valid under it is one the codec accepts
(for one row; see :mod:`.openapi`), and its bounds are the codec's (integer ranges, float
ranges, the integers FP64 carries exactly).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.registry.signature import ColumnSpec, Signature
from kiln.serving.protocols import v2
from kiln.serving.protocols._columns import DATE_SCHEMA, family, number_schema, value_schema

__all__ = ["REF", "SCALAR", "input_parameters", "mlflow_request", "native_request", "v2_request"]

REF = "#/components/schemas/"
SCALAR = {"type": ["string", "number", "boolean"]}


def _documented_datatypes(spec: ColumnSpec) -> list[str]:
    natural = v2.datatype_of(spec.dtype)
    return [natural, "FP32"] if natural == "FP64" else [natural]


def _v2_item(spec: ColumnSpec) -> dict[str, Any]:
    """One element of a tensor for ``spec`` in its documented datatypes."""
    fam = family(spec)
    if fam == "datetime":
        return dict(DATE_SCHEMA)
    if fam == "text":
        return {"type": "string"}
    return number_schema(np.dtype(spec.dtype))


def input_parameters() -> dict[str, Any]:
    return {
        "type": ["object", "null"],
        "description": "Input parameters: scalars (shared memory is not supported)",
        "propertyNames": {
            "not": {
                "enum": [
                    "binary_data_size",
                    "shared_memory_region",
                    "shared_memory_byte_size",
                    "shared_memory_offset",
                ]
            }
        },
        "additionalProperties": SCALAR,
    }


def _tensor(
    name: Mapping[str, Any], shape: Mapping[str, Any], datatypes: list[str], data: Any
) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "additionalProperties": False,
        "properties": {
            "name": name,
            "shape": shape,
            "datatype": {"enum": datatypes},
            "parameters": {"$ref": REF + "V2InputParameters"},
            "data": data,
        },
    }


def _array(items: Mapping[str, Any], n: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": n, "maxItems": n}


def _v2_inputs(signature: Signature) -> dict[str, Any]:
    """The ``inputs`` of a one-row request: the forms :func:`v2.decode_infer_request` reads."""
    specs = signature.inputs
    if signature.input_kind == "tensor":
        spec = specs[0]
        shape = [1, *(max(d, 1) for d in (spec.shape or (-1,))[1:])]
        count = int(np.prod(shape))
        tensor = _tensor(
            {"type": "string"},
            {"const": shape},
            _documented_datatypes(spec),
            _array(_v2_item(spec), count),
        )
        return {**_array(tensor, 1), "description": "One tensor of the model's shape"}
    names = [s.name for s in specs if s.name is not None]
    per_column = []
    for spec in specs:
        item = _v2_item(spec)
        flat = _tensor(
            {"const": spec.name}, {"const": [1]}, _documented_datatypes(spec), _array(item, 1)
        )
        nested = _tensor(
            {"const": spec.name},
            {"const": [1, 1]},
            _documented_datatypes(spec),
            {"anyOf": [_array(item, 1), _array(_array(item, 1), 1)]},
        )
        per_column.append({"oneOf": [flat, nested]})
    by_column = {
        "type": "array",
        "description": "One tensor per column, named as the column, of shape [n] or [n, 1]",
        "prefixItems": per_column,
        "items": False,
        "minItems": len(per_column),
        "maxItems": len(per_column),
    }
    families = {family(s) for s in specs}
    if len({s.dtype for s in specs}) == 1 and not families & {"text", "datetime"}:
        datatypes = _documented_datatypes(specs[0])  # one dtype: its own datatypes
        items = [_v2_item(specs[0])] * len(specs)
    elif families <= {"float", "int", "uint"}:
        # mixed numbers travel as FP64, which holds integers exactly below 2**53
        datatypes = ["FP64"]
        items = [_exact_in_float64(_v2_item(s)) for s in specs]
    else:
        return by_column
    k = len(names)
    row = {"type": "array", "prefixItems": items, "items": False, "minItems": k, "maxItems": k}
    matrix = _tensor(
        {"type": "string", "description": "Any name"},
        {"const": [1, k]},
        datatypes,
        {"anyOf": [row, _array(row, 1)]},
    )
    one = {
        **_array(matrix, 1),
        "description": f"One [n, {k}] tensor of any name, columns in the order "
        f"{', '.join(names)}; float data for an integer column must be integral",
    }
    return {"anyOf": [one, by_column]}


_FLOAT64_EXACT = 2**53 - 1


def _exact_in_float64(item: dict[str, Any]) -> dict[str, Any]:
    """An integer item's bounds narrowed to the integers float64 holds exactly."""
    if item.get("type") != "integer":
        return item
    return {
        **item,
        "minimum": max(item["minimum"], -_FLOAT64_EXACT),
        "maximum": min(item["maximum"], _FLOAT64_EXACT),
    }


def v2_request(signature: Signature) -> dict[str, Any]:
    outputs = list(v2.output_names(signature))
    return {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": ["string", "null"]},
            "parameters": {
                "type": ["object", "null"],
                "properties": {
                    "binary_data_output": {
                        "type": "boolean",
                        "description": "Answer with the outputs as binary data (Triton)",
                    }
                },
                "additionalProperties": SCALAR,
            },
            "inputs": _v2_inputs(signature),
            "outputs": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"enum": outputs},
                        "parameters": {
                            "type": ["object", "null"],
                            "additionalProperties": False,
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                },
            },
        },
    }


def mlflow_request(signature: Signature) -> dict[str, Any]:
    def one_of(key: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [key],
            "additionalProperties": False,
            "properties": {key: schema},
        }

    if signature.input_kind == "tensor":
        spec = signature.inputs[0]
        row: dict[str, Any] = number_schema(np.dtype(spec.dtype))
        for d in reversed((spec.shape or (-1,))[1:]):
            row = _array(row, max(d, 1))
        rows = {"type": "array", "items": row, "minItems": 1}
        return {"oneOf": [one_of("inputs", rows), one_of("instances", rows)]}
    specs = signature.inputs
    names = [s.name for s in specs if s.name is not None]
    values = [value_schema(s, nullable=True) for s in specs]
    row = {
        "type": "array",
        "prefixItems": values,
        "items": False,
        "minItems": len(values),
        "maxItems": len(values),
    }
    record = {
        "type": "object",
        "required": names,
        "additionalProperties": False,
        "properties": dict(zip(names, values, strict=True)),
    }
    rows = {"type": "array", "items": row, "minItems": 1}
    records = {"type": "array", "items": record, "minItems": 1}
    one_row_columns = {
        "type": "object",
        "required": names,
        "additionalProperties": False,
        "properties": {n: _array(v, 1) for n, v in zip(names, values, strict=True)},
    }
    tf_forms = [rows, records]
    if len(names) == 1:
        tf_forms.append({"type": "array", "items": values[0], "minItems": 1})
    split = {
        "type": "object",
        "required": ["columns", "data"],
        "additionalProperties": False,
        "properties": {"columns": {"const": names}, "data": rows},
    }
    return {
        "oneOf": [
            one_of("dataframe_split", split),
            one_of("dataframe_records", records),
            one_of("instances", {"anyOf": tf_forms}),
            one_of("inputs", {"anyOf": [*tf_forms, record, one_row_columns]}),
        ]
    }


def native_request(info: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(info.get("entity_keys") or ())
    fields: list[ColumnSpec] = list(info.get("request_fields") or ())
    props: dict[str, Any] = {
        "request_id": {"type": ["string", "null"]},
        "return_features": {
            "type": "boolean",
            "description": "Answer with the feature values the model was given",
        },
    }
    required = []
    if keys:
        entity = {
            "type": "object",
            "required": keys,
            "additionalProperties": False,
            "properties": {k: {"type": ["string", "integer"]} for k in keys},
        }
        props["entities"] = {
            "description": "Entity keys of one row, or a list of them (one per row)",
            "anyOf": [entity, {"type": "array", "items": entity, "minItems": 1}],
        }
        required.append("entities")
    if fields:
        names = [f.name for f in fields if f.name is not None]
        props["request"] = {
            "description": "Request fields, used for every row (a list of objects with one "
            "per row is accepted when 'entities' is a list of the same length)",
            "type": "object",
            "required": names,
            "additionalProperties": False,
            "properties": {f.name: value_schema(f, nullable=True) for f in fields if f.name},
        }
        required.append("request")
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": props,
    }
