"""The taxi model's feature contract, shared by preprocessing_fn, the model and validation.

TensorFlow-free on purpose: validation and the demo-data generator read it too.
"""

from __future__ import annotations

from pipelines.schema import Feature, RawSchema

PAYMENT_TYPES = ("Credit Card", "Cash", "Mobile", "Prcard", "Unknown", "No Charge", "Dispute")

LABEL_KEY = "tipped"

# z-scored after mean imputation, with a missing indicator
DENSE_FLOAT_FEATURES = ("trip_miles", "fare", "trip_seconds")
# bucketized into quantile buckets
BUCKET_FEATURES = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")
BUCKET_COUNT = 10
# integer categories used as they are: feature -> number of values
IDENTITY_FEATURES = {"pickup_hour": 24, "pickup_day_of_week": 7}
# strings mapped through a vocabulary: feature -> (top_k, num_oov_buckets, frequency_threshold)
VOCAB_FEATURES = {
    "payment_type": (None, 1, None),
    "company": (200, 10, 20),
}
MISSING_STRING = "__missing__"

SCHEMA = RawSchema(
    features=(
        Feature("trip_miles", "float", min=0.0, max=500.0),
        Feature("fare", "float", min=0.0, max=2000.0),
        Feature("trip_seconds", "int", min=0, max=86_400),
        Feature("pickup_hour", "int", nullable=False, min=0, max=23),
        Feature("pickup_day_of_week", "int", nullable=False, min=0, max=6),
        Feature("payment_type", "string", values=PAYMENT_TYPES),
        Feature("company", "string"),
        Feature("pickup_latitude", "float", min=41.6, max=42.1),
        Feature("pickup_longitude", "float", min=-88.0, max=-87.5),
        Feature("dropoff_latitude", "float", min=41.6, max=42.1),
        Feature("dropoff_longitude", "float", min=-88.0, max=-87.5),
        Feature(LABEL_KEY, "int", nullable=False, values=(0, 1)),
    ),
    label=LABEL_KEY,
)


def transformed_name(key: str) -> str:
    return f"{key}_xf"


def missing_name(key: str) -> str:
    return f"{key}_missing_xf"
