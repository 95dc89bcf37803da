"""A two-day backfill through Airflow's own backfill machinery on the local stack.

`airflow standalone` (api-server, scheduler, dag-processor, triggerer; LocalExecutor on SQLite) in
a temporary home, the local model server, then `airflow backfill create --run-backwards`, exactly as
a user would. Newest day first, so the older day runs while a newer model serves: it is published
(lineage, rollback) and must not replace it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from skewfree.standalone import standalone_env
from tests.conftest import ROOT, airflow_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
END = dt.date(2026, 11, 10)


def airflow(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Airflow's CLI the way the README says to run it beside `./dev airflow`: `./dev airflow COMMAND ...`."""
    cli_env = {k: v for k, v in env.items() if k != "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"}  # (it adds it)
    return subprocess.run([sys.executable, "-m", "skewfree.standalone", *args], env=cli_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=check)


def dag_runs(env) -> list[dict]:
    out = airflow(env, "dags", "list-runs", "taxi_retrain", "-o", "json", check=False)
    # log lines (warnings) may precede the JSON table on stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("[{") or line == "[]"]
    return json.loads(lines[-1]) if lines else []


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    from pipelines.config import load_model_config
    from pipelines.datagen import generate_data

    home = tmp_path_factory.mktemp("standalone")
    api_port, server_port = free_port(), free_port()
    # the environment `./dev airflow` gives standalone: two executor slots, SQLite busy timeout, model server
    env = standalone_env(airflow_env(home), api_port=api_port, model_server_url=f"http://127.0.0.1:{server_port}")
    generate_data(load_model_config("taxi"), data_root=str(home / "data"), end=END, days=8, rows_per_day=1500)
    config = home / "serving" / "models.config"
    config.parent.mkdir(parents=True)
    config.write_text("model_config_list {\n}\n")
    logs = home / "logs"
    logs.mkdir()
    server = subprocess.Popen([sys.executable, "-m", "pipelines", "serve", "--model-config-file", str(config),
                               "--port", str(server_port)], env=env, cwd=ROOT,
                              stdout=open(logs / "serve.log", "w"), stderr=subprocess.STDOUT)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", "skewfree_training", "1", "concurrent training runs")
    standalone = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, cwd=ROOT,
                                  stdout=open(logs / "standalone.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "taxi_retrain" not in airflow(env, "dags", "list", "-o", "plain", check=False).stdout:
            assert time.monotonic() < deadline, (logs / "standalone.log").read_text()[-4000:]
            time.sleep(3)
        airflow(env, "dags", "unpause", "taxi_retrain")
        yield {"env": env, "home": home, "server": f"http://127.0.0.1:{server_port}", "logs": logs}
    finally:
        os.killpg(standalone.pid, signal.SIGTERM)
        try:
            standalone.wait(timeout=60)
            time.sleep(5)  # components finish shutting down after the leader exits
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(standalone.pid, signal.SIGKILL)  # nothing of this stack outlives the test
        server.terminate()
        server.wait(timeout=30)


def test_backfill_newest_first_never_regresses_serving(local_stack):
    from pipelines.serving.client import ModelServerClient

    env = local_stack["env"]
    for _ in range(3):  # SQLite under a running scheduler and dag-processor: "database is locked" is retried
        created = airflow(env, "backfill", "create", "--dag-id", "taxi_retrain", "--from-date", "2026-11-09",
                          "--to-date", "2026-11-10", "--max-active-runs", "1", "--run-backwards", check=False)
        if "database is locked" not in created.stdout + created.stderr:
            break
        time.sleep(5)
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
    deadline = time.monotonic() + 1200
    while True:
        runs = [r for r in dag_runs(env) if r["run_id"].startswith("backfill__")]
        if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs):
            break
        assert time.monotonic() < deadline, f"backfill did not finish: {runs}"
        time.sleep(5)
    assert sorted(r["state"] for r in runs) == ["success"] * 2, runs
    serving = local_stack["home"] / "serving" / "taxi"
    assert sorted(p.name for p in serving.iterdir() if p.name.isdigit()) == ["2026110900", "2026111000"]
    # the newest day ran first and still serves: the older day did not replace it
    client = ModelServerClient(local_stack["server"])
    status, body = client.request("GET", "/v1/models/taxi/labels/stable")
    assert status == 200 and body["model_version_status"][0]["version"] == "2026111000"
    manifests = {v: json.loads((serving / v / "manifest.json").read_text()) for v in ("2026110900", "2026111000")}
    assert manifests["2026111000"]["baseline_version"] is None  # first: nothing served yet
    # lineage: every version knows its interval, its backfill run and what served when it was made
    assert manifests["2026110900"]["interval"] == "2026-11-09"
    assert manifests["2026110900"]["run_id"].startswith("backfill__")
    assert manifests["2026110900"]["baseline_version"] == 2026111000
    # and the older day's rollout says why it was not promoted
    older_run = manifests["2026110900"]["run_id"]  # named after the interval's end, as Airflow does
    rollout_logs = "".join(p.read_text() for p in (local_stack["home"] / "airflow" / "logs").rglob("*.log")
                           if "task_id=rollout" in p.parts[-2] and f"run_id={older_run}" in str(p))
    assert rollout_logs, f"no rollout log for {older_run}"
    assert "was trained on older data than stable 2026111000" in rollout_logs


def test_a_manual_run_on_a_scheduled_runs_date_is_refused_and_gives_the_date_back(local_stack):
    """Triggered the way the UI and the REST API do with a date and no time of day (midnight), as the scheduler
    runs it: validate refuses the run before anything runs, and when it fails the scheduler's listener clears
    its logical date (test_schedule_after_demo shows the scheduler then creating the scheduled run). The same
    date is free again: another run may take it."""
    import sqlite3

    env = local_stack["env"]
    logical = f"{dt.datetime.now(dt.UTC).date()}T00:00:00+00:00"  # tomorrow's scheduled run's logical date

    def trigger(run_id: str) -> subprocess.CompletedProcess:
        for _ in range(3):  # SQLite under a running scheduler: "database is locked" is retried
            out = airflow(env, "dags", "trigger", "taxi_retrain", "--logical-date", logical, "--run-id", run_id,
                          check=False)
            if "database is locked" not in out.stdout + out.stderr:
                return out
            time.sleep(5)
        return out

    def run(run_id: str) -> tuple:
        with contextlib.closing(sqlite3.connect(local_stack["home"] / "airflow" / "airflow.db", timeout=30)) as db:
            return db.execute("SELECT dag_run.state, dag_run.logical_date, dag_run_note.content FROM dag_run LEFT "
                              "JOIN dag_run_note ON dag_run_note.dag_run_id = dag_run.id WHERE dag_run.run_id = ?",
                              (run_id,)).fetchone()

    for run_id in ("midnight_1", "midnight_2"):  # the second takes the date the first gave back
        out = trigger(run_id)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        deadline = time.monotonic() + 300
        while (found := run(run_id))[0] not in ("success", "failed") or found[1] is not None or found[2] is None:
            assert time.monotonic() < deadline, found
            time.sleep(3)
        state, date, note = found
        assert state == "failed" and date is None, found
        assert note.startswith(f"failed in validate: this manual run's logical date {logical} is the logical date "
                               "of the scheduled run"), note
