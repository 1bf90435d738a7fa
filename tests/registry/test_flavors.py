"""Round trips for the built-in flavors: register, load in a fresh process, same predictions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import kiln
from kiln.errors import InvalidInput, KilnWarning


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(42)
    n = 600
    x = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "hour": rng.integers(0, 24, n).astype("int64"),
            "distance": rng.exponential(5, n),
            "merchant": rng.choice(["grocery", "travel", "online", "fuel"], n),
        }
    )
    logit = 0.02 * x["amount"] - 0.1 * x["distance"] + (x["merchant"] == "online") * 1.5
    y = (logit + rng.normal(0, 1, n) > 0.5).astype(int).to_numpy()
    return x, y


def numeric(x: pd.DataFrame) -> pd.DataFrame:
    return x.drop(columns=["merchant"])


def test_sklearn_pipeline_with_text_columns(
    data: tuple[pd.DataFrame, np.ndarray], predict_in_fresh_process: Any
) -> None:
    x, y = data
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["amount", "hour", "distance"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(x, y)
    mv = kiln.models.register("pipe", pipe, input_example=x[:5], method="predict_proba")
    assert mv.flavor == "sklearn"
    assert mv.signature.outputs[0].shape == (-1, 2)
    np.testing.assert_allclose(predict_in_fresh_process("pipe/1", x), pipe.predict_proba(x))
    # Records in, the same probabilities out (the shape a JSON client sends).
    records = x[:3].to_dict("records")
    np.testing.assert_allclose(
        kiln.models.load("pipe/1").predict(records), pipe.predict_proba(x[:3])
    )


def test_sklearn_estimator_on_numpy(
    data: tuple[pd.DataFrame, np.ndarray], predict_in_fresh_process: Any
) -> None:
    x, y = data
    arr = numeric(x).to_numpy()
    forest = RandomForestClassifier(n_estimators=15, random_state=0).fit(arr, y)
    mv = kiln.models.register("forest", forest, input_example=arr[:5])
    assert mv.signature.input_kind == "tensor"
    np.testing.assert_array_equal(predict_in_fresh_process("forest/1", arr), forest.predict(arr))
    ridge = Ridge().fit(numeric(x), x["amount"] * 0.5)
    kiln.models.register("ridge", ridge, input_example=numeric(x)[:5])
    np.testing.assert_allclose(
        predict_in_fresh_process("ridge/1", numeric(x)), ridge.predict(numeric(x))
    )


def test_lightgbm_classifier_regressor_and_booster(
    data: tuple[pd.DataFrame, np.ndarray], predict_in_fresh_process: Any
) -> None:
    x, y = data
    feats = numeric(x)
    clf = lgb.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1).fit(feats, y)
    kiln.models.register("lgbm", clf, input_example=feats[:5])
    kiln.models.register("lgbm", clf, input_example=feats[:5], method="predict_proba")
    np.testing.assert_array_equal(predict_in_fresh_process("lgbm/1", feats), clf.predict(feats))
    np.testing.assert_allclose(
        predict_in_fresh_process("lgbm/2", feats), clf.predict_proba(feats), rtol=1e-12
    )

    labels = np.where(y == 1, "fraud", "ok")
    named = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(feats, labels)
    kiln.models.register("lgbm-labels", named, input_example=feats[:5])
    np.testing.assert_array_equal(
        predict_in_fresh_process("lgbm-labels/1", feats), named.predict(feats)
    )

    reg = lgb.LGBMRegressor(n_estimators=20, verbose=-1).fit(feats, x["amount"])
    kiln.models.register("lgbm-reg", reg, input_example=feats[:5])
    np.testing.assert_allclose(predict_in_fresh_process("lgbm-reg/1", feats), reg.predict(feats))

    booster = lgb.train(
        {"objective": "binary", "verbose": -1},
        lgb.Dataset(feats.to_numpy(), label=y),
        num_boost_round=25,
    )
    kiln.models.register("booster", booster, input_example=feats.to_numpy()[:5])
    np.testing.assert_allclose(
        predict_in_fresh_process("booster/1", feats.to_numpy()), booster.predict(feats.to_numpy())
    )
    with pytest.raises(InvalidInput, match="use one of predict"):
        kiln.models.register("booster", booster, input_example=feats[:5], method="predict_proba")


def test_lightgbm_early_stopping_keeps_the_best_iteration(
    data: tuple[pd.DataFrame, np.ndarray],
) -> None:
    x, y = data
    feats = numeric(x)
    booster = lgb.train(
        {"objective": "binary", "learning_rate": 0.3, "verbose": -1},
        lgb.Dataset(feats[:400], label=y[:400]),
        num_boost_round=300,
        valid_sets=[lgb.Dataset(feats[400:], label=y[400:])],
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )
    assert 0 < booster.best_iteration < 300
    kiln.models.register("early", booster, input_example=feats[:5])
    np.testing.assert_allclose(
        kiln.models.load("early/1").predict(feats), booster.predict(feats), rtol=1e-12
    )


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import pandas as pd
    import kiln

    class Scorer(kiln.models.PythonModel):
        '''Defined in the script, so only a by-value pickle can load it elsewhere.'''

        def load_context(self, context):
            with open(context.artifacts["weights"]) as fh:
                self.weights = json.load(fh)

        def predict(self, model_input):
            w = self.weights
            score = model_input["amount"] * w["amount"] + model_input["hour"] * w["hour"]
            return score.to_numpy()

    weights = sys.argv[1]
    example = pd.DataFrame({"amount": [10.0, 20.0], "hour": [1, 2]})
    mv = kiln.models.register(
        "scorer", Scorer(), input_example=example, artifacts={"weights": weights}
    )
    print(mv.ref)
    """
)


