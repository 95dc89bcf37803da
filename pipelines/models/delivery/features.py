"""The delivery-time contract: a regression example. Label ``delivery_minutes``, a float."""

from __future__ import annotations

from pipelines.schema import Feature, RawSchema

LABEL_KEY = "delivery_minutes"
WEATHER = ("clear", "rain", "snow", "fog")
NUMERIC_FEATURES = ("distance_km", "items", "courier_rating")
MISSING = "__missing__"

SCHEMA = RawSchema(
    features=(
        Feature("distance_km", "float", nullable=False, min=0.1, max=30.0),
        Feature("items", "int", nullable=False, min=1, max=40),
        Feature("hour", "int", nullable=False, min=0, max=23),
        Feature("weather", "string", values=WEATHER),
        Feature("courier_rating", "float", min=1.0, max=5.0),
        Feature(LABEL_KEY, "float", nullable=False, min=1.0, max=240.0),
    ),
    label=LABEL_KEY,
)


def transformed_name(key: str) -> str:
    return f"{key}_xf"
