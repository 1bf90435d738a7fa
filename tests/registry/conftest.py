"""Registry fixtures: predicting with a registered model in a fresh interpreter."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_CHILD = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    import kiln

    ref, src, dst = sys.argv[1:4]
    with open(src, "rb") as fh:
        data = pickle.load(fh)
    model = kiln.models.load(ref)
    np.save(dst, np.asarray(model.predict(data)), allow_pickle=True)
    """
)


@pytest.fixture
def predict_in_fresh_process(tmp_path: Path) -> Any:
    """``fn(ref, data) -> ndarray``: load ``ref`` in a new Python process and predict.

    The child sees the same settings (KILN_* environment) as the test, and nothing of
    the test's imports, so a model that only loads because its class is in memory fails.
    """

    def run(ref: str, data: Any) -> np.ndarray:
        src, dst = tmp_path / "input.pkl", tmp_path / "output.npy"
        with src.open("wb") as fh:
            pickle.dump(data, fh)
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, ref, str(src), str(dst)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        return np.load(dst, allow_pickle=True)

    return run
