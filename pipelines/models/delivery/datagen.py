"""Synthetic food deliveries for one day: minutes grow with distance, items, rush hours and weather."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.models.delivery.features import SCHEMA, WEATHER

_WEATHER_P = np.array([0.6, 0.25, 0.05, 0.10])
_WEATHER_MINUTES = np.array([0.0, 5.0, 12.0, 3.0])
# quiet nights and mornings, a lunch peak (11-13) and a dinner peak (18-20)
_HOUR_P = np.r_[np.full(11, 0.02), np.full(3, 0.09), np.full(4, 0.03), np.full(3, 0.1), np.full(3, 0.02)]
_HOUR_P = _HOUR_P / _HOUR_P.sum()


def generate_day(day: dt.date, rows: int, rng: np.random.Generator, day_index: int) -> pa.Table:
    distance = rng.gamma(2.0, 2.2, rows).clip(0.1, 30.0)
    items = (rng.poisson(3.0, rows) + 1).clip(1, 40)
    hour = rng.choice(24, rows, p=_HOUR_P)
    weather = rng.choice(4, rows, p=_WEATHER_P)
    rating = rng.normal(4.3, 0.4, rows).clip(1.0, 5.0).round(2)
    rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
    minutes = (8 + 3.2 * distance + 0.6 * items + 6 * rush + _WEATHER_MINUTES[weather] + (5 - rating) * 2
               + rng.normal(0, 3, rows)).clip(1.0, 240.0).round(1)
    return pa.table({
        "distance_km": pa.array(distance.astype(np.float32).round(2)),
        "items": pa.array(items.astype(np.int64)),
        "hour": pa.array(hour.astype(np.int64)),
        "weather": pa.array(np.array(WEATHER, dtype=object)[weather], mask=rng.random(rows) < 0.03),
        "courier_rating": pa.array(rating.astype(np.float32), mask=rng.random(rows) < 0.1),
        "delivery_minutes": pa.array(minutes.astype(np.float32)),
    }).cast(SCHEMA.arrow_schema())
