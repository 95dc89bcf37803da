"""After ``./dev demo``, the scheduler takes over: unpaused, the DAG gets its next scheduled run created beside
the demo's run (the demo's logical date is never a scheduled one), and the demo's run keeps its history."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import subprocess
import sys

import pytest

from skewfree.demo import yesterday
from tests.conftest import ROOT, airflow_env, run_demo, task_states

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_the_scheduler_creates_the_next_run_after_the_demo(tmp_path):
    env = airflow_env(tmp_path)
    end = yesterday()  # as ./dev demo: the latest complete day, the interval the scheduler wants next too
    out = run_demo(env, end=end, rows_per_day=1500)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert task_states(out.stdout)["rollout"] == "success"

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    assert airflow("dags", "unpause", "taxi_retrain").returncode == 0
    # no slot for tasks: this test watches run creation, it does not run the pipeline a second time
    assert airflow("pools", "set", "default_pool", "0", "no task runs in this test").returncode == 0
    scheduler = airflow("scheduler", "--num-runs", "3")
    log = scheduler.stdout + scheduler.stderr
    assert scheduler.returncode == 0, log[-4000:]
    assert "already exists" not in log, log[-4000:]

    with contextlib.closing(sqlite3.connect(tmp_path / "airflow" / "airflow.db")) as db:
        runs = db.execute("SELECT run_id, run_type, logical_date, data_interval_start, state, start_date, end_date "
                          "FROM dag_run WHERE dag_id = 'taxi_retrain' ORDER BY id").fetchall()
    [demo] = [r for r in runs if r[1] == "manual"]
    [scheduled] = [r for r in runs if r[1] == "scheduled"]
    # the scheduler's run is the latest complete interval (catchup off): the day the demo trained on
    assert dt.datetime.fromisoformat(scheduled[3]).date() == end, runs
    assert dt.datetime.fromisoformat(scheduled[2]).time() == dt.time(), runs  # scheduled runs sit at midnight
    assert scheduled[4] in ("queued", "running"), runs
    # the demo's run is intact: a success whose duration is its run time, not the days to the next interval
    assert demo[4] == "success" and dt.datetime.fromisoformat(demo[2]).time() != dt.time(), runs
    duration = dt.datetime.fromisoformat(demo[6]) - dt.datetime.fromisoformat(demo[5])
    assert dt.timedelta(0) < duration < dt.timedelta(minutes=30), runs
