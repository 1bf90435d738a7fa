"""The synthetic fraud data: reproducible, well-formed, and realistically imbalanced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from kiln.core import InvalidInput
from kiln.data import (
    FRAUD_FEATURES,
    MERCHANT_CATEGORIES,
    make_fraud_transactions,
    train_valid_split,
)

END = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
COLUMNS = [
    "transaction_id",
    "user_id",
    "merchant_id",
    "event_timestamp",
    "amount",
    "merchant_category",
    "hour",
    "is_online",
    "distance_km",
    "user_avg_amount",
    "amount_ratio",
    "txns_last_24h",
    "is_fraud",
]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_fraud_transactions(n_transactions=20_000, n_users=800, seed=11, end=END)


def test_same_seed_same_frame() -> None:
    a = make_fraud_transactions(n_transactions=3_000, n_users=150, seed=3, end=END)
    b = make_fraud_transactions(n_transactions=3_000, n_users=150, seed=3, end=END)
    pd.testing.assert_frame_equal(a, b)


def test_other_seed_other_frame() -> None:
    a = make_fraud_transactions(n_transactions=3_000, n_users=150, seed=3, end=END)
    b = make_fraud_transactions(n_transactions=3_000, n_users=150, seed=4, end=END)
    assert not a["amount"].equals(b["amount"])


def test_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 20_000
    assert isinstance(frame["event_timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(frame["event_timestamp"].dt.tz) == "UTC"
    assert frame["is_fraud"].dtype == bool
    assert frame["is_online"].dtype == bool
    for col in ("transaction_id", "user_id", "merchant_id", "hour", "txns_last_24h"):
        assert pd.api.types.is_integer_dtype(frame[col]), col
    assert set(frame["merchant_category"].cat.categories) == set(MERCHANT_CATEGORIES)
    assert frame["transaction_id"].is_unique
    assert not frame.isna().any().any()


def test_values_are_plausible(frame: pd.DataFrame) -> None:
    assert frame["user_id"].between(0, 799).all()
    assert frame["merchant_id"].between(0, 299).all()
    assert frame["hour"].between(0, 23).all()
    assert (frame["hour"] == frame["event_timestamp"].dt.hour).all()
    assert (frame["amount"] > 0).all()
    assert (frame["user_avg_amount"] > 0).all()
    assert frame["distance_km"].between(0, 20_000).all()
    assert (frame["txns_last_24h"] >= 0).all()
    np.testing.assert_allclose(
        frame["amount_ratio"], frame["amount"] / frame["user_avg_amount"], atol=6e-5
    )


def test_timestamps_cover_the_window_in_order(frame: pd.DataFrame) -> None:
    ts = frame["event_timestamp"]
    assert ts.is_monotonic_increasing
    assert (frame["transaction_id"].diff().dropna() == 1).all()
    assert ts.min() >= pd.Timestamp(END - timedelta(days=90))
    assert ts.max() < pd.Timestamp(END)
    assert ts.max() - ts.min() > timedelta(days=85)


def test_default_end_is_now() -> None:
    before = pd.Timestamp.now(tz="UTC")
    df = make_fraud_transactions(n_transactions=1_000, n_users=50, days=2)
    assert df["event_timestamp"].max() <= pd.Timestamp.now(tz="UTC")
    assert df["event_timestamp"].min() >= before - timedelta(days=2, seconds=1)


def test_velocity_counts_the_users_previous_day(frame: pd.DataFrame) -> None:
    sample = frame.sample(300, random_state=0)
    for row in sample.itertuples():
        same_user = frame[frame["user_id"] == row.user_id]
        earlier = same_user[
            (same_user["event_timestamp"] > row.event_timestamp - timedelta(days=1))
            & (same_user["transaction_id"] < row.transaction_id)
        ]
        # Rows sharing a millisecond are ordered by id, so count by id, not by time.
        assert row.txns_last_24h == len(earlier), row


def test_label_rate_and_signal(frame: pd.DataFrame) -> None:
    rate = frame["is_fraud"].mean()
    assert 0.015 <= rate <= 0.04
    fraud = frame[frame["is_fraud"]]
    legit = frame[~frame["is_fraud"]]
    # Fraud leans on the features the generator says it does, without being separable.
    assert fraud["amount_ratio"].median() > legit["amount_ratio"].median()
    assert fraud["is_online"].mean() > legit["is_online"].mean()
    assert fraud["txns_last_24h"].mean() > legit["txns_last_24h"].mean()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_label_rate_is_stable_across_seeds_and_sizes(seed: int) -> None:
    df = make_fraud_transactions(n_transactions=5_000, n_users=200, seed=seed, end=END)
    assert 0.01 <= df["is_fraud"].mean() <= 0.05


def test_models_rank_well_but_not_perfectly(frame: pd.DataFrame) -> None:
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    train, valid = train_valid_split(frame)
    features = list(FRAUD_FEATURES)
    model = lgb.LGBMClassifier(n_estimators=100, learning_rate=0.05, n_jobs=1, verbose=-1)
    model.fit(train[features], train["is_fraud"])
    auc = roc_auc_score(valid["is_fraud"], model.predict_proba(valid[features])[:, 1])
    assert 0.78 <= auc <= 0.97


def test_features_are_columns(frame: pd.DataFrame) -> None:
    assert set(FRAUD_FEATURES) <= set(frame.columns)
    assert "is_fraud" not in FRAUD_FEATURES
    assert all(
        pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool for c in FRAUD_FEATURES
    )


def test_split_by_time(frame: pd.DataFrame) -> None:
    train, valid = train_valid_split(frame, valid_fraction=0.25)
    assert len(train) == 15_000
    assert len(valid) == 5_000
    assert train["event_timestamp"].max() <= valid["event_timestamp"].min()
    assert set(train.index).isdisjoint(valid.index)


def test_split_sorts_unordered_input(frame: pd.DataFrame) -> None:
    shuffled = frame.sample(frac=1.0, random_state=1)
    train, valid = train_valid_split(shuffled, valid_fraction=0.1)
    assert train["event_timestamp"].max() <= valid["event_timestamp"].min()
    assert sorted([*train.index, *valid.index]) == list(frame.index)


def test_split_keeps_both_parts_non_empty() -> None:
    df = make_fraud_transactions(n_transactions=3, n_users=2, n_merchants=2, days=1, end=END)
    train, valid = train_valid_split(df, valid_fraction=0.01)
    assert (len(train), len(valid)) == (2, 1)
    train, valid = train_valid_split(df, valid_fraction=0.99)
    assert (len(train), len(valid)) == (1, 2)


def test_tiny_sizes_work() -> None:
    df = make_fraud_transactions(n_transactions=1, n_users=1, n_merchants=1, days=1, end=END)
    assert len(df) == 1
    assert df["txns_last_24h"].iloc[0] == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_transactions": 0}, "'n_transactions'"),
        ({"n_users": -1}, "'n_users'"),
        ({"n_merchants": 2.5}, "'n_merchants'"),
        ({"days": True}, "'days'"),
        ({"seed": "7"}, "'seed'"),
        ({"end": datetime(2025, 1, 1)}, "timezone-aware"),  # naive on purpose
        ({"end": "2025-01-01"}, "'end'"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        make_fraud_transactions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.2"])
def test_split_rejects_bad_fraction(frame: pd.DataFrame, fraction: object) -> None:
    with pytest.raises(InvalidInput, match="'valid_fraction'"):
        train_valid_split(frame, valid_fraction=fraction)  # type: ignore[arg-type]


def test_split_needs_a_timestamp() -> None:
    with pytest.raises(InvalidInput, match="event_timestamp"):
        train_valid_split(pd.DataFrame({"a": [1, 2, 3]}))
