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


def cli(env: dict[str, str]):
    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
    return airflow


def schedule(env: dict[str, str], home) -> list[tuple]:
    """Unpause taxi_retrain and run the scheduler for 3 loops with no slot for tasks (this watches run creation,
    it does not run the pipeline); every run of the DAG then, with its note."""
    airflow = cli(env)
    assert airflow("dags", "unpause", "taxi_retrain").returncode == 0
    assert airflow("pools", "set", "default_pool", "0", "no task runs in this test").returncode == 0
    scheduler = airflow("scheduler", "--num-runs", "3")
    log = scheduler.stdout + scheduler.stderr
    assert scheduler.returncode == 0, log[-4000:]
    assert "already exists" not in log, log[-4000:]
    with contextlib.closing(sqlite3.connect(home / "airflow" / "airflow.db")) as db:
        return db.execute("SELECT dag_run.run_id, dag_run.run_type, dag_run.logical_date, "
                          "dag_run.data_interval_start, dag_run.state, dag_run.start_date, dag_run.end_date, "
                          "dag_run_note.content FROM dag_run LEFT JOIN dag_run_note ON dag_run_note.dag_run_id = "
                          "dag_run.id WHERE dag_id = 'taxi_retrain' ORDER BY dag_run.id").fetchall()


def test_the_scheduler_creates_the_next_run_after_the_demo(tmp_path):
    env = airflow_env(tmp_path)
    end = yesterday()  # as ./dev demo: the latest complete day, the interval the scheduler wants next too
    out = run_demo(env, end=end, rows_per_day=1500)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert task_states(out.stdout)["rollout"] == "success"

    runs = schedule(env, tmp_path)
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


def test_a_manual_run_on_a_scheduled_runs_date_gives_it_back(tmp_path):
    """A manual run given a scheduled run's logical date (a date without a time of day: midnight) took that
    run's place for good: Airflow keeps one run per logical date, so the scheduler logged "run already exists;
    skipping dagrun creation" on every loop and the daily schedule stopped there (a user trial). The run is
    refused before anything runs, and when it ends its logical date is cleared: the scheduler then creates the
    scheduled run, and the refused run keeps its note."""
    env = airflow_env(tmp_path)

    airflow = cli(env)
    assert airflow("db", "migrate").returncode == 0
    day = yesterday()  # the scheduled run the scheduler wants to create now (catchup off): its logical date
    refused = airflow("dags", "test", "taxi_retrain", day.isoformat())
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "which one DAG may have only once" in out, out[-4000:]
    assert "cleared, so that the scheduler creates that run" in out, out[-4000:]

    runs = schedule(env, tmp_path)
    [manual] = [r for r in runs if r[1] == "manual"]
    [scheduled] = [r for r in runs if r[1] == "scheduled"]
    assert dt.datetime.fromisoformat(scheduled[2]) == dt.datetime.combine(day, dt.time()), runs  # (UTC, naive)
    assert manual[2] is None and manual[4] == "failed", runs
    assert manual[7].startswith("failed in validate: this manual run's logical date"), runs
