"""Which inputs hold a NaN (a null sent for a number): the cheap maximum that clears most
requests never hides one, and infinities alone are no NaN."""

from __future__ import annotations

import numpy as np

from kiln.registry.signature import ColumnSpec
from kiln.serving._inputs import InputLayout

NAN, INF = float("nan"), float("inf")


def _layout(*dtypes: str) -> InputLayout:
    specs = tuple(ColumnSpec(name=f"f{i}", dtype=d) for i, d in enumerate(dtypes))
    return InputLayout(tuple(s.name for s in specs if s.name), specs, None)


def test_a_matrix_names_the_columns_holding_nan() -> None:
    layout = _layout("float64", "float64", "float64")
    assert layout.nan_inputs(np.array([[1.0, 2.0, 3.0]])) == []
    assert layout.nan_inputs(np.array([[1.0, NAN, 3.0], [NAN, 2.0, 3.0]])) == ["f0", "f1"]
    assert layout.nan_inputs(np.array([[INF, -INF, 1e308], [1e308, 1e308, 1e308]])) == []
    assert layout.nan_inputs(np.array([[INF, NAN, -INF]], dtype=np.float32)) == ["f1"]
    assert layout.nan_inputs(np.zeros((0, 3))) == []
    assert layout.nan_inputs(np.array([[1, 2, 3]])) == []  # integers hold no NaN


def test_columns_name_the_ones_holding_nan() -> None:
    layout = _layout("float64", "int64", "float32")
    columns = {
        "f0": np.array([INF, -INF]),
        "f1": np.array([1, 2]),
        "f2": np.array([0.5, NAN], dtype=np.float32),
    }
    assert layout.nan_inputs(columns) == ["f2"]
    columns["f2"] = np.array([0.5, 1.5], dtype=np.float32)
    assert layout.nan_inputs(columns) == []
