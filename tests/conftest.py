"""Shared fixtures. Tests use real pyarrow/TF/TFT/Beam/Airflow on small data under tmp dirs."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

END = dt.date(2026, 11, 10)


@pytest.fixture(scope="session")
def taxi_config():
    from pipelines.config import load_model_config

    return load_model_config("taxi")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, taxi_config) -> Path:
    """8 days x 1,000 rows of taxi data ending at END (one full window plus one day)."""
    from pipelines.datagen import generate_data

    root = tmp_path_factory.mktemp("data")
    generate_data(taxi_config, data_root=str(root), end=END, days=8, rows_per_day=1000)
    return root


def airflow_env(home: Path, dags_folder: Path | None = None) -> dict[str, str]:
    """Environment for an isolated Airflow (SQLite under ``home``) and Skewfree roots under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SKEWFREE_"))}
    env.update(
        SKEWFREE_HOME=str(home),
        AIRFLOW_HOME=str(home / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder or ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_USE_LEGACY_KERAS="1",
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(env: dict[str, str], *args: str, end: dt.date = END, rows_per_day: int = 2000
             ) -> subprocess.CompletedProcess:
    """``./dev demo`` on 8 small days ending ``end`` with ``env``; later arguments override these."""
    return subprocess.run(
        [sys.executable, "-m", "skewfree.demo", "--end", str(end), "--days", "8", "--rows-per-day",
         str(rows_per_day), "--port", str(free_port()), *args],  # its own port: another module may run a demo
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


def task_states(stdout: str) -> dict[str, str]:
    """Task states from the table ``./dev demo`` prints."""
    states = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in {"validate", "transform", "train", "evaluate", "is_blessed", "publish",
                                            "needs_approval", "approve_promotion", "rollout"}:
            states[parts[0]] = parts[1]
    return states


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_data, taxi_config):
    """validate -> transform -> train -> evaluate on ``small_data`` in-process, with real Beam and TF."""
    from pipelines.evaluate import evaluate
    from pipelines.runs import Run
    from pipelines.train import train
    from pipelines.transform import transform
    from pipelines.validate import validate

    art = tmp_path_factory.mktemp("artifacts")
    validate(taxi_config, interval=END, data_root=str(small_data), artifact_root=art)
    transform(taxi_config, interval=END, artifact_root=art)
    train(taxi_config, interval=END, artifact_root=art, overrides={"epochs": 2})
    evaluation = evaluate(taxi_config, interval=END, artifact_root=art)
    return {"artifact_root": art, "run": Run(art, "taxi", END), "evaluation": evaluation}


@pytest.fixture(scope="session")
def complete_rows(small_data):
    """Raw eval-day rows with every serving feature present (JSON instances cannot carry a missing value)."""
    import pyarrow.compute as pc

    from pipelines.models.taxi.features import SCHEMA
    from pipelines.storage import partition_files, read_files

    table = read_files(partition_files(small_data / "taxi_trips" / f"dt={END}", "csv"), "csv", SCHEMA)
    mask = None
    for f in SCHEMA.serving_features():
        valid = pc.is_valid(table.column(f.name))
        mask = valid if mask is None else pc.and_(mask, valid)
    return table.filter(mask).slice(0, 40)


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server bound to 127.0.0.1; yields the AWS_* environment that points boto3 at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """This process's boto3 pointed at the moto server, a fresh bucket, and a fresh staging mirror."""
    import uuid

    import boto3

    from pipelines import objectstore

    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SKEWFREE_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setattr(objectstore, "_client", None)  # a client made before the env was set is stale
    client = boto3.session.Session().client("s3")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return {"client": client, "bucket": bucket, "url": f"s3://{bucket}"}
