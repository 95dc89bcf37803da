"""A 3-day backfill through Airflow's own backfill machinery on the local stack.

`airflow standalone` (api-server, scheduler, dag-processor, triggerer; LocalExecutor on SQLite) in
a temporary home, the local model server, then `airflow backfill create`, exactly as a user would.
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
from pathlib import Path

import pytest

from tests.conftest import ROOT, airflow_env
from tests.serving.test_rest_contract import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
END = dt.date(2026, 11, 10)


def airflow(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=check)


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
    env = airflow_env(home)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # standalone runs `airflow ...`
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{api_port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW_CONN_MODEL_SERVER_DEFAULT=f"http://127.0.0.1:{server_port}",
    )
    generate_data(load_model_config("taxi"), data_root=str(home / "data"), end=END, days=9, rows_per_day=1500)
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


def test_three_day_backfill(local_stack):
    from pipelines.serving.client import ModelServerClient

    env = local_stack["env"]
    created = airflow(env, "backfill", "create", "--dag-id", "taxi_retrain", "--from-date", "2026-11-08",
                      "--to-date", "2026-11-10", "--max-active-runs", "1", check=False)
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
    deadline = time.monotonic() + 1200
    while True:
        runs = [r for r in dag_runs(env) if r["run_id"].startswith("backfill__")]
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        assert time.monotonic() < deadline, f"backfill did not finish: {runs}"
        time.sleep(5)
    assert sorted(r["state"] for r in runs) == ["success"] * 3, runs
    published = sorted(p.name for p in (local_stack["home"] / "serving" / "taxi").iterdir() if p.name.isdigit())
    assert published == ["2026110800", "2026110900", "2026111000"]
    client = ModelServerClient(local_stack["server"])
    status, body = client.request("GET", "/v1/models/taxi/labels/stable")
    assert status == 200 and body["model_version_status"][0]["version"] == "2026111000"
    # lineage: every version knows its interval and its backfill run
    manifest = json.loads((local_stack["home"] / "serving" / "taxi" / "2026110900" / "manifest.json").read_text())
    assert manifest["interval"] == "2026-11-09" and manifest["run_id"].startswith("backfill__")
    assert manifest["baseline_version"] == 2026110800
