"""Kiln native predict codec: entity keys and request fields, one row or many."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from kiln.registry.signature import ColumnSpec
from kiln.serving.protocols import ProtocolError, native

KEYS = ("user_id",)
FIELDS = (
    ColumnSpec(name="amount", dtype="float64"),
    ColumnSpec(name="country", dtype="string"),
    ColumnSpec(name="items", dtype="int32"),
)
REQUEST = {"amount": 12.5, "country": "DE", "items": 2}


def decode(doc: Any, keys: Any = KEYS, fields: Any = FIELDS) -> native.NativeRequest:
    return native.decode_predict(orjson.dumps(doc), keys, fields)


def error(doc: Any, keys: Any = KEYS, fields: Any = FIELDS) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(doc, keys, fields)
    return info.value


def test_one_row() -> None:
    req = decode({"entities": {"user_id": 7}, "request": REQUEST, "request_id": "r1"})
    assert req.rows == 1 and req.request_id == "r1" and not req.return_features
    assert req.entities == {"user_id": [7]}
    assert list(req.request) == ["amount", "country", "items"]
    assert req.request["amount"].dtype == np.float64
    assert req.request["items"].dtype == np.int32
    assert req.request["country"].tolist() == ["DE"]
    lookup = req.lookup_rows()
    assert lookup["user_id"] == [7] and lookup["amount"].tolist() == [12.5]


def test_many_rows_and_broadcasting() -> None:
    req = decode(
        {
            "entities": [{"user_id": 7}, {"user_id": "u-9"}],
            "request": [REQUEST, {"amount": None, "country": None, "items": 3}],
        }
    )
    assert req.rows == 2 and req.request_id is None
    assert req.entities == {"user_id": [7, "u-9"]}
    assert np.isnan(req.request["amount"][1]) and req.request["country"].tolist() == ["DE", None]
    shared = decode({"entities": [{"user_id": 1}, {"user_id": 2.0}], "request": REQUEST})
    assert shared.rows == 2 and shared.entities == {"user_id": [1, 2]}
    assert shared.request["items"].tolist() == [2, 2]
    flagged = decode({"entities": {"user_id": 1}, "request": REQUEST, "return_features": True})
    assert flagged.return_features
    one_entity = decode({"entities": {"user_id": 1}, "request": [REQUEST, REQUEST, REQUEST]})
    assert one_entity.rows == 3 and one_entity.entities == {"user_id": [1, 1, 1]}


def test_a_side_the_deployment_does_not_use_may_be_left_out() -> None:
    only_request = decode({"request": REQUEST}, keys=())
    assert only_request.entities == {} and only_request.rows == 1
    only_entities = decode({"entities": [{"user_id": 1}, {"user_id": 2}]}, fields=())
    assert only_entities.request == {} and only_entities.rows == 2
    assert decode({"entities": {"user_id": 1}, "request": {}}, fields=()).rows == 1


BAD: list[tuple[str, Any, str]] = [
    ("not an object", [1], "request body must be a JSON object with 'entities' and 'request'"),
    (
        "extra field",
        {"entities": {"user_id": 1}, "request": REQUEST, "x": 1},
        "unexpected field 'x'; allowed: entities, request, request_id, return_features",
    ),
    (
        "request_id not a string",
        {"entities": {"user_id": 1}, "request": REQUEST, "request_id": 3},
        "'request_id' must be a string",
    ),
    (
        "no entities",
        {"request": REQUEST},
        "the request has no 'entities'; this deployment needs the entity keys user_id",
    ),
    ("no request", {"entities": {"user_id": 1}}, "needs the request fields amount, country, items"),
    ("empty entity list", {"entities": [], "request": REQUEST}, "got an empty list"),
    (
        "entities not objects",
        {"entities": [1], "request": REQUEST},
        "entities[0] must be an object of entity keys",
    ),
    (
        "missing entity key",
        {"entities": {"user": 1}, "request": REQUEST},
        "entities: missing entity key user_id; this deployment takes user_id",
    ),
    (
        "extra entity key",
        {"entities": [{"user_id": 1, "x": 2}], "request": REQUEST},
        "entities[0]: unexpected entity key 'x'",
    ),
    (
        "entity key type",
        {"entities": {"user_id": [1]}, "request": REQUEST},
        "entity key 'user_id' (row 0) must be a string or an integer; got a list",
    ),
    ("entity key bool", {"entities": {"user_id": True}, "request": REQUEST}, "got true"),
    ("entity key fraction", {"entities": {"user_id": 1.5}, "request": REQUEST}, "got 1.5"),
    (
        "missing request field",
        {"entities": {"user_id": 1}, "request": {"amount": 1}},
        "request: missing request fields country, items",
    ),
    (
        "extra request field",
        {"entities": {"user_id": 1}, "request": {**REQUEST, "tip": 1}},
        "request: unexpected request field 'tip'",
    ),
    (
        "string amount",
        {"entities": {"user_id": 1}, "request": {**REQUEST, "amount": "12"}},
        "request field 'amount': row 0 is the string '12'; a float64 column takes numbers",
    ),
    (
        "boolean amount",
        {"entities": {"user_id": 1}, "request": {**REQUEST, "amount": True}},
        "a float64 column takes numbers",
    ),
    (
        "null count",
        {"entities": {"user_id": 1}, "request": {**REQUEST, "items": None}},
        "request field 'items': row 0 is null; an int32 column takes numbers",
    ),
    (
        "count out of range",
        {"entities": {"user_id": 1}, "request": {**REQUEST, "items": 2**40}},
        "out of range for int32",
    ),
    (
        "lists of different lengths",
        {"entities": [{"user_id": 1}] * 2, "request": [REQUEST] * 3},
        "lists of different lengths (2 and 3)",
    ),
]


@pytest.mark.parametrize(
    ("doc", "message"), [(d, m) for _, d, m in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_bodies_name_the_field(doc: Any, message: str) -> None:
    err = error(doc)
    assert err.status == 400
    assert message in err.message


def test_sides_the_deployment_does_not_take() -> None:
    assert (
        "takes no entity keys; leave out 'entities'"
        in error({"entities": {"user_id": 1}, "request": REQUEST}, keys=()).message
    )
    assert (
        "takes no request fields; leave out 'request'"
        in error({"entities": {"user_id": 1}, "request": REQUEST}, fields=()).message
    )
    with pytest.raises(ProtocolError) as info:
        native.decode_predict(
            b'{"entities": {"user_id": 1}, "request": {"amount": NaN}}', KEYS, FIELDS
        )
    assert "NaN and Infinity" in info.value.message
    assert (
        "'return_features' must be true or false"
        in error({"entities": {"user_id": 1}, "request": REQUEST, "return_features": 1}).message
    )


def test_encode_predict_response() -> None:
    doc = orjson.loads(
        native.encode_predict_response(
            np.array([0.25, 0.75]),
            "fraud@champion",
            3,
            "r1",
            "challenger",
            False,
            {"amount": np.array([1.0, 2.0]), "country": np.array(["DE", None], dtype=object)},
        )
    )
    assert doc == {
        "predictions": [0.25, 0.75],
        "model": "fraud@champion",
        "version": 3,
        "request_id": "r1",
        "arm": "challenger",
        "fallback": False,
        "features": {"amount": [1.0, 2.0], "country": ["DE", None]},
    }
    fallback = orjson.loads(
        native.encode_predict_response([0], "fraud@champion", None, "r2", None, True)
    )
    assert fallback["fallback"] is True and "features" not in fallback
    assert fallback["version"] is None and fallback["arm"] is None
