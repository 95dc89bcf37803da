"""``./dev airflow``: the Airflow UI on the demo's state, with the local model server, sized for a laptop.

Runs ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer) with the environment ``./dev``
sets (DAGs and plugins folders, ``SKEWFREE_HOME``), the local TF-Serving-compatible server on the model
config file the rollout edits (``AIRFLOW_CONN_MODEL_SERVER_DEFAULT`` points at it), two LocalExecutor slots
instead of 32, and a 60 s SQLite busy timeout (``skewfree.sqlite_connect``). Prints the UI's URL and login.
Stop it with Ctrl-C; runs, versions and logs stay under ``.work/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PASSWORDS = "simple_auth_manager_passwords.json.generated"  # where SimpleAuthManager writes generated logins
# every process on the demo's SQLite database waits for a lock rather than failing "database is locked"
SQLITE_WAITS = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "skewfree.sqlite_connect.CONNECT_ARGS"}


def cli_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for Airflow's CLI beside ``./dev airflow``: the SQLite lock wait, on SQLite only (psycopg2 refuses
    SQLite's ``timeout`` argument)."""
    sqlite = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite")
    return {**env, **(SQLITE_WAITS if sqlite else {})}


def standalone_env(env: dict[str, str], *, api_port: int, model_server_url: str, slots: int = 2) -> dict[str, str]:
    """``env`` plus what a local Airflow standalone needs to run the Skewfree DAGs on one machine."""
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # standalone runs `airflow ...`
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(slots),  # LocalExecutor worker processes (default 32)
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        **SQLITE_WAITS,
        "AIRFLOW_CONN_MODEL_SERVER_DEFAULT": model_server_url,
    }


@contextlib.contextmanager
def tensorboard(artifact_root: str, port: int, home: Path) -> Iterator[str | None]:
    """TensorBoard on the run directories (train writes ``train/tensorboard`` in each); none for an S3 root."""
    from pipelines.objectstore import is_s3

    if is_s3(artifact_root):
        yield None
        return
    Path(artifact_root).mkdir(parents=True, exist_ok=True)
    with open(home / "tensorboard.log", "ab") as log:
        board = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", artifact_root,
                                  "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        board.terminate()
        board.wait(timeout=30)


def wait_for_ui(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"airflow standalone exited with {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"the Airflow UI did not answer on {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    from skewfree.demo import free_port, migrate_db, model_server
    from skewfree.settings import Settings

    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-"):  # `./dev airflow backfill create ...`: Airflow's CLI on the demo's state
        airflow = str(Path(sys.executable).with_name("airflow"))
        os.execve(airflow, [airflow, *argv], cli_env(dict(os.environ)))
    parser = argparse.ArgumentParser(prog="./dev airflow", description=__doc__.splitlines()[0],
                                     epilog="./dev airflow COMMAND ... runs Airflow's CLI on the same state, e.g. "
                                            "./dev airflow backfill create --dag-id taxi_retrain ...")
    parser.add_argument("--port", type=int, default=8080, help="the UI's port (another free one if taken)")
    parser.add_argument("--model-server-port", type=int, default=8501)
    parser.add_argument("--tensorboard-port", type=int, default=6006)
    args = parser.parse_args(argv)

    def interrupted(signum, frame):
        raise KeyboardInterrupt  # SIGTERM (e.g. `timeout`) stops the stack like Ctrl-C: nothing outlives it

    signal.signal(signal.SIGTERM, interrupted)
    settings = Settings.from_env()
    api_port = free_port(args.port)
    home = Path(os.environ.get("AIRFLOW_HOME", Path(settings.model_server_config).parent / "airflow"))
    migrate_db()
    with model_server(Path(settings.model_server_config), free_port(args.model_server_port)) as server_url, \
            tensorboard(settings.artifact_root, free_port(args.tensorboard_port), home) as board_url:
        env = standalone_env(dict(os.environ), api_port=api_port, model_server_url=server_url)
        if board_url:
            env["SKEWFREE_TENSORBOARD_URL"] = board_url  # the train task's TensorBoard link
        log_file = home / "standalone.log"
        print(f"==> airflow standalone (log: {log_file})")
        with open(log_file, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{api_port}"
            wait_for_ui(url, process)
            passwords = home / PASSWORDS
            login = json.loads(passwords.read_text()) if passwords.is_file() else {}
            print(f"\n    Airflow UI:   {url}")
            print(f"    login:        admin / {login.get('admin', '(see ' + str(passwords) + ')')}")
            print(f"    model server: {server_url}/v1/models/<model>  (config {settings.model_server_config})")
            print(f"    models page:  {url}/skewfree/  (Browse > Models)")
            if board_url:
                print(f"    TensorBoard:  {board_url}  (training curves of every run)")
            print("    A DAG starts paused: unpause it to schedule its daily runs. Ctrl-C stops everything.\n", flush=True)
            process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
