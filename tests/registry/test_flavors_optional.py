"""Round trips for the XGBoost, PyTorch and ONNX flavors, and how they fail.

Each model is registered, loaded in a fresh interpreter (which has none of the test's
classes in memory) and must predict exactly what the original object predicts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import xgboost as xgb
from _torch_models import MLP
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import InvalidInput, MissingDependency

N_FEATURES = 8


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, N_FEATURES))
    score = x[:, 0] - 0.5 * x[:, 1] + 0.3 * x[:, 2] * x[:, 3]
    y = np.digitize(score + rng.normal(0, 0.3, len(x)), [-0.5, 0.5])  # classes 0, 1, 2
    return x, y


@pytest.fixture
def child_imports_torch_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets the fresh interpreter import ``_torch_models``, as a deployed package would."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))


def run_child(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


# -- XGBoost ------------------------------------------------------------------------------


def test_xgboost_classifier_labels_and_probabilities(
    data: tuple[np.ndarray, np.ndarray], predict_in_fresh_process: Any
) -> None:
    x, y = data
    clf = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(x, y)
    mv = kiln.models.register("xgb", clf, input_example=x[:5])
    assert mv.flavor == "xgboost"
    assert mv.config["wrapper"] == "xgboost.sklearn:XGBClassifier"
    np.testing.assert_array_equal(predict_in_fresh_process("xgb/1", x), clf.predict(x))

    kiln.models.register("xgb", clf, input_example=x[:5], method="predict_proba")
    proba = kiln.models.load("xgb/2").predict(x)
    assert proba.shape == (len(x), 3)
    np.testing.assert_allclose(proba, clf.predict_proba(x), rtol=1e-6)


def test_xgboost_booster_with_feature_names(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(N_FEATURES)])
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgb.DMatrix(frame, label=(y == 2).astype(int)),
        num_boost_round=10,
    )
    mv = kiln.models.register("xgb-booster", booster, input_example=frame[:5])
    assert mv.config["wrapper"] == "booster"
    expected = booster.predict(xgb.DMatrix(frame))
    loaded = kiln.models.load("xgb-booster/1")
    np.testing.assert_allclose(loaded.predict(frame), expected, rtol=1e-6)
    # A plain matrix gets the booster's own feature names, in signature order.
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-6)


def test_xgboost_regressor_keeps_its_missing_value(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    x = x.copy()
    x[::4, 0] = -999.0
    target = x[:, 1] * 2 + np.where(x[:, 0] == -999.0, 5.0, x[:, 0])
    reg = xgb.XGBRegressor(n_estimators=10, max_depth=3, missing=-999.0).fit(x, target)
    mv = kiln.models.register("xgb-reg", reg, input_example=x[:5])
    assert mv.config["missing"] == -999.0
    np.testing.assert_allclose(kiln.models.load("xgb-reg/1").predict(x), reg.predict(x), rtol=1e-6)


def test_xgboost_rejects_a_method_it_lacks(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    reg = xgb.XGBRegressor(n_estimators=2).fit(x, y)
    with pytest.raises(InvalidInput, match=r"method 'predict_proba'.*use one of predict"):
        kiln.models.register("bad", reg, input_example=x[:5], method="predict_proba")
    booster = reg.get_booster()
    with pytest.raises(InvalidInput, match="use one of predict"):
        kiln.models.register("bad", booster, input_example=x[:5], method="predict_proba")
    with pytest.raises(InvalidInput, match="not fitted"):
        kiln.models.register("bad", xgb.XGBClassifier(), input_example=x[:5])


_WITHOUT_XGBOOST = """
    import sys
    sys.modules["xgboost"] = None  # as if the extra were not installed
    from sklearn.linear_model import LinearRegression
    import kiln
    from kiln.errors import MissingDependency
    from kiln.registry.flavors import detect

    assert detect(LinearRegression()).name == "sklearn"
    optional = ("torch", "onnx", "onnxruntime")
    print("imported:", sorted(m for m in optional if sys.modules.get(m) is not None))
    try:
        kiln.models.load(sys.argv[1])
    except MissingDependency as exc:
        print(exc)
    else:
        print("loaded")
