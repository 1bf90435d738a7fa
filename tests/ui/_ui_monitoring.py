"""A monitored deployment for the dashboard's monitoring tests: logged predictions (the
``amount`` input shifted in two of three batches, a category holding markup), labels for
them, and three evaluations of a monitor, so alert events (one resolved, others firing)
and history exist; beside it a deployment that served nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.features import Entity, FeatureView, ParquetSource
from kiln.monitoring import Monitor, Rule, evaluate
from kiln.serving.predlog import Prediction, PredictionLog

SCRIPT = "<script>alert(1)</script>"
RULE = "amount<b>psi"  # a rule name may hold < and >: shown as text
DEPLOYMENT = "fraud-api"
QUIET = "quiet-api"
SKEWED = "skew-api"
USERS = [1, 2, 3, 4, 5]


@dataclass(frozen=True)
class Monitored:
    now: datetime
    evaluations: tuple[datetime, ...]
    frames: tuple[pd.DataFrame, ...]


def _rows(n: int, seed: int, amount_mean: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(amount_mean, 20.0, n),
            "items": rng.integers(1, 6, n),
            "category": rng.choice(["grocery", "travel", "online"], n, p=[0.5, 0.2, 0.3]),
        }
    )


def _serve(frame: pd.DataFrame, at: datetime, tag: str) -> None:
    log = PredictionLog(
        kiln.get_settings().home / "offline" / "predictions",
        flush_rows=100_000,
        flush_interval_s=60,
    )
    log.append_many(
        Prediction(
            request_id=f"{tag}-{i}",
            deployment=DEPLOYMENT,
            model="fraud/1",
            version=1,
            arm="champion",
            features={"amount": float(r.amount), "items": int(r.items), "category": r.category},
            output=0.9 if r.amount > 130 else 0.1,
            latency_ms=1.0,
            at=at + timedelta(milliseconds=i),
        )
        for i, r in enumerate(frame.itertuples())
    )
    log.close()
    # The true outcome of each: mostly what the model said, one in eight the other way.
    truth = (frame.amount > 130).to_numpy() ^ (np.arange(len(frame)) % 8 == 0)
    kiln.monitoring.log_labels(
        DEPLOYMENT,
        pd.DataFrame(
            {"request_id": [f"{tag}-{i}" for i in range(len(frame))], "label": truth.astype(int)}
        ),
    )


def populate() -> Monitored:
    """Three batches 45, 25 and 5 minutes ago (shifted, as trained, shifted), each judged
    five minutes later over a 10-minute window: the PSI alert opens, resolves, reopens."""
    train = _rows(3_000, 1)
    model = LogisticRegression().fit(train[["amount", "items"]], train.amount > 100)
    kiln.models.register(
        "fraud", model, input_example=train[["amount", "items"]][:2], training_data=train
    )
    kiln.deployments.create(DEPLOYMENT, model="fraud/1")
    kiln.deployments.create(QUIET, model="fraud/1")
    now = datetime.now(UTC).replace(microsecond=0)
    shifted = _rows(600, 2, amount_mean=170.0)
    shifted.loc[shifted.index % 10 == 0, "category"] = SCRIPT
    frames = (shifted, _rows(600, 3), _rows(600, 4, amount_mean=170.0))
    monitor = Monitor(
        DEPLOYMENT,
        [
            Rule("psi", feature="amount", above=1.0, name=RULE),
            Rule("share_drifted", above=0.9),
            Rule("missing_rate", feature="*", above=0.5),
            Rule("accuracy", below=0.95, window="1h", severity="critical"),
        ],
        window="10m",
    )
    evaluations = []
    for minutes, frame, tag in zip((45, 25, 5), frames, ("a", "b", "c"), strict=True):
        _serve(frame, now - timedelta(minutes=minutes), tag)
        at = now - timedelta(minutes=minutes - 5)
        evaluate(monitor, now=at)
        evaluations.append(at)
    return Monitored(now=now, evaluations=tuple(evaluations), frames=frames)


def skewed(tmp_path: Path) -> None:
    """A deployment reading x and n of a feature view by user, whose log says user 3 was
    served x = 9.9 where the offline store holds 0.3 (skew in x for one request in five),
    and one evaluation of a skew rule, so the history holds skew rates too."""
    now = datetime.now(UTC).replace(microsecond=0)
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(USERS, pa.int64()),
                "event_timestamp": pa.array(
                    [now - timedelta(hours=1)] * len(USERS), pa.timestamp("us", "UTC")
                ),
                "x": pa.array([0.1, 0.2, 0.3, 0.4, 0.5], pa.float64()),
                "n": pa.array([10, 20, 30, 40, 50], pa.int64()),
            }
        ),
        tmp_path / "users.parquet",
    )
    user = Entity("user", ["user_id"])
    stats = FeatureView("stats", entities=[user], source=ParquetSource("users.parquet"))
    fs = kiln.FeatureStore()
    fs.apply([user, stats], base=tmp_path)
    assert fs.materialize(end=now).ok
    train = pd.DataFrame({"x": np.linspace(0, 1, 40), "n": np.arange(40)})
    model = LogisticRegression().fit(train, (np.arange(40) % 2).astype(int))
    kiln.models.register("scorer", model, input_example=train[:4])
    kiln.deployments.create(SKEWED, model="scorer/1", features=["stats:x", "stats:n"])
    log = PredictionLog(
        kiln.get_settings().home / "offline" / "predictions",
        flush_rows=100_000,
        flush_interval_s=60,
    )
    offline = dict(zip(USERS, [0.1, 0.2, 0.3, 0.4, 0.5], strict=True))
    log.append_many(
        Prediction(
            request_id=f"s{i:03d}",
            deployment=SKEWED,
            model="scorer/1",
            version=1,
            arm="champion",
            features={"x": 9.9 if u == 3 else offline[u], "n": u * 10},
            entities={"user_id": u},
            output=0.5,
            latency_ms=1.0,
            at=now - timedelta(minutes=10) + timedelta(milliseconds=i),
        )
        for i, u in enumerate(USERS * 10)
    )
    log.close()
    evaluate(Monitor(SKEWED, [Rule("skew_rate", feature="*", above=0.1)]), now=now)
