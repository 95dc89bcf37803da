"""The penguin-species contract: Palmer-penguins-like measurements, island and sex; label ``species``.

A multi-class example: the label is a string, and its class ids come from a TFT vocabulary
(``[task] label_vocabulary = "species"``), so the served ``classes`` output names the species.
"""

from __future__ import annotations

from pipelines.schema import Feature, RawSchema

LABEL_KEY = "species"
SPECIES = ("Adelie", "Chinstrap", "Gentoo")
ISLANDS = ("Biscoe", "Dream", "Torgersen")
NUMERIC_FEATURES = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
CATEGORICAL_FEATURES = ("island", "sex")
MISSING = "__missing__"

SCHEMA = RawSchema(
    features=(
        Feature("bill_length_mm", "float", min=25.0, max=70.0),
        Feature("bill_depth_mm", "float", min=10.0, max=25.0),
        Feature("flipper_length_mm", "float", min=160.0, max=240.0),
        Feature("body_mass_g", "float", min=2000.0, max=7000.0),
        Feature("island", "string", values=ISLANDS),
        Feature("sex", "string", values=("female", "male")),
        Feature(LABEL_KEY, "string", nullable=False, values=SPECIES),
    ),
    label=LABEL_KEY,
)


def transformed_name(key: str) -> str:
    return f"{key}_xf"
