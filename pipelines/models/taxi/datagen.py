"""Synthetic Chicago-taxi-like trips for one day, in the spirit of the TFX taxi example.

Numeric features are skewed and sometimes missing, there is a low- and a
high-cardinality string with rare values, coordinates, hour and weekday, and a
binary ``tipped`` label (about a quarter positive) that depends on the features
non-linearly. ``day_index`` drives a gentle drift across days.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.models.taxi.features import PAYMENT_TYPES, SCHEMA

_PAYMENT_P = np.array([0.50, 0.36, 0.06, 0.04, 0.02, 0.012, 0.008])
_N_COMPANIES = 400
# Pickup hubs: downtown, O'Hare, Midway, north side, south side (lat, lon, weight)
_HUBS = np.array(
    [[41.882, -87.630, 0.55], [41.979, -87.905, 0.12], [41.786, -87.752, 0.08],
     [41.940, -87.655, 0.15], [41.795, -87.600, 0.10]]
)


def _companies() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)  # fixed: the same fleet every day
    first = ["Blue", "Yellow", "Checker", "City", "Sun", "Flash", "Star", "Lake", "Windy", "Metro"]
    second = ["Cab", "Taxi", "Service", "Transit", "Rides", "Fleet", "Car", "Express"]
    names = np.array([f"{first[i % 10]} {second[(i // 10) % 8]} {i:03d}" for i in range(_N_COMPANIES)])
    popularity = 1.0 / np.arange(1, _N_COMPANIES + 1) ** 1.2  # Zipf: a long tail of rare companies
    effect = rng.normal(0.0, 0.6, _N_COMPANIES)  # some fleets' riders tip more
    return names, popularity / popularity.sum(), effect


_COMPANY_NAMES, _COMPANY_P, _COMPANY_EFFECT = _companies()


def generate_day(day: dt.date, rows: int, rng: np.random.Generator, day_index: int) -> pa.Table:
    drift = day_index / 365.0
    n = rows
    # morning peak, evening peak, and trips spread over the day
    component = rng.choice(3, n, p=[0.35, 0.45, 0.20])
    hour = np.select(
        [component == 0, component == 1], [rng.normal(8.5, 1.5, n), rng.normal(17.5, 2.5, n)],
        rng.uniform(0, 24, n),
    )
    hour = np.floor(hour).astype(np.int64) % 24

    hub = rng.choice(len(_HUBS), n, p=_HUBS[:, 2] / _HUBS[:, 2].sum())
    plat = _HUBS[hub, 0] + rng.normal(0, 0.02, n)
    plon = _HUBS[hub, 1] + rng.normal(0, 0.02, n)
    airport = np.isin(hub, [1, 2])

    miles = rng.lognormal(mean=0.6 + 0.1 * drift + 1.2 * airport, sigma=0.9, size=n).clip(0.1, 300)
    angle = rng.uniform(0, 2 * np.pi, n)
    dlat = (plat + np.sin(angle) * miles / 69.0 * 0.6).clip(41.61, 42.09)
    dlon = (plon + np.cos(angle) * miles / 51.0 * 0.6).clip(-87.99, -87.51)
    seconds = (miles * rng.normal(190, 40, n).clip(60) + rng.exponential(120, n)).round().astype(np.int64)
    fare = (3.25 + 2.25 * miles + 0.004 * seconds + rng.gamma(1.0, 0.8, n)).round(2)

    payment_p = _PAYMENT_P.copy()
    payment_p[0] += 0.05 * drift  # card share creeps up
    payment_p[1] -= 0.05 * drift
    payment = rng.choice(len(PAYMENT_TYPES), n, p=payment_p / payment_p.sum())
    company = rng.choice(_N_COMPANIES, n, p=_COMPANY_P)

    card_like = np.isin(payment, [0, 2, 3])
    night = (hour >= 22) | (hour <= 4)
    logit = (
        -3.3
        + 2.9 * card_like
        - 2.5 * (payment == 1)
        + 0.9 * np.tanh(np.log1p(miles) - 1.2)
        + 0.8 * night * card_like
        - 0.6 * ((hour >= 7) & (hour <= 9))
        + 0.9 * airport * card_like
        - 0.7 * (fare / np.maximum(miles, 0.5) > 6.0)
        + _COMPANY_EFFECT[company]
        + 0.15 * np.sin(2 * np.pi * (day.weekday() + hour / 24) / 7)
    )
    tipped = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    def with_missing(values: np.ndarray, rate: float, mask: np.ndarray | None = None) -> pa.Array:
        missing = rng.random(n) < rate if mask is None else mask
        return pa.array(values, mask=missing)

    coords_missing = rng.random(n) < 0.03
    columns = {
        "trip_miles": with_missing(miles.astype(np.float32).round(3), 0.02),
        "fare": with_missing(fare.astype(np.float32), 0.01),
        "trip_seconds": with_missing(seconds, 0.015),
        "pickup_hour": pa.array(hour),
        "pickup_day_of_week": pa.array(np.full(n, day.weekday(), np.int64)),
        "payment_type": with_missing(np.array(PAYMENT_TYPES, dtype=object)[payment], 0.005),
        "company": with_missing(_COMPANY_NAMES[company].astype(object), 0.08),
        "pickup_latitude": with_missing(plat.astype(np.float32).round(5), 0.0, coords_missing),
        "pickup_longitude": with_missing(plon.astype(np.float32).round(5), 0.0, coords_missing),
        "dropoff_latitude": with_missing(dlat.astype(np.float32).round(5), 0.0, coords_missing),
        "dropoff_longitude": with_missing(dlon.astype(np.float32).round(5), 0.0, coords_missing),
        "tipped": pa.array(tipped),
    }
    return pa.table(columns).cast(SCHEMA.arrow_schema())
