"""Shared fixtures. Tests use real pyarrow/TF/TFT/Beam/Airflow on small data under tmp dirs."""

from __future__ import annotations

import datetime as dt
import os
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
