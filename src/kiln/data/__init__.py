"""Layer 2: datasets for training and evaluation.

For now this is the seeded synthetic fraud dataset the demo, tests and benchmarks share;
snapshots, schemas and quality gates will join it here.
"""

from kiln.data.synthetic import (
    FRAUD_FEATURES,
    MERCHANT_CATEGORIES,
    make_fraud_transactions,
    train_valid_split,
)

__all__ = [
    "FRAUD_FEATURES",
    "MERCHANT_CATEGORIES",
    "make_fraud_transactions",
    "train_valid_split",
]
