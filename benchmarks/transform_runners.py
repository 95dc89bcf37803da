"""Print transform's speed, peak memory and cores used per Beam local runner setting, beside a bare TFT script
(no assertions).

usage: python benchmarks/transform_runners.py [--rows 200000 1000000] [--settings default multi_processing ...]
Generates taxi data (7 partitions) per size, validates once, then runs ``python -m pipelines transform --force``
in a fresh process per runner setting, and ``benchmarks/bare_tft.py`` (a minimal AnalyzeAndTransformDataset
script on the same CSVs) the same way, and reads each process tree's CPU time and peak RSS from the kernel
(``getrusage(RUSAGE_CHILDREN)`` in an intermediate process per run). ``cores used`` = CPU seconds / wall seconds:
1.0 means one core did the work. ``busy`` is the profile over time: the cores the process tree kept busy in each
tenth of the run (sampled every 0.5 s), which shows the stages that leave cores idle.
``vs first`` compares each run with the first setting's, by default ``bare_tft``: the step as it read CSV before
(CsvTFXIO, as the bare script does), so ``default`` shows the step's speed-up from reading CSV with pyarrow.
Issue 14 target: >= 1.5x at 1M rows on 2 cores, with the same outputs.
"""

from __future__ import annotations

import argparse
import contextlib
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
BARE = {"bare_tft": SETTINGS["default"], "bare_tft_multi_processing": SETTINGS["multi_processing"]}


# each run in its own intermediate process, so getrusage(RUSAGE_CHILDREN) covers that run's process tree only
MEASURE = """
import json, resource, subprocess, sys
code = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": code.returncode, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                  "stderr": code.stderr[-3000:]}))
"""


def run(argv: list[str]) -> tuple[float, float, float, list[float]]:
    """Wall seconds, CPU seconds, peak RSS (GiB, the largest process of the tree) and the busy-cores profile of
    one command."""
    import json

    import psutil

    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", MEASURE, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True,
                               env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)})
    samples, seen = [], {}  # (seconds, cumulative CPU of the live tree plus what exited processes had used)
    while process.poll() is None:
        try:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    seen[p.pid] = times.user + times.system
        except psutil.Error:
            pass
        samples.append((time.perf_counter() - started, sum(seen.values())))
        time.sleep(0.5)
    out = process.communicate()[0]
    wall = time.perf_counter() - started
    measured = json.loads(out.strip().splitlines()[-1])
    if measured["rc"]:
        raise SystemExit(f"{argv[:4]}: failed\n{measured['stderr']}")
    return wall, measured["cpu"], measured["maxrss_kib"] / 2**20, busy_profile(samples, wall)


def busy_profile(samples: list[tuple[float, float]], wall: float, parts: int = 10) -> list[float]:
    """Cores busy in each tenth of the run, from cumulative CPU samples."""
    edges = [wall * k / parts for k in range(parts + 1)]
    profile = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        inside = [(t, c) for t, c in samples if lo <= t <= hi]
        if len(inside) < 2:
            profile.append(float("nan"))
            continue
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        profile.append((c1 - c0) / (t1 - t0) if t1 > t0 else float("nan"))
    return profile


def step_argv(setting: str, art: Path, end: dt.date) -> list[str]:
    return [sys.executable, "-m", "pipelines", "transform", "--model", "taxi", "--interval", str(end),
            "--artifact-root", str(art), "--force", *(f"--beam-arg={a}" for a in SETTINGS[setting])]


def bare_argv(setting: str, data: Path, end: dt.date, days: int, out: Path) -> list[str]:
    def files(day: dt.date) -> list[str]:
        return sorted(str(f) for f in (data / "taxi_trips" / f"dt={day}").glob("part-*.csv"))

    train = [f for d in range(days - 1, 0, -1) for f in files(end - dt.timedelta(days=d))]
    return [sys.executable, str(ROOT / "benchmarks" / "bare_tft.py"), "--train", *train, "--eval", *files(end),
            "--out", str(out), *BARE[setting]]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from pipelines.config import load_model_config
    from pipelines.datagen import generate_data
    from pipelines.validate import validate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--settings", nargs="+", default=["bare_tft", *SETTINGS, "bare_tft_multi_processing"],
                        choices=[*SETTINGS, *BARE])
    args = parser.parse_args()
    config = load_model_config("taxi")
    end = dt.date(2026, 11, 22)
    days = config.data.lookback_days + 1
    print(f"{os.cpu_count()} cores; one fresh process tree per run; peak = its largest process's RSS; busy = cores "
          "busy in each tenth of the run")
    print(f"{'rows':>9} {'setting':<26} {'wall s':>7} {'rows/s':>9} {'vs first':>10} {'cores used':>10} "
          f"{'peak GiB':>8}  busy")
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            data, validated = Path(tmp) / "data", Path(tmp) / "validated"
            generate_data(config, data_root=str(data), end=end, days=days, rows_per_day=rows // days)
            validate(config, interval=end, data_root=str(data), artifact_root=validated)
            base = None
            for setting in args.settings:
                if setting in BARE:
                    argv = bare_argv(setting, data, end, days, Path(tmp) / setting)
                else:
                    art = Path(tmp) / setting
                    shutil.copytree(validated, art)
                    argv = step_argv(setting, art, end)
                wall, cpu, peak, busy = run(argv)
                speed = rows / wall
                base = base or speed
                print(f"{rows:>9} {setting:<26} {wall:>7.1f} {speed:>9.0f} {speed / base:>9.2f}x {cpu / wall:>10.2f} "
                      f"{peak:>8.2f}  {' '.join(f'{b:.1f}' for b in busy)}", flush=True)


if __name__ == "__main__":
    main()