"""


def test_xgboost_missing_library_names_the_extra(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = data
    kiln.models.register("xgb", xgb.XGBRegressor(n_estimators=2).fit(x, y), input_example=x[:5])
    proc = run_child(_WITHOUT_XGBOOST, "xgb/1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    imported, error = proc.stdout.strip().splitlines()
    # Detecting a scikit-learn model tried no optional library on the way.
    assert imported == "imported: []"
    assert "pip install 'kiln[xgboost]'" in error
    assert issubclass(MissingDependency, ImportError)


# -- PyTorch ------------------------------------------------------------------------------


def trained_mlp(x: np.ndarray, y: np.ndarray, **kwargs: Any) -> MLP:
    torch.manual_seed(0)
    model = MLP(n_features=N_FEATURES, hidden=16, n_out=3, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xs, ys = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    for _ in range(20):
        opt.zero_grad()
        out = model(xs)
        logits = out[0] if isinstance(out, tuple) else out
        torch.nn.functional.cross_entropy(logits, ys).backward()
        opt.step()
    return model.eval()


def torch_predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = model(torch.from_numpy(x.astype(np.float32)))
    return (out[0] if isinstance(out, tuple) else out).numpy()


def test_pytorch_state_dict_round_trip(
    data: tuple[np.ndarray, np.ndarray],
    predict_in_fresh_process: Any,
    child_imports_torch_models: None,
) -> None:
    x, y = data
    model = trained_mlp(x, y)
    kwargs = {"n_features": N_FEATURES, "hidden": 16, "n_out": 3}
    mv = kiln.models.register(
        "mlp", model, input_example=x[:5], flavor_options={"init_kwargs": kwargs}
    )
    assert mv.flavor == "pytorch"
    assert mv.config["format"] == "state_dict"
    assert mv.config["class"] == "_torch_models:MLP"
    assert mv.signature.outputs[0].dtype == "float32"
    np.testing.assert_allclose(
        predict_in_fresh_process("mlp/1", x), torch_predict(model, x), rtol=1e-5, atol=1e-6
    )

    # A tuple output (logits, hidden) serves its first element.
    two = trained_mlp(x, y, return_hidden=True)
    kiln.models.register(
        "mlp",
        two,
        input_example=x[:5],
        flavor_options={"init_kwargs": {**kwargs, "return_hidden": True}},
    )
    np.testing.assert_allclose(
        kiln.models.load("mlp/2").predict(x), torch_predict(two, x), rtol=1e-5, atol=1e-6
    )


def test_pytorch_class_that_cannot_be_rebuilt(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = trained_mlp(x, y)
    with pytest.raises(InvalidInput, match=r"cannot rebuild.*init_kwargs"):
        kiln.models.register("mlp", model, input_example=x[:5])
    with pytest.raises(InvalidInput, match="parameters differ"):
        kiln.models.register(
            "mlp",
            model,
            input_example=x[:5],
            flavor_options={"init_kwargs": {"n_features": N_FEATURES, "hidden": 4, "n_out": 3}},
        )
    with pytest.raises(InvalidInput, match="JSON values"):
        kiln.models.register(
            "mlp", model, input_example=x[:5], flavor_options={"init_kwargs": {"n": object()}}
        )

    class Local(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t

    with pytest.raises(InvalidInput, match=r"cannot be imported by another process.*TorchScript"):
        kiln.models.register("local", Local(), input_example=x[:5])
    with pytest.raises(InvalidInput, match="method 'predict_proba'"):
        kiln.models.register("mlp", model, input_example=x[:5], method="predict_proba")


def test_pytorch_torchscript_needs_no_importable_class(
    data: tuple[np.ndarray, np.ndarray], predict_in_fresh_process: Any
) -> None:
    x, _ = data

    class Scorer(torch.nn.Module):
        """Defined in the test, so only TorchScript can carry it to another process."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.linear = torch.nn.Linear(N_FEATURES, 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.linear(t))

    scorer = Scorer().eval()
    expected = torch_predict(scorer, x)
    mv = kiln.models.register("script", torch.jit.script(scorer), input_example=x[:5])
    assert mv.config["format"] == "torchscript"
    np.testing.assert_allclose(
        predict_in_fresh_process("script/1", x), expected, rtol=1e-5, atol=1e-6
    )
    # An eager module scripted on request gives the same package.
    kiln.models.register(
        "script", scorer, input_example=x[:5], flavor_options={"torchscript": True}
    )
    np.testing.assert_allclose(
        kiln.models.load("script/2").predict(x), expected, rtol=1e-5, atol=1e-6
    )

    class Unscriptable(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.tanh(t.numpy()))

    with pytest.raises(InvalidInput, match="cannot compile the Unscriptable to TorchScript"):
        kiln.models.register(
            "bad", Unscriptable(), input_example=x[:5], flavor_options={"torchscript": True}
        )


