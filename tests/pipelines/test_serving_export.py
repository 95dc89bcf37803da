"""The exported SavedModel: two raw-feature signatures, self-contained, and the skew gate."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import END

pytestmark = pytest.mark.slow


def test_both_signatures_give_the_same_prediction(trained_run, complete_rows):
    import tensorflow as tf

    from pipelines.models.taxi.features import SCHEMA
    from pipelines.tf_schema import TF_DTYPES, raw_examples

    loaded = tf.saved_model.load(trained_run["evaluation"].saved_model)
    assert set(loaded.signatures) == {"serving_default", "serving_raw"}
    by_example = loaded.signatures["serving_default"](examples=tf.constant(raw_examples(complete_rows, SCHEMA)))
    by_tensors = loaded.signatures["serving_raw"](**{
        f.name: tf.constant(complete_rows.column(f.name).to_pylist(), TF_DTYPES[f.type])
        for f in SCHEMA.serving_features()
    })
    a, b = by_example["probability"].numpy(), by_tensors["probability"].numpy()
    assert a.shape == b.shape == (complete_rows.num_rows,)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.ptp(a) > 0.05  # real predictions that depend on the row


def test_label_is_not_a_serving_input(trained_run):
    import tensorflow as tf

    loaded = tf.saved_model.load(trained_run["evaluation"].saved_model)
    assert "tipped" not in loaded.signatures["serving_raw"].structured_input_signature[1]


def test_export_works_after_the_transform_output_is_deleted(trained_run, tmp_path):
    run = trained_run["run"]
    exported = tmp_path / "exported"
    shutil.copytree(trained_run["evaluation"].saved_model, exported)
    canary = run.read_result("evaluate")["canary"]
    moved = tmp_path / "transform-moved"
    shutil.move(run.step_dir("transform"), moved)  # the run's transform_fn/ is gone
    try:
        script = (
            "import base64, json, sys, tensorflow as tf\n"
            "rows = json.load(open(sys.argv[2]))[:20]\n"
            "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
            "out = serve(examples=tf.constant([base64.b64decode(r['b64']) for r in rows]))['probability']\n"
            "print(json.dumps([[float(p), r['prediction']] for p, r in zip(out.numpy(), rows)]))\n"
        )
        out = subprocess.run([sys.executable, "-c", script, str(exported), canary], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    finally:
        shutil.move(moved, run.step_dir("transform"))
    assert out.returncode == 0, out.stderr[-3000:]
    pairs = np.array(__import__("json").loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(pairs[:, 0], pairs[:, 1], atol=1e-6)


def test_evaluate_reports_skew_within_tolerance_and_blesses(trained_run):
    evaluation = trained_run["evaluation"]
    assert evaluation.metrics["max_abs_skew"] <= 1e-5
    assert evaluation.blessed, evaluation.reasons
    assert evaluation.metrics["examples"] == 1000


def skewed_export(model, tft_output, schema, export_dir, task=None):
    """A serving path with hand-written preprocessing: a missing trip_miles becomes 0.0 before the TFT
    graph sees it, where training imputed the mean. The kind of skew the gate exists to catch."""
    import tensorflow as tf

    from pipelines.tf_schema import serving_feature_spec

    model.tft_layer = tft_output.transform_features_layer()
    spec = serving_feature_spec(schema)
    names = list(model.input_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(serialized):
        raw = tf.io.parse_example(serialized, spec)
        n = tf.shape(serialized, out_type=tf.int64)[0]
        miles = raw["trip_miles"]
        dense = tf.sparse.to_dense(tf.SparseTensor(miles.indices, miles.values, [n, 1]), 0.0)[:, 0]
        rows = tf.range(n)
        raw["trip_miles"] = tf.SparseTensor(tf.stack([rows, tf.zeros_like(rows)], axis=1), dense, [n, 1])
        transformed = model.tft_layer(raw)
        return {"probability": tf.squeeze(model({k: transformed[k] for k in names}), axis=1)}

    model.save(str(export_dir), save_format="tf", signatures={"serving_default": serve})


def test_skew_gate_blocks_a_planted_skew(trained_run, tmp_path, monkeypatch, taxi_config):
    import pipelines.train
    from pipelines.evaluate import evaluate

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    monkeypatch.setattr(pipelines.train, "export_serving_model", skewed_export)
    pipelines.train.train(taxi_config, interval=END, artifact_root=art, overrides={"epochs": 1})
    result = evaluate(taxi_config, interval=END, artifact_root=art)

    assert not result.blessed
    assert result.metrics["max_abs_skew"] > 1e-5
    [reason] = [r for r in result.reasons if r.startswith("train/serve skew")]
    assert "eval rows differ by more than 1e-05" in reason
    worst = reason.split("worst: ")[1].split("; eval row ")
    assert len(worst) == 3
    assert all("'trip_miles'" not in row for row in worst)  # the worst rows are the ones missing trip_miles
