import datetime as dt

import pyarrow.compute as pc

from pipelines.datagen import generate_data
from pipelines.models.taxi.features import SCHEMA
from pipelines.storage import partition_files, read_files


def test_same_date_same_bytes_and_rerun_rewrites_nothing(tmp_path, taxi_config):
    end = dt.date(2026, 11, 5)
    first = generate_data(taxi_config, data_root=str(tmp_path / "a"), end=end, days=2, rows_per_day=500)
    generate_data(taxi_config, data_root=str(tmp_path / "b"), end=end, days=1, rows_per_day=500)
    path = "taxi_trips/dt=2026-11-05/part-00000.csv"
    assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
    assert (first.written, first.unchanged) == (2, 0)
    again = generate_data(taxi_config, data_root=str(tmp_path / "a"), end=end, days=2, rows_per_day=500)
    assert (again.written, again.unchanged) == (0, 2)
    assert first.partitions[0].endswith("dt=2026-11-04")


def test_realistic_taxi_day(small_data, taxi_config):
    files = partition_files(small_data / "taxi_trips" / "dt=2026-11-10", "csv")
    table = read_files(files, "csv", SCHEMA)
    assert table.num_rows == 1000
    every_day = read_files(sorted(small_data.glob("taxi_trips/dt=*/*.csv")), "csv", SCHEMA)
    assert 0.20 <= pc.mean(every_day.column("tipped")).as_py() <= 0.30
    for nullable in ("trip_miles", "fare", "company", "pickup_latitude"):
        assert table.column(nullable).null_count > 0, nullable
    assert table.column("pickup_hour").null_count == 0
    companies = pc.value_counts(pc.drop_null(table.column("company")))
    counts = sorted(c["counts"].as_py() for c in companies)
    assert len(counts) > 50 and counts[0] <= 2  # high cardinality with rare values
    miles = pc.drop_null(table.column("trip_miles"))
    assert pc.mean(miles).as_py() > pc.approximate_median(miles).as_py()  # right-skewed


def test_parquet_partitions_read_like_csv(tmp_path, taxi_config):
    end = dt.date(2026, 11, 5)
    generate_data(taxi_config, data_root=str(tmp_path), end=end, days=1, rows_per_day=300, fmt="csv")
    generate_data(taxi_config, data_root=str(tmp_path), end=end, days=1, rows_per_day=300, fmt="parquet")
    part = tmp_path / "taxi_trips" / "dt=2026-11-05"
    from_csv = read_files(partition_files(part, "csv"), "csv", SCHEMA)
    from_parquet = read_files(partition_files(part, "parquet"), "parquet", SCHEMA)
    assert from_csv.equals(from_parquet)
