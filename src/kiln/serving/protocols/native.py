"""Kiln's native predict: ``POST /deployments/{name}/predict`` with entity keys and request fields.

The body names the entities whose online features the server looks up and the request
fields the caller supplies, for one row or many::

    {"entities": {"user_id": 7}, "request": {"amount": 12.5}, "request_id": "abc"}
    {"entities": {"user_id": 7}, "request": {"amount": 12.5}, "return_features": true}
    {"entities": [{"user_id": 7}, {"user_id": 9}], "request": [{...}, {...}]}

Either side may be a list of objects (one per row); a single object goes with every row
of a list on the other side; two lists must be equally long. Each object holds exactly
the deployment's entity keys (strings or integers) or request fields (typed by their
:class:`ColumnSpec`, ``null`` for a missing float or string). A side the deployment does
not use may be left out. The answer carries the predictions, the model version that
answered, the request id, the traffic arm and whether a fallback answered; with
``"return_features": true``, also the feature values the model was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from kiln.registry.signature import ColumnSpec
from kiln.serving.protocols._columns import (
    Columns,
    Plan,
    column_from_json,
    describe,
    has_bools,
    join,
    jsonable,
    plan,
)
from kiln.serving.protocols._json import ProtocolError, dumps, loads

__all__ = ["NativeRequest", "decode_predict", "encode_predict_response"]

_KEYS = ("entities", "request", "request_id", "return_features")


@dataclass(frozen=True, kw_only=True)
class NativeRequest:
    """A decoded predict request: ``rows`` rows of entity keys and request fields.

    ``entities`` maps each entity key to its values (Python ``int`` or ``str``, one per
    row), ready for an online feature lookup; ``request`` maps each request field to a
    numpy column of its dtype, in the order the fields were given. ``return_features``
    asks for the served feature values in the answer.
    """

    entities: dict[str, list[Any]]
    request: Columns
    rows: int
    request_id: str | None = None
    return_features: bool = False

    def lookup_rows(self) -> dict[str, Any]:
        """Entity keys and request fields as one mapping of columns (the feature lookup's
        ``entity_rows``: on-demand features read request fields from it)."""
        return {**self.request, **self.entities}


def decode_predict(
    body: bytes, entity_keys: Sequence[str], request_fields: Sequence[ColumnSpec]
) -> NativeRequest:
    """Decode a predict body, or raise ProtocolError naming the field."""
    doc = loads(body, "request body")
    if not isinstance(doc, dict):
        raise ProtocolError(
            f"request body must be a JSON object with 'entities' and 'request'; got {describe(doc)}"
        )
    for key in doc:
        if key not in _KEYS:
            raise ProtocolError(f"unexpected field {key!r}; allowed: {', '.join(_KEYS)}")
    request_id = doc.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"'request_id' must be a string; got {describe(request_id)}")
    return_features = doc.get("return_features", False)
    if not isinstance(return_features, bool):
        raise ProtocolError(
            f"'return_features' must be true or false; got {describe(return_features)}"
        )
    keys = tuple(entity_keys)
    entity_rows = _side(doc, "entities", keys, "entity key")
    layout = plan(request_fields, request_fields)
    request_rows = _side(doc, "request", layout.names, "request field")
    n = _row_count(entity_rows, request_rows)
    entities = {k: _entity_column(entity_rows, k, n) for k in keys}
    request = _request_columns(request_rows, layout, n, has_bools(body))
    return NativeRequest(
        entities=entities,
        request=request,
        rows=n,
        request_id=request_id,
        return_features=return_features,
    )


class _Side(NamedTuple):
    objects: list[dict[str, Any]]
    single: bool  # one object, for every row


def _side(doc: dict[str, Any], side: str, names: Sequence[str], what: str) -> _Side | None:
    """The objects of one side; None when the deployment takes nothing there."""
    value = doc.get(side)
    if not names:
        if value in (None, {}, []):
            return None
        raise ProtocolError(f"this deployment takes no {what}s; leave out {side!r}")
    if value is None:
        raise ProtocolError(
            f"the request has no {side!r}; this deployment needs the {what}s {join(names)}"
        )
    single = isinstance(value, dict)
    objects = [value] if single else value
    if not isinstance(objects, list) or not objects:
        raise ProtocolError(
            f"{side!r} must be an object of {what}s ({join(names)}) or a non-empty list of "
            f"them; got {describe(value)}"
        )
    wanted = set(names)
    for i, obj in enumerate(objects):
        where = side if single else f"{side}[{i}]"
        if type(obj) is not dict:
            raise ProtocolError(f"{where} must be an object of {what}s; got {describe(obj)}")
        if obj.keys() != wanted:
            missing = [n for n in names if n not in obj]
            if missing:
                raise ProtocolError(
                    f"{where}: missing {what}{'s' if len(missing) > 1 else ''} {join(missing)}; "
                    f"this deployment takes {join(names)}"
                )
            extra = next(k for k in obj if k not in wanted)
            raise ProtocolError(
                f"{where}: unexpected {what} {extra!r}; this deployment takes {join(names)}"
            )
    return _Side(objects, single)


def _row_count(entities: _Side | None, request: _Side | None) -> int:
    """Rows of the request: a list's length, 1 for single objects; lists must agree."""
    counts = {
        name: len(side.objects)
        for name, side in (("entities", entities), ("request", request))
        if side is not None and not side.single
    }
    if len(set(counts.values())) > 1:
        raise ProtocolError(
            "'entities' and 'request' are lists of different lengths "
            f"({counts['entities']} and {counts['request']}); send one object per row on both "
            "sides, or a single object for every row"
        )
    return next(iter(counts.values()), 1)


def _objects(side: _Side, n: int) -> list[dict[str, Any]]:
    return side.objects * n if side.single else side.objects


def _entity_column(side: _Side | None, key: str, n: int) -> list[Any]:
    assert side is not None  # a deployment with entity keys always has this side
    out: list[Any] = []
    for i, obj in enumerate(_objects(side, n)):
        v = obj[key]
        if type(v) is float and v.is_integer():
            v = int(v)
        elif not (type(v) is int or type(v) is str):
            raise ProtocolError(
                f"entity key {key!r} (row {i}) must be a string or an integer; got {describe(v)}"
            )
        out.append(v)
    return out


def _request_columns(side: _Side | None, layout: Plan, n: int, bools: bool) -> Columns:
    if side is None:
        return {}
    objects = _objects(side, n)
    return {
        name: column_from_json(
            [obj[name] for obj in objects], spec, f"request field {name!r}", bools=bools
        )
        for name, spec in zip(layout.names, layout.specs, strict=True)
    }


def encode_predict_response(
    predictions: Any,
    model: str,
    version: int | str | None,
    request_id: str | None,
    arm: str | None,
    fallback: bool,
    features: Mapping[str, Any] | None = None,
) -> bytes:
    """The predict answer: ``{"predictions", "model", "version", "request_id", "arm",
    "fallback"}``, with ``features`` (the values the model was given) when passed."""
    out: dict[str, Any] = {
        "predictions": jsonable(np.asarray(predictions)),
        "model": model,
        "version": version,
        "request_id": request_id,
        "arm": arm,
        "fallback": fallback,
    }
    if features is not None:
        out["features"] = jsonable(features)
    return dumps(out)
