"""`./dev airflow COMMAND ...`: Airflow's CLI on the demo's state, beside a running `./dev airflow`."""

import subprocess
import sys

from tests.conftest import ROOT, airflow_env


def test_a_command_runs_airflows_cli_with_the_sqlite_lock_wait(tmp_path):
    """A user's `airflow backfill create` in a second shell failed with 'database is locked': it lacked the busy
    timeout `./dev airflow` gives its own processes."""
    env = airflow_env(tmp_path)
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", None)
    out = subprocess.run([sys.executable, "-m", "skewfree.standalone", "config", "get-value", "database",
                          "sql_alchemy_connect_args"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "skewfree.sqlite_connect.CONNECT_ARGS"


def test_a_database_other_than_sqlite_gets_no_sqlite_arguments():
    """psycopg2 refuses SQLite's `timeout` argument: the compose stack's Postgres must not get it."""
    from skewfree.standalone import cli_env

    key = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"
    assert cli_env({"PATH": "/bin"})[key] == "skewfree.sqlite_connect.CONNECT_ARGS"
    assert cli_env({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/a.db"})[key].startswith("skewfree.")
    assert key not in cli_env({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u:p@db/airflow"})
