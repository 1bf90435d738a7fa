"""The demo's feature store: fraud features defined once, used for training and serving.

The transaction itself (amount, hour, channel, distance) arrives with each request; what
the model also needs is history: how busy the card and the merchant have been, and how
this amount compares with the user's recent spending. Those are window aggregations and
an on-demand feature here, computed by the same definitions for the training set
(point in time, just before each transaction) and for the online read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

import kiln

__all__ = [
    "DEMO_FEATURES",
    "REQUEST_COLUMNS",
    "SERVICE",
    "STORE_FEATURES",
    "define_features",
    "online_vs_offline",
    "training_set",
]

SERVICE = "fraud_model"
REQUEST_COLUMNS: tuple[str, ...] = ("amount", "hour", "is_online", "distance_km")
STORE_FEATURES: tuple[str, ...] = (
    "user_txns_1h",
    "user_txns_24h",
    "user_spend_24h",
    "user_avg_amount_7d",
    "merchant_txns_24h",
    "merchant_avg_amount_7d",
    "amount_vs_user_7d",
)
DEMO_FEATURES: tuple[str, ...] = REQUEST_COLUMNS + STORE_FEATURES
"""The model's inputs: request data first, then the feature store's features."""

# A training example sees the features as they were just before its transaction, as a
# live request does: the transaction being scored is not yet in its own history.
_JUST_BEFORE = timedelta(milliseconds=1)


def amount_vs_user(df: pd.DataFrame) -> pd.DataFrame:
    """The amount relative to the user's 7-day mean; 1.0 for a user with no recent history."""
    ratio = df["amount"] / df["user_avg_amount_7d"]
    return pd.DataFrame({"amount_vs_user_7d": ratio.astype("float64").fillna(1.0)})


def define_features(transactions: Path) -> list[Any]:
    source = kiln.ParquetSource(str(transactions), timestamp="event_timestamp")
    user = kiln.Entity("user", join_keys=["user_id"], description="a card holder")
    merchant = kiln.Entity("merchant", join_keys=["merchant_id"])
    user_tx = kiln.WindowedFeatureView(
        "user_tx",
        entities=[user],
        source=source,
        aggregations=[
            kiln.Aggregation(None, "count", "1h", name="user_txns_1h"),
            kiln.Aggregation(None, "count", "1d", name="user_txns_24h"),
            kiln.Aggregation("amount", "sum", "1d", name="user_spend_24h"),
            kiln.Aggregation("amount", "mean", "7d", name="user_avg_amount_7d"),
        ],
        description="card activity over trailing windows",
    )
    merchant_tx = kiln.WindowedFeatureView(
        "merchant_tx",
        entities=[merchant],
        source=source,
        aggregations=[
            kiln.Aggregation(None, "count", "1d", name="merchant_txns_24h"),
            kiln.Aggregation("amount", "mean", "7d", name="merchant_avg_amount_7d"),
        ],
    )
    ratio = kiln.OnDemandFeatureView(
        "amount_features",
        sources=[kiln.RequestSource("transaction", [kiln.Field("amount", "float64")])],
        inputs=["user_tx:user_avg_amount_7d"],
        schema=[kiln.Field("amount_vs_user_7d", "float64")],
        function=amount_vs_user,
    )
    service = kiln.FeatureService(
        SERVICE,
        features=[user_tx, merchant_tx, "amount_features:amount_vs_user_7d"],
        description="what the fraud model reads besides the request",
    )
    return [user, merchant, user_tx, merchant_tx, ratio, service]


def training_set(fs: kiln.FeatureStore, transactions: pd.DataFrame) -> Any:
    """Every transaction with the store's features as of just before it (a lazy job)."""
    columns = ["transaction_id", "user_id", "merchant_id", "event_timestamp", *REQUEST_COLUMNS]
    spine = transactions[[*columns, "is_fraud"]].copy()
    spine["as_of"] = spine["event_timestamp"] - _JUST_BEFORE
    return fs.get_historical_features(spine, SERVICE, timestamp="as_of")


def _show(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def online_vs_offline(fs: kiln.FeatureStore, row: pd.Series) -> tuple[Table, bool]:
    """One entity's features read online and computed offline as of the same instant."""
    request = {
        "user_id": int(row["user_id"]),
        "merchant_id": int(row["merchant_id"]),
        "amount": float(row["amount"]),
    }
    online = fs.get_online_features([request], SERVICE)
    now = datetime.now(UTC)
    spine = pd.DataFrame([{**request, "event_timestamp": now}])
    offline = fs.get_historical_features(spine, SERVICE).to_pandas().iloc[0]
    table = Table(
        title=f"user {request['user_id']} / merchant {request['merchant_id']}, "
        f"amount {request['amount']:.2f}: online read vs offline at the same instant",
        title_justify="left",
        box=None,
        header_style="bold underline",
    )
    for column in ("feature", "online", "offline", ""):
        table.add_column(column, justify="left" if column == "feature" else "right")
    same = True
    for name in STORE_FEATURES:
        got, want = online[name][0], offline[name]
        missing = want is None or (isinstance(want, float) and np.isnan(want))
        equal = (got is None and missing) or (
            got is not None and not missing and bool(np.isclose(got, want, rtol=1e-9))
        )
        same &= equal
        table.add_row(name, _show(got), _show(want), "[green]=[/]" if equal else "[red]≠[/]")
    return table, same
