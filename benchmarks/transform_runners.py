"""Print transform's speed, peak memory and cores used per Beam local runner setting (no assertions).

usage: python benchmarks/transform_runners.py [--rows 200000 1000000] [--settings default multi_processing ...]
Generates taxi data (7 partitions) per size, validates once, then runs ``python -m pipelines transform --force``
in a fresh process per runner setting and reads the process tree's CPU time and peak RSS from the kernel
(``getrusage(RUSAGE_CHILDREN)`` in an intermediate process per run). ``cores used`` = CPU seconds / wall seconds: 1.0 means one core did the work.
Issue 14 target: >= 1.5x the default's rows/s at 1M rows on 2 cores, with the same outputs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = os.cpu_count() or 2
SETTINGS = {
    "default": ["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"],
    "multi_processing": ["--runner=FnApiRunner", f"--direct_num_workers={WORKERS}",
                         "--direct_running_mode=multi_processing"],
    "multi_threading": ["--runner=FnApiRunner", f"--direct_num_workers={WORKERS}",
                        "--direct_running_mode=multi_threading"],
}


# each run in its own intermediate process, so getrusage(RUSAGE_CHILDREN) covers that run's process tree only
MEASURE = """
import json, resource, subprocess, sys
code = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": code.returncode, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                  "stderr": code.stderr[-3000:]}))
"""


def run(setting: str, art: Path, end: dt.date) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (GiB, the largest process of the tree) of one transform."""
    import json

    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "pipelines", "transform", "--model",
                          "taxi", "--interval", str(end), "--artifact-root", str(art), "--force",
                          *(f"--beam-arg={a}" for a in SETTINGS[setting])],
                         cwd=ROOT, capture_output=True, text=True,
                         env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    if measured["rc"]:
        raise SystemExit(f"{setting}: transform failed\n{measured['stderr']}")
    return wall, measured["cpu"], measured["maxrss_kib"] / 2**20


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from pipelines.config import load_model_config
    from pipelines.datagen import generate_data
    from pipelines.validate import validate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    config = load_model_config("taxi")
    end = dt.date(2026, 11, 22)
    days = config.data.lookback_days + 1
    print(f"{os.cpu_count()} cores; one fresh process tree per run; peak = its largest process's RSS")
    print(f"{'rows':>9} {'setting':<17} {'wall s':>7} {'rows/s':>9} {'vs default':>10} {'cores used':>10} "
          f"{'peak GiB':>8}")
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            data, validated = Path(tmp) / "data", Path(tmp) / "validated"
            generate_data(config, data_root=str(data), end=end, days=days, rows_per_day=rows // days)
            validate(config, interval=end, data_root=str(data), artifact_root=validated)
            base = None
            for setting in args.settings:
                art = Path(tmp) / setting
                shutil.copytree(validated, art)
                wall, cpu, peak = run(setting, art, end)
                speed = rows / wall
                base = base or speed
                print(f"{rows:>9} {setting:<17} {wall:>7.1f} {speed:>9.0f} {speed / base:>9.2f}x {cpu / wall:>10.2f} "
                      f"{peak:>8.2f}")


if __name__ == "__main__":
    main()
