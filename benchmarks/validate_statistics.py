"""Print what statistics and drift checks add to validate's wall time (no assertions).

usage: python benchmarks/validate_statistics.py [--rows 1000000] [--format csv|parquet] [--repeat 3]
Generates one taxi window (7 daily partitions, ``--rows`` rows in all), runs validate ``--repeat``
times and reports the best wall time beside the time spent in statistics (``partition_statistics``)
and in the window checks (``compare_day``), measured inside the same runs. Target: <= 20%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    import pipelines.validate as validate_module
    from pipelines.config import load_model_config
    from pipelines.datagen import generate_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    config = load_model_config("taxi")
    end = dt.date(2026, 11, 22)
    days = config.data.lookback_days + 1
    spent = {"statistics": 0.0, "window checks": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - started
        return wrapper

    validate_module.partition_statistics = timed("statistics", validate_module.partition_statistics)
    validate_module.compare_day = timed("window checks", validate_module.compare_day)
    def measure(tmp: str, label: str, daily: bool) -> None:
        runs = []
        for i in range(args.repeat):
            art = Path(tmp) / f"art-{label}-{i}"
            if daily:  # yesterday's run: today's reuses the statistics of the 6 days they share
                validate_module.validate(config, interval=end - dt.timedelta(days=1), data_root=tmp, artifact_root=art)
            for key in spent:
                spent[key] = 0.0
            started = time.perf_counter()
            result = validate_module.validate(config, interval=end, data_root=tmp, artifact_root=art)
            runs.append((time.perf_counter() - started, dict(spent), result.total_rows))
        wall, parts, rows = min(runs, key=lambda r: r[0])
        extra = sum(parts.values())
        print(f"validate, {label}: {rows:,} rows in {days} {args.format} partitions (best of {args.repeat}):")
        print(f"  wall time                 {wall:7.2f} s   ({rows / wall:,.0f} rows/s)")
        for name, seconds in parts.items():
            print(f"  of which {name:<16} {seconds:7.2f} s")
        print(f"  statistics + drift add    {extra / (wall - extra):7.1%} to the rest of validate (target <= 20%)")

    with tempfile.TemporaryDirectory() as tmp:
        generate_data(config, data_root=tmp, end=end, days=days + 1,
                      rows_per_day=args.rows // days, fmt=args.format)
        measure(tmp, "first run (every day's statistics computed)", daily=False)
        measure(tmp, "daily run (yesterday's statistics reused for 6 days)", daily=True)
    print(f"  peak RSS                  {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MiB")


if __name__ == "__main__":
    main()
