"""The example models beside taxi, each through the whole DAG (``./dev demo --model NAME``) and served:
a multi-class model (class scores, id and name) and a regression model (a value)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import airflow_env, run_demo, task_states

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


def served(stdout: str):
    [line] = [line for line in stdout.splitlines() if line.strip().startswith("response: ")]
    return json.loads(line.split("response: ", 1)[1])["predictions"][0]


def offline(stdout: str):
    [line] = [line for line in stdout.splitlines() if "offline prediction of version" in line]
    return json.loads(line.rsplit(": ", 1)[1])


@pytest.mark.parametrize("model", ["penguins", "delivery"])
def test_example_model_is_blessed_published_and_served(home, model):
    out = run_demo(airflow_env(home), "--model", model)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    states = task_states(out.stdout)
    assert all(states[t] == "success" for t in ("validate", "transform", "train", "evaluate", "publish", "rollout"))
    assert (home / "serving" / model / "2026111000" / "saved_model.pb").is_file()
    assert "train/serve skew: max |training path - serving path| = " in out.stdout
    assert "blessed: True" in out.stdout
    prediction = served(out.stdout)
    if model == "penguins":
        assert set(prediction) == {"scores", "class_ids", "classes"}
        assert len(prediction["scores"]) == 3 and abs(sum(prediction["scores"]) - 1) < 1e-5
        assert prediction["classes"] in {"Adelie", "Chinstrap", "Gentoo"}
        assert prediction["scores"] == pytest.approx(offline(out.stdout), abs=1e-5)
        metrics = json.loads(out.stdout.split("eval metrics (serving signature, raw rows): ")[1].splitlines()[0])
        assert metrics["accuracy"] >= 0.85 and {"recall/Gentoo", "precision/Adelie", "macro_recall"} <= set(metrics)
    else:
        assert isinstance(prediction, float) and 1 < prediction < 240
        assert prediction == pytest.approx(offline(out.stdout), abs=1e-4)
        metrics = json.loads(out.stdout.split("eval metrics (serving signature, raw rows): ")[1].splitlines()[0])
        assert metrics["r2"] >= 0.8 and "mean_absolute_percentage_error" in metrics
    large_batch_is_served_as_offline(home / "serving" / model, 2026111000)


def large_batch_is_served_as_offline(base_path, version: int) -> None:
    """A large batch of this model's real eval rows, including those with missing features, with its own outputs
    (class scores and names, or a value): the version checks values itself (``tf_schema.value_checks``), the
    local server's key check passes the rows, and every row's answer equals the offline prediction."""
    import base64

    import numpy as np

    from pipelines.rollout import _as_list, canary_difference, served_values
    from pipelines.serving import rest
    from pipelines.serving.models import ModelManager, ModelSpec

    canary = json.loads((base_path / str(version) / "canary.json").read_text())
    rows = (canary * 64)[:max(64, len(canary))]
    manager = ModelManager([ModelSpec(base_path.name, str(base_path))])
    manager.poll_once()
    servable = manager.servable(base_path.name, version)
    assert servable.checks_values
    assert rest._keys_known(servable, np.array([base64.b64decode(r["b64"]) for r in rows], dtype=object))
    answer = rest.predict(servable, {"instances": [{"b64": r["b64"]} for r in rows]})
    assert len(answer["predictions"]) == len(rows)
    # NaN in a float feature (a required one where the model has one) is refused by the model itself and named
    import tensorflow as tf

    from pipelines.schema import RAW_FEATURES_ASSET

    described = json.loads((base_path / str(version) / RAW_FEATURES_ASSET).read_text())
    floats = sorted((f["nullable"], f["name"]) for f in described if f["type"] == "float")
    name = floats[0][1]
    example = tf.train.Example.FromString(base64.b64decode(rows[0]["b64"]))
    example.features.feature[name].float_list.value[:] = [float("nan")]
    batch = [{"b64": r["b64"]} for r in rows]
    batch.insert(5, {"b64": base64.b64encode(example.SerializeToString()).decode()})
    with pytest.raises(rest.ServingError, match=rf"instances\[5\]: feature '{name}' is \[nan\]"):
        rest.predict(servable, rest.parse_body(json.dumps({"instances": batch}).encode()))
    signature = servable.loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"feature {name} is NaN.*rows \(from 0\):\] \[5\]"):
        signature(examples=tf.constant([base64.b64decode(r["b64"]) for r in batch]))
    for i, row in enumerate(rows):
        served = served_values({"predictions": [answer["predictions"][i]]}, row)
        offline = _as_list(row["prediction"])
        assert canary_difference(served, offline) <= 1e-4, (i, served, offline)