# -- ONNX ---------------------------------------------------------------------------------


def test_onnx_from_sklearn(
    data: tuple[np.ndarray, np.ndarray], predict_in_fresh_process: Any
) -> None:
    x, y = data
    lr = LogisticRegression(max_iter=500).fit(x, y)
    proto = to_onnx(lr, x[:1].astype(np.float32), options={"zipmap": False})
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, proba = session.run(None, {"X": x.astype(np.float32)})

    mv = kiln.models.register("onnx-lr", proto, input_example=x[:5])
    assert mv.flavor == "onnx"
    assert mv.signature.inputs[0].dtype == "float64"  # the graph's float32 is kiln's concern
    served = predict_in_fresh_process("onnx-lr/1", x)
    np.testing.assert_array_equal(served, labels)
    assert (served == lr.predict(x)).mean() > 0.99  # float32 graph, float64 estimator

    kiln.models.register(
        "onnx-lr", proto, input_example=x[:5], flavor_options={"output_name": "probabilities"}
    )
    served = kiln.models.load("onnx-lr/2").predict(x)
    np.testing.assert_array_equal(served, proba)
    np.testing.assert_allclose(served, lr.predict_proba(x), atol=1e-5)

    with pytest.raises(InvalidInput, match=r"no output 'score'.*'label', 'probabilities'"):
        kiln.models.register(
            "onnx-lr", proto, input_example=x[:5], flavor_options={"output_name": "score"}
        )
    with pytest.raises(InvalidInput, match=r"method 'predict_proba'.*output_name"):
        kiln.models.register("onnx-lr", proto, input_example=x[:5], method="predict_proba")


def two_input_graph() -> onnx.ModelProto:
    """y = a + 2 * float(b): one float and one int64 input, fed from named columns."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["b_float", "two"], ["b_scaled"]),
            helper.make_node("Add", ["a", "b_scaled"], ["y"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [None, 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def test_onnx_two_named_inputs(predict_in_fresh_process: Any) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.integers(-5, 5, 40)})
    mv = kiln.models.register("onnx-two", two_input_graph(), input_example=frame[:5])
    assert [c.name for c in mv.signature.inputs] == ["a", "b"]
    expected = (frame["a"].to_numpy(np.float32) + 2 * frame["b"].to_numpy(np.float32))[:, None]
    served = predict_in_fresh_process("onnx-two", frame)
    assert served.dtype == np.float32
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    # Columns given in another order still reach the inputs of the same names.
    model = kiln.models.load("onnx-two")
    np.testing.assert_allclose(model.predict(frame[["b", "a"]]), expected, rtol=1e-6)
