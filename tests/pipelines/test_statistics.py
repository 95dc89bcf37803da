"""Distances on per-day statistics: small for the same distribution, large for a shift, fail closed."""

import numpy as np
import pyarrow as pa

from pipelines.schema import Feature
from pipelines.statistics import column_statistics, js_divergence, linf_distance, new_value_share

FLOAT = Feature("x", "float")


def stats(values) -> dict:
    return column_statistics(pa.array(values, pa.float32()), FLOAT)


def test_same_distribution_is_close_and_a_shift_is_far():
    rng = np.random.default_rng(0)
    reference = [stats(rng.lognormal(0, 1, 2000)) for _ in range(6)]
    assert js_divergence(stats(rng.lognormal(0, 1, 2000)), reference) < 0.02
    assert js_divergence(stats(rng.lognormal(0, 1, 2000) * 100), reference) > 0.6
    assert 0.1 < js_divergence(stats(rng.lognormal(0, 1, 2000) * 3), reference) < 0.9


def test_discrete_values_with_ties():
    rng = np.random.default_rng(1)
    reference = [stats(rng.integers(0, 24, 1000)) for _ in range(6)]
    assert js_divergence(stats(rng.integers(0, 24, 1000)), reference) < 0.02
    assert js_divergence(stats(np.full(1000, 3.0)), reference) > 0.5


def test_nan_and_inf_are_counted_and_kept_out_of_the_moments():
    s = stats([1.0, 2.0, float("nan"), float("inf"), None, 3.0])
    assert (s["count"], s["nulls"], s["nan"], s["inf"]) == (5, 1, 1, 1)
    assert (s["min"], s["max"], s["mean"]) == (1.0, 3.0, 2.0)
    assert js_divergence(stats([float("nan")] * 3), [s]) is None  # nothing finite to compare


def test_categorical_distances():
    assert linf_distance({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) == (0.4, "a")
    share, new = new_value_share({"a": 0.3, "z": 0.6, "y": 0.1}, {"a": 1.0})
    assert abs(share - 0.7) < 1e-9 and new == ["z", "y"]
    top = column_statistics(pa.array(["a", "b", "a", None]), Feature("s", "string"))
    assert top["top"] == [["a", 2], ["b", 1]] and top["distinct"] == 2 and top["nulls"] == 1
