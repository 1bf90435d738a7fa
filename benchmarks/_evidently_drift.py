"""Evidently's DataDriftPreset on two Parquet files, timed: run by `benchmarks/monitoring.py`
with the interpreter of Evidently's own environment (``--evidently-python``).

Prints one JSON object: the seconds of each run, the columns Evidently flagged and its
version. Reading the files is not timed; building the report is.
"""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def main() -> None:
    reference_path, current_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    seconds = []
    snapshot = None
    for _ in range(rounds):
        started = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(reference_data=reference, current_data=current)
        seconds.append(time.perf_counter() - started)
    flagged = []
    assert snapshot is not None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            value, threshold = float(metric["value"]), float(config["threshold"])
            # a test's p-value drifts below its threshold, a distance above it
            drifted = value < threshold if "p_value" in config["method"] else value > threshold
            if drifted:
                flagged.append(config["column"])
    import evidently

    print(json.dumps({"seconds": seconds, "flagged": flagged, "version": evidently.__version__}))


if __name__ == "__main__":
    main()
