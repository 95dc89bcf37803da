"""The daily DAG end to end through Airflow (dag.test on SQLite), as ``./dev demo`` runs it.

One session: a blessed run publishes a version; a model whose threshold cannot be
met is not published and says why; a missing partition fails validate, names the
path, publishes nothing and deletes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, airflow_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

END = dt.date(2026, 11, 10)
ROWS = 2000


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """An isolated Airflow home and roots, and a dags folder with the taxi DAG and a strict variant."""
    home = tmp_path_factory.mktemp("skewfree")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "taxi_retrain.py", dags)
    strict = home / "taxi_strict.toml"
    text = (ROOT / "pipelines/models/taxi/config.toml").read_text()
    strict.write_text(text.replace('name = "taxi"', 'name = "taxi_strict"').replace(
        "auc = { min = 0.75 }", "auc = { min = 0.999 }"))
    (dags / "taxi_strict_retrain.py").write_text(
        f'"""Airflow DAG for a model that cannot meet its threshold."""\n'
        f"from skewfree.dag_factory import retrain_dag\n\ndag = retrain_dag({str(strict)!r})\n"
    )
    return {"home": home, "env": airflow_env(home, dags), "strict": strict}


def demo(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skewfree.demo", "--end", str(END), "--days", "8", "--rows-per-day", str(ROWS), *args],
        env=stack["env"], cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


def task_states(stdout: str) -> dict[str, str]:
    states = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in {"validate", "transform", "train", "evaluate", "is_blessed", "publish"}:
            states[parts[0]] = parts[1]
    return states


@pytest.fixture(scope="module")
def blessed_run(stack):
    out = demo(stack)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


def test_blessed_run_publishes_a_servable_raw_feature_model(stack, blessed_run):
    import numpy as np
    import tensorflow as tf

    from pipelines.models.taxi.features import SCHEMA
    from pipelines.storage import partition_files, read_files
    from pipelines.tf_schema import raw_examples

    assert task_states(blessed_run.stdout) == {
        "validate": "success", "transform": "success", "train": "success",
        "evaluate": "success", "is_blessed": "success", "publish": "success",
    }
    versions = sorted((stack["home"] / "serving" / "taxi").iterdir())
    assert [v.name for v in versions] == ["2026111000"]
    assert f"published version 2026111000: {versions[0]}" in blessed_run.stdout
    assert "train/serve skew: max |training path - serving path| = " in blessed_run.stdout
    # the demo ends with a prediction fetched over HTTP from the local model server
    [response] = [line for line in blessed_run.stdout.splitlines() if line.strip().startswith("response: ")]
    served = json.loads(response.split("response: ", 1)[1])["predictions"][0]
    [offline] = [line for line in blessed_run.stdout.splitlines() if "offline prediction for this eval row" in line]
    assert abs(served - float(offline.rsplit(": ", 1)[1])) < 1e-5

    serve = tf.saved_model.load(str(versions[0])).signatures["serving_default"]
    part = stack["home"] / "data" / "taxi_trips" / f"dt={END}"
    rows = read_files(partition_files(part, "csv"), "csv", SCHEMA).slice(0, 50)
    probability = serve(examples=tf.constant(raw_examples(rows, SCHEMA)))["probability"].numpy()
    assert probability.shape == (50,)
    assert np.all((probability > 0) & (probability < 1))
    assert len(np.unique(probability)) > 10  # depends on the features, not a constant


def test_unmet_threshold_is_not_published_and_says_why(stack, blessed_run):
    out = demo(stack, "--model", str(stack["strict"]), "--no-generate")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    states = task_states(out.stdout)
    assert states["evaluate"] == "success" and states["is_blessed"] == "success"
    assert states["publish"] == "skipped"
    assert "blessed: False auc=" in out.stdout and "is below the minimum 0.999" in out.stdout
    assert "model NOT blessed, publish is skipped: auc=" in out.stdout  # in the is_blessed task log
    assert not list((stack["home"] / "serving").glob("taxi_strict/*"))


def test_missing_partition_fails_validate_and_keeps_what_is_served(stack, blessed_run):
    served = stack["home"] / "serving" / "taxi" / "2026111000"
    before = sorted(p.relative_to(served) for p in served.rglob("*"))
    gone = stack["home"] / "data" / "taxi_trips" / "dt=2026-11-07"
    shutil.rmtree(gone)
    try:
        out = demo(stack, "--no-generate")
    finally:  # put the partition back (same date, same bytes) for any later test
        from pipelines.config import load_model_config
        from pipelines.datagen import generate_data

        generate_data(load_model_config("taxi"), data_root=str(stack["home"] / "data"), end=END, days=8,
                      rows_per_day=ROWS)
    assert out.returncode == 1
    states = task_states(out.stdout)
    assert states["validate"] == "failed"
    assert states["publish"] == "upstream_failed"
    assert f"missing partition for 2026-11-07: {gone} does not exist" in out.stdout
    assert sorted(p.name for p in served.parent.iterdir()) == ["2026111000"]
    assert sorted(p.relative_to(served) for p in served.rglob("*")) == before
