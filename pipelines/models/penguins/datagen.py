"""Synthetic penguins for one day: three species with Palmer-like measurements, some values missing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.models.penguins.features import ISLANDS, SCHEMA, SPECIES

_SHARE = np.array([0.44, 0.20, 0.36])
# per species: mean and std of bill length, bill depth, flipper length, body mass; island weights
_MEASURES = np.array([
    [[38.8, 2.7], [18.3, 1.2], [190.0, 6.5], [3700.0, 460.0]],
    [[48.8, 3.3], [18.4, 1.1], [196.0, 7.1], [3733.0, 384.0]],
    [[47.5, 3.1], [15.0, 1.0], [217.0, 6.5], [5076.0, 504.0]],
])
_ISLANDS = np.array([[0.30, 0.35, 0.35], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def generate_day(day: dt.date, rows: int, rng: np.random.Generator, day_index: int) -> pa.Table:
    species = rng.choice(3, rows, p=_SHARE)
    columns = {}
    for j, name in enumerate(("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")):
        mean, std = _MEASURES[species, j, 0], _MEASURES[species, j, 1]
        values = rng.normal(mean * (1 + 0.002 * np.sin(day_index / 30)), std).astype(np.float32).round(1)
        columns[name] = pa.array(values, mask=rng.random(rows) < 0.02)
    island = np.array([rng.choice(3, p=_ISLANDS[s]) for s in species])
    columns["island"] = pa.array(np.array(ISLANDS, dtype=object)[island], mask=rng.random(rows) < 0.01)
    columns["sex"] = pa.array(np.where(rng.random(rows) < 0.5, "female", "male").astype(object),
                              mask=rng.random(rows) < 0.05)
    columns["species"] = pa.array(np.array(SPECIES, dtype=object)[species])
    return pa.table(columns).cast(SCHEMA.arrow_schema())
