"""Synthetic card transactions for demos, tests and benchmarks.

The generator is the one dataset every part of Kiln can agree on without shipping a file:
it is seeded (the same arguments give the same frame), built entirely with vectorized
numpy (tens of thousands of rows in milliseconds, so tests and benchmarks can afford it),
and shaped like the real problem: a few percent of fraud, skewed amounts, daily cycles,
bursts of card-testing activity, and labels that a good model ranks well but never
perfectly (the label is drawn from a noisy logistic model of the features, so validation
AUC lands around 0.85-0.95 rather than at a suspicious 1.0).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from kiln.core import InvalidInput

__all__ = [
    "FRAUD_FEATURES",
    "MERCHANT_CATEGORIES",
    "make_fraud_transactions",
    "train_valid_split",
]

FRAUD_FEATURES: tuple[str, ...] = (
    "amount",
    "amount_ratio",
    "user_avg_amount",
    "hour",
    "is_online",
    "distance_km",
    "txns_last_24h",
)
"""Numeric model inputs; ids, timestamps and the category stay out so every model can use them."""

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "pharmacy",
    "apparel",
    "travel",
    "entertainment",
    "electronics",
    "jewelry",
    "gift_cards",
)

# Per category: share of merchants, typical basket relative to a user's norm, how often it
# is bought online, and how much it attracts fraud (logit offset, not visible to models
# through FRAUD_FEATURES, which keeps part of the signal out of reach).
_CATEGORY_SHARE = np.array([0.22, 0.20, 0.10, 0.08, 0.12, 0.06, 0.08, 0.07, 0.03, 0.04])
_CATEGORY_BASKET = np.array([0.8, 0.6, 0.9, 0.5, 1.3, 3.5, 0.9, 2.5, 4.0, 1.5])
_CATEGORY_ONLINE = np.array([0.10, 0.15, 0.02, 0.15, 0.55, 0.70, 0.50, 0.60, 0.35, 0.85])
_CATEGORY_RISK = np.array([-0.6, -0.5, -0.3, -0.4, 0.0, 0.3, 0.0, 0.7, 0.8, 0.9])

# Share of the hour of day for ordinary spending: quiet nights, a lunch and evening peak.
# fmt: off
_HOURLY = np.array([
    1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4.0, 5.0, 5.5, 6.0,
    7.0, 6.5, 5.5, 5.0, 5.5, 6.5, 7.5, 7.0, 6.0, 4.5, 3.0, 2.0,
])
# fmt: on
_HOURLY = _HOURLY / _HOURLY.sum()

_BURST_SHARE = 0.04  # of transactions that belong to card-testing / account-takeover bursts
_TARGET_FRAUD_RATE = 0.025
_DAY_MS = 86_400_000


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInput(
            f"The {name!r} parameter of make_fraud_transactions must be a positive integer. "
            f"Got {value!r} instead."
        )
    return int(value)


def _end_millis(end: datetime | pd.Timestamp | None) -> int:
    if end is None:
        end = datetime.now(UTC)
    if not isinstance(end, datetime):
        raise InvalidInput(
            "The 'end' parameter of make_fraud_transactions must be a timezone-aware datetime "
            f"or None. Got {end!r} instead."
        )
    if end.tzinfo is None or end.utcoffset() is None:
        # A naive time would silently shift every timestamp by the local offset.
        raise InvalidInput(
            "The 'end' parameter of make_fraud_transactions must be timezone-aware "
            f"(for example datetime.now(UTC)). Got the naive {end!r} instead."
        )
    return int(pd.Timestamp(end).tz_convert("UTC").value // 1_000_000)


def _counts_in_window(keys: np.ndarray, window: int) -> np.ndarray:
    """For sorted keys, how many earlier entries lie within ``window`` (exclusive of self)."""
    position = np.arange(keys.size)
    return position - np.searchsorted(keys, keys - window, side="left")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


def _calibrate_intercept(z: np.ndarray, rate: float) -> float:
    """Bisection on the intercept so the expected label rate hits ``rate`` for any size."""
    lo, hi = -30.0, 30.0
    for _ in range(32):  # interval below 1e-8: far finer than the Bernoulli noise
        mid = (lo + hi) / 2.0
        if _sigmoid(z + mid).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def make_fraud_transactions(
    n_transactions: int = 50_000,
    n_users: int = 2_000,
    n_merchants: int = 300,
    days: int = 90,
    seed: int = 7,
    end: datetime | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Card transactions with an ``is_fraud`` label, ordered by ``event_timestamp``.

    The frame is a pure function of the arguments, except that ``end=None`` means "now":
    pass a fixed ``end`` where byte-for-byte reproducibility matters. Ids are integers so
    they can serve directly as feature-store join keys; ``transaction_id`` follows time
    order. ``user_avg_amount`` and ``txns_last_24h`` look only at the user's earlier
    transactions, so they are point-in-time correct and safe to train on.
    """
    n = _positive_int("n_transactions", n_transactions)
    n_users = _positive_int("n_users", n_users)
    n_merchants = _positive_int("n_merchants", n_merchants)
    days = _positive_int("days", days)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidInput(
            "The 'seed' parameter of make_fraud_transactions must be an integer. "
            f"Got {seed!r} instead."
        )
    end_ms = _end_millis(end)
    window_ms = days * _DAY_MS
    start_ms = end_ms - window_ms
    midnight_ms = start_ms - start_ms % _DAY_MS  # hours of day are drawn from midnight UTC
    rng = np.random.default_rng(int(seed))

    # Who: users differ in how often, how much, how far from home and how online they shop.
    user_activity = rng.gamma(shape=1.2, scale=1.0, size=n_users)
    user_activity /= user_activity.sum()
    user_spend = np.exp(rng.normal(3.4, 0.6, size=n_users))  # median about 30 per purchase
    user_radius_km = np.exp(rng.normal(1.8, 0.6, size=n_users))  # median about 6 km
    user_online = rng.beta(2.0, 5.0, size=n_users)

    # Where: merchants belong to a category and differ in popularity.
    merchant_category = rng.choice(len(MERCHANT_CATEGORIES), size=n_merchants, p=_CATEGORY_SHARE)
    merchant_popularity = rng.pareto(1.5, size=n_merchants) + 1.0
    merchant_popularity /= merchant_popularity.sum()
    risky = _CATEGORY_RISK[merchant_category] > 0.2
    burst_merchant_weight = np.where(risky, 6.0, 1.0) * merchant_popularity
    burst_merchant_weight /= burst_merchant_weight.sum()

    # Ordinary spending: activity-weighted users, popularity-weighted merchants, daily cycle.
    n_burst = min(round(n * _BURST_SHARE), n - 1) if n > 1 else 0
    n_plain = n - n_burst
    user = np.empty(n, dtype=np.int64)
    merchant = np.empty(n, dtype=np.int64)
    ts = np.empty(n, dtype=np.int64)
    user[:n_plain] = rng.choice(n_users, size=n_plain, p=user_activity)
    merchant[:n_plain] = rng.choice(n_merchants, size=n_plain, p=merchant_popularity)
    day = rng.integers(0, days, size=n_plain)
    hour_of_day = rng.choice(24, size=n_plain, p=_HOURLY)
    ts[:n_plain] = (
        midnight_ms
        + day * _DAY_MS
        + hour_of_day * 3_600_000
        + rng.integers(0, 3_600_000, size=n_plain)
    )

    # Bursts: a compromised card used several times within hours, mostly at night, online,
    # far from home and at risky merchants. They give the velocity feature its meaning.
    burst = np.zeros(n, dtype=bool)
    burst[n_plain:] = True
    if n_burst:
        sizes = rng.integers(2, 9, size=max(1, n_burst // 4))
        sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_burst) + 1]
        sizes[-1] -= sizes.sum() - n_burst
        sizes = sizes[sizes > 0]
        incident = np.repeat(np.arange(sizes.size), sizes)
        first = np.cumsum(sizes) - sizes
        gap = rng.exponential(25 * 60_000, size=n_burst)
        gap[first] = 0.0
        offset = np.cumsum(gap)
        offset -= np.repeat(offset[first], sizes)
        night_start = (rng.integers(0, days, size=sizes.size) * _DAY_MS) + (
            (rng.normal(2.0, 3.0, size=sizes.size) % 24) * 3_600_000
        ).astype(np.int64)
        user[n_plain:] = rng.integers(0, n_users, size=sizes.size)[incident]
        merchant[n_plain:] = rng.choice(n_merchants, size=n_burst, p=burst_merchant_weight)
        ts[n_plain:] = midnight_ms + night_start[incident] + offset.astype(np.int64)
    # Shifting by whole days keeps the hour of day, so wrap into the window instead of
    # clipping (which would pile transactions up at its edges).
    ts = start_ms + (ts - start_ms) % window_ms

    category = merchant_category[merchant]
    basket = _CATEGORY_BASKET[category] * np.exp(rng.normal(0.0, 0.55, size=n))
    basket[burst] *= np.exp(rng.normal(0.9, 0.7, size=n_burst))
    amount = np.round(np.maximum(user_spend[user] * basket, 0.5), 2)

    online_p = 0.5 * user_online[user] + 0.5 * _CATEGORY_ONLINE[category]
    online_p[burst] = 0.5 + 0.5 * online_p[burst]
    is_online = rng.random(n) < online_p

    travelling = rng.random(n) < 0.02
    distance = user_radius_km[user] * np.exp(rng.normal(0.0, 0.8, size=n))
    distance[travelling] = np.exp(rng.normal(5.5, 1.0, size=int(travelling.sum())))
    distance[burst] *= np.exp(rng.normal(2.5, 1.2, size=n_burst))
    distance = np.round(np.minimum(distance, 20_000.0), 1)  # half the Earth's circumference

    # Time order, then per-user history in (user, time) order.
    order = np.argsort(ts, kind="stable")
    user, merchant, ts, category = user[order], merchant[order], ts[order], category[order]
    amount, is_online, distance = amount[order], is_online[order], distance[order]
    noise_key = rng.normal(0.0, 1.0, size=n)

    by_user = np.lexsort((ts, user))
    span = np.int64(window_ms + 2 * _DAY_MS)
    keys = user[by_user] * span + (ts[by_user] - start_ms)
    velocity = np.empty(n, dtype=np.int64)
    velocity[by_user] = _counts_in_window(keys, _DAY_MS)

    # The user's typical spend from earlier purchases only, shrunk toward the population
    # median so a user's first purchases do not get an extreme ratio.
    prior_weight = 3.0
    prior = float(np.median(amount))
    sorted_user = user[by_user]
    group_start = np.r_[0, np.flatnonzero(np.diff(sorted_user)) + 1]
    group_len = np.diff(np.r_[group_start, n])
    cum = np.cumsum(amount[by_user]) - amount[by_user]
    seen = np.arange(n) - np.repeat(group_start, group_len)
    cum -= np.repeat(cum[group_start], group_len)
    user_avg = np.empty(n, dtype=np.float64)
    user_avg[by_user] = (cum + prior_weight * prior) / (seen + prior_weight)
    user_avg = np.round(user_avg, 2)
    ratio = amount / user_avg
    hour = (ts // 3_600_000) % 24

    night = ((hour <= 4) | (hour >= 23)).astype(np.float64)
    z = (
        1.0 * np.log(ratio)
        + 0.8 * is_online
        + 0.35 * np.log1p(distance)
        + 0.7 * np.log1p(velocity)
        + 0.9 * night
        + _CATEGORY_RISK[category]
        + 1.1 * noise_key
    )
    p = _sigmoid(z + _calibrate_intercept(z, _TARGET_FRAUD_RATE))
    is_fraud = rng.random(n) < p

    return pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64),
            "user_id": user,
            "merchant_id": merchant,
            "event_timestamp": pd.to_datetime(ts, unit="ms", utc=True),
            "amount": amount,
            "merchant_category": pd.Categorical.from_codes(
                category, categories=list(MERCHANT_CATEGORIES)
            ),
            "hour": hour.astype(np.int64),
            "is_online": is_online,
            "distance_km": distance,
            "user_avg_amount": user_avg,
            "amount_ratio": np.round(ratio, 4),
            "txns_last_24h": velocity,
            "is_fraud": is_fraud,
        }
    )


