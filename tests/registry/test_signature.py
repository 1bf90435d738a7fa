"""Signatures: inferred from an example, enforced on every predict with safe casts only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import kiln
from kiln.errors import InvalidInput
from kiln.registry import Signature, enforce, infer_signature


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [12.5, 80.0, 3.2],
            "count": np.array([1, 2, 3], dtype="int64"),
            "merchant": ["a", "b", "a"],
            "online": [True, False, True],
            "when": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]),
        }
    )


def test_infer_columns_and_tensor(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame, np.zeros(3))
    assert [(c.name, c.dtype) for c in sig.inputs] == [
        ("amount", "float64"),
        ("count", "int64"),
        ("merchant", "string"),
        ("online", "bool"),
        ("when", str(frame["when"].dtype)),
    ]
    assert sig.input_kind == "columns"
    assert sig.outputs[0].dtype == "float64" and sig.outputs[0].shape == (-1,)

    tensor = infer_signature(np.zeros((4, 3, 2), dtype="float32"), np.zeros((4, 2)))
    assert tensor.input_kind == "tensor"
    assert tensor.inputs[0].shape == (-1, 3, 2) and tensor.inputs[0].dtype == "float32"
    assert tensor.outputs[0].shape == (-1, 2)
    assert Signature.from_dict(sig.to_dict()) == sig
    assert Signature.from_dict(tensor.to_dict()) == tensor


def test_every_input_form_gives_the_same_batch(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame, np.zeros(3))
    expected = enforce(sig, frame).to_pandas()
    forms = [
        frame[list(reversed(frame.columns))],  # column order does not matter
        {c: frame[c].tolist() for c in frame.columns},
        frame.to_dict("records"),
        pa.Table.from_pandas(frame, preserve_index=False),
    ]
    for form in forms:
        pd.testing.assert_frame_equal(enforce(sig, form).to_pandas(), expected, check_dtype=True)
    one = enforce(sig, {c: frame[c].iloc[0] for c in frame.columns})  # a dict of scalars
    assert len(one) == 1


def test_safe_casts_are_applied() -> None:
    sig = infer_signature(pd.DataFrame({"x": [1.5], "n": np.array([1], dtype="int32")}), [0.0])
    batch = enforce(sig, {"x": [1, 2], "n": [3, 4]})  # ints for a float, int64 into int32
    assert batch.to_pandas().dtypes.to_dict() == {"x": np.float64, "n": np.int32}
    with pytest.raises(InvalidInput, match=r"column 'n': expected int32, received int64"):
        enforce(sig, {"x": [1.0], "n": [2**40]})  # does not fit: not safe
    with pytest.raises(InvalidInput, match=r"column 'n': expected int32, received float64"):
        enforce(sig, {"x": [1.0], "n": [1.5]})
    batch = enforce(sig, {"x": [None, 2.0], "n": [1, 2]})  # a missing float is NaN
    assert np.isnan(batch.to_pandas()["x"].iloc[0])
    with pytest.raises(InvalidInput, match="holds nulls"):
        enforce(sig, {"x": [1.0, 2.0], "n": [1, None]})


def test_mismatches_name_the_column_and_both_types(frame: pd.DataFrame) -> None:
    sig = infer_signature(frame, np.zeros(3))
    with pytest.raises(InvalidInput, match=r"missing column 'online'"):
        enforce(sig, frame.drop(columns=["online"]))
    with pytest.raises(InvalidInput, match=r"unexpected column 'extra'"):
        enforce(sig, frame.assign(extra=1))
    with pytest.raises(
        InvalidInput, match=r"column 'amount': expected float64, received object \(str values\)"
    ):
        enforce(sig, frame.assign(amount=["1", "2", "3"]))
    with pytest.raises(InvalidInput, match=r"column 'merchant': expected string, received int64"):
        enforce(sig, frame.assign(merchant=[1, 2, 3]))
    with pytest.raises(InvalidInput, match=r"column 'when': expected datetime64\["):
        enforce(sig, frame.assign(when=["2026-01-01"] * 3))
    with pytest.raises(InvalidInput, match="different lengths"):
        enforce(sig, {**{c: frame[c].tolist() for c in frame.columns}, "amount": [1.0]})
    with pytest.raises(InvalidInput, match="model input must be"):
        enforce(sig, "amount=3")


def test_numpy_input_for_a_column_signature() -> None:
    sig = infer_signature(pd.DataFrame({"a": [1.0], "b": [2.0]}), [0.0])
    batch = enforce(sig, np.array([[1, 2], [3, 4]]))
    assert batch.to_numpy().dtype == np.float64 and batch.to_numpy().shape == (2, 2)
    assert list(batch.to_pandas().columns) == ["a", "b"]
    assert enforce(sig, np.array([1.0, 2.0])).to_numpy().shape == (1, 2)  # one row
    with pytest.raises(InvalidInput, match="2 columns in the order"):
        enforce(sig, np.zeros((2, 3)))


def test_tensor_shape_and_dtype_are_checked() -> None:
    sig = infer_signature(np.zeros((2, 4), dtype="float32"), np.zeros(2))
    assert enforce(sig, np.ones((5, 4))).to_numpy().dtype == np.float32  # float64 narrows
    assert len(enforce(sig, [0.0, 1.0, 2.0, 3.0])) == 1  # one example without batch axis
    with pytest.raises(InvalidInput, match=r"expected shape \[-1, 4\].*received \[5, 3\]"):
        enforce(sig, np.ones((5, 3)))
    with pytest.raises(InvalidInput, match="expected float32, received object"):
        enforce(sig, np.array([["a"] * 4], dtype=object))


def test_bad_examples_are_refused() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        infer_signature(pd.DataFrame({"t": pd.to_datetime(["2026-01-01"], utc=True)}), [0])
    with pytest.raises(InvalidInput, match="input_example must be"):
        infer_signature(np.array(["a", "b"]), [0])
    with pytest.raises(InvalidInput, match="has no columns"):
        infer_signature(pd.DataFrame(), [0])
    with pytest.raises(InvalidInput, match="column names must be strings"):
        infer_signature(pd.DataFrame(np.zeros((2, 2))), [0])


def test_registered_model_enforces_its_signature() -> None:
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.1, 0.2]})
    model = LinearRegression().fit(x, [1.0, 2.0, 3.0])
    kiln.models.register("lin", model, input_example=x)
    loaded = kiln.models.load("lin/1")
    np.testing.assert_allclose(loaded.predict(x[["b", "a"]]), model.predict(x))
    with pytest.raises(InvalidInput, match="missing column 'b'"):
        loaded.predict({"a": [1.0]})
    shown = kiln.models.get_version("lin", 1).signature
    assert [c.describe() for c in shown.inputs] == ["a: float64", "b: float64"]
