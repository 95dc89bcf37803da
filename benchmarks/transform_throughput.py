"""Print how fast validate and the TFT transform step run on generated taxi data (no assertions).

usage: python benchmarks/transform_throughput.py [--rows-per-day 20000] [--format csv|parquet]
The window is lookback_days + 1 partitions (7 for taxi): 6 analyzed and transformed, 1 transformed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path


def main() -> None:
    from pipelines.config import load_model_config
    from pipelines.datagen import generate_data
    from pipelines.transform import transform
    from pipelines.validate import validate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    args = parser.parse_args()

    config = load_model_config("taxi")
    end = dt.date(2026, 11, 22)
    days = config.data.lookback_days + 1
    with tempfile.TemporaryDirectory() as tmp:
        data, art = Path(tmp) / "data", Path(tmp) / "artifacts"
        started = time.perf_counter()
        generate_data(config, data_root=str(data), end=end, days=days, rows_per_day=args.rows_per_day,
                      fmt=args.format)
        generated = time.perf_counter() - started
        if args.format != config.data.format:
            import dataclasses

            config = dataclasses.replace(config, data=dataclasses.replace(config.data, format=args.format))
        started = time.perf_counter()
        validated = validate(config, interval=end, data_root=str(data), artifact_root=art)
        validate_s = time.perf_counter() - started
        started = time.perf_counter()
        result = transform(config, interval=end, artifact_root=art, force=True)
        transform_s = time.perf_counter() - started
    rows = sum(result.rows.values())
    print(f"format {args.format}: {days} partitions x {args.rows_per_day} rows = {validated.total_rows} rows")
    print(f"generate  {generated:7.1f} s")
    print(f"validate  {validate_s:7.1f} s  {validated.total_rows / validate_s:10.0f} rows/s")
    print(f"transform {transform_s:7.1f} s  {rows / transform_s:10.0f} rows/s (TFT analyze + transform, "
          f"DirectRunner, incl. TF/Beam start-up)")


if __name__ == "__main__":
    main()
