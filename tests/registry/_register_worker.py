"""Child process for ``test_concurrency.py``: wait for the go file, then register models.

Usage: ``python _register_worker.py GO_FILE COUNT``; settings come from ``KILN_*``.
Prints one registered version number per line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import kiln


def main(go_file: str, count: int) -> None:
    rng = np.random.default_rng()
    x = pd.DataFrame(rng.normal(size=(50, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(x, (x["a"] > 0).astype(int))
    print("READY", flush=True)
    deadline = time.monotonic() + 60
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.002)
    for _ in range(count):
        mv = kiln.models.register("shared", model, input_example=x[:2])
        print(mv.version, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