def train_valid_split(
    df: pd.DataFrame, valid_fraction: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the latest rows, as production does: a model is judged on the future.

    A random split would leak tomorrow's bursts into training and overstate accuracy.
    Rows are ordered by ``event_timestamp`` (stable, so ties keep their order) and the
    original index is kept so predictions can be joined back.
    """
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, int | float):
        raise InvalidInput(
            "The 'valid_fraction' parameter of train_valid_split must be a float in (0, 1). "
            f"Got {valid_fraction!r} instead."
        )
    if not 0.0 < float(valid_fraction) < 1.0:
        raise InvalidInput(
            "The 'valid_fraction' parameter of train_valid_split must be a float in (0, 1). "
            f"Got {valid_fraction!r} instead."
        )
    if "event_timestamp" not in df.columns:
        raise InvalidInput(
            "train_valid_split needs an 'event_timestamp' column to split by time; "
            f"columns: {', '.join(map(str, df.columns))}"
        )
    if len(df) < 2:
        raise InvalidInput(
            f"train_valid_split needs at least 2 rows to make two non-empty parts; got {len(df)}"
        )
    ordered = df
    if not df["event_timestamp"].is_monotonic_increasing:
        ordered = df.sort_values("event_timestamp", kind="stable")
    n_valid = min(max(1, math.ceil(len(df) * float(valid_fraction))), len(df) - 1)
    cut = len(df) - n_valid
    return ordered.iloc[:cut], ordered.iloc[cut:]