def test_python_model_from_a_script_with_artifacts(
    tmp_path: Path, predict_in_fresh_process: Any
) -> None:
    weights = tmp_path / "weights.json"
    weights.write_text('{"amount": 0.5, "hour": -2.0}')
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(weights)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "scorer/1"
    weights.unlink()  # the registered copy is what the model reads
    data = pd.DataFrame({"amount": [1.0, 3.0], "hour": [4, 5]})
    np.testing.assert_allclose(predict_in_fresh_process("scorer/1", data), [-7.5, -8.5])
    mv = kiln.models.get_version("scorer", 1)
    assert mv.flavor == "pyfunc"
    assert "model/artifacts/weights/weights.json" in {f.path for f in mv.files}


class _Doubler:
    """Any object with ``predict`` is a Python-function model."""

    def predict(self, x: Any) -> Any:
        return np.asarray(x) * 2


def test_any_object_with_predict_and_a_tensor_signature() -> None:
    arr = np.arange(6, dtype="float64").reshape(3, 2)
    kiln.models.register("double", _Doubler(), input_example=arr)
    np.testing.assert_array_equal(kiln.models.load("double").predict(arr), arr * 2)


def test_environment_mismatch_warns_with_both_versions(
    data: tuple[pd.DataFrame, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = data
    model = LogisticRegression().fit(numeric(x), y)
    mv = kiln.models.register("env", model, input_example=numeric(x)[:2])
    recorded = mv.environment["packages"]["scikit-learn"]
    from importlib import metadata

    real = metadata.version

    def fake(name: str) -> str:
        return "99.0.0" if name == "scikit-learn" else real(name)

    from kiln.registry._environment import installed_version

    monkeypatch.setattr(metadata, "version", fake)
    installed_version.cache_clear()  # versions are read once per process
    try:
        with pytest.warns(
            KilnWarning, match=rf"scikit-learn {recorded} at registration, 99.0.0 now"
        ):
            kiln.models.load("env/1")
    finally:
        monkeypatch.undo()
        installed_version.cache_clear()


def test_missing_predict_method_and_unpicklable_models(
    data: tuple[pd.DataFrame, np.ndarray],
) -> None:
    x, _ = data

    class Broken:
        def predict(self, x: Any) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(InvalidInput, match=r"cannot register model 'broken'.*boom") as caught:
        kiln.models.register("broken", Broken(), input_example=numeric(x)[:2])
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert kiln.models.list_models() == []  # nothing half-registered
