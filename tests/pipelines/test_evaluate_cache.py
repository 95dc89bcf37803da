"""evaluate reuses its output for the same model and eval split, and never for another model."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import END

pytestmark = pytest.mark.slow


def test_evaluate_reuses_its_output_only_for_the_same_model(trained_run, taxi_config, tmp_path):
    from pipelines.evaluate import evaluate
    from pipelines.train import train

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    first = trained_run["evaluation"]

    again = evaluate(taxi_config, interval=END, artifact_root=art)
    assert again.cached and again.input_digest == first.input_digest and again.metrics == first.metrics

    forced = evaluate(taxi_config, interval=END, artifact_root=art, force=True)
    assert not forced.cached and forced.metrics == first.metrics  # recomputed: the same numbers

    # a threshold edited: the same model is judged again, not trained again (a fault trial's re-ran both)
    import dataclasses
    from pathlib import Path

    from pipelines.config import load_model_config
    from pipelines.transform import transform

    edited = tmp_path / "taxi" / "config.toml"
    edited.parent.mkdir()
    edited.write_text(Path(taxi_config.source).read_text().replace("accuracy = { min = 0.75 }",
                                                                   "accuracy = { min = 0.99 }"))
    stricter = dataclasses.replace(taxi_config, source=edited,
                                   thresholds=load_model_config(edited).thresholds)
    train(taxi_config, interval=END, artifact_root=art)  # (the fixture trained with other params)
    judged_before = evaluate(taxi_config, interval=END, artifact_root=art)
    assert transform(stricter, interval=END, artifact_root=art).cached
    assert train(stricter, interval=END, artifact_root=art).cached
    judged = evaluate(stricter, interval=END, artifact_root=art)
    assert not judged.cached and not judged.blessed and judged.metrics == judged_before.metrics
    assert any("accuracy" in reason and "0.99" in reason for reason in judged.reasons), judged.reasons
    back = evaluate(taxi_config, interval=END, artifact_root=art)  # its own thresholds again: judged again
    assert not back.cached and back.blessed == judged_before.blessed and back.metrics == judged_before.metrics

    # another model under the same run (a retrain): evaluated again, not the old model's blessing
    retrained = train(taxi_config, interval=END, artifact_root=art, overrides={"epochs": 1})
    assert not retrained.cached
    fresh = evaluate(taxi_config, interval=END, artifact_root=art)
    assert not fresh.cached and fresh.input_digest != first.input_digest
    assert fresh.metrics != first.metrics


def test_evaluate_refuses_a_model_left_from_before_the_transform_changed(trained_run, taxi_config, tmp_path):
    """A user trial ran the steps one by one: train failed on a changed config, and evaluate judged the model the
    train before had left, blessed it, then crashed. The train output must be of this run's transform output."""
    import json

    from pipelines.evaluate import evaluate
    from pipelines.runs import Run, StepError

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    result = Run(art, "taxi", END).result_path("transform")
    transformed = json.loads(result.read_text())
    result.write_text(json.dumps({**transformed, "input_digest": "a transform run since"}))
    blessing = Run(art, "taxi", END).step_dir("evaluate") / "blessing.json"
    before = blessing.read_bytes()
    with pytest.raises(StepError, match=r"was not trained on this run's transform output \(transform ran since, or "
                                        r"the last train failed\): run train again before evaluate"):
        evaluate(taxi_config, interval=END, artifact_root=art, force=True)
    assert blessing.read_bytes() == before  # the earlier evaluate's output stays as it was


def test_publish_refuses_a_blessing_from_before_the_data_changed(trained_run, taxi_config, tmp_path):
    """A re-trial: new data was validated, train failed, evaluate refused, and publish then shipped the earlier
    model and blessing with the new files' digests as its lineage. A run's outputs must be one chain."""
    import json

    from pipelines.evaluate import evaluate
    from pipelines.publish import NotBlessedError, publish
    from pipelines.runs import Run, StepError

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    result = Run(art, "taxi", END).result_path("validate")
    validation = json.loads(result.read_text())
    newest = validation["partitions"][END.isoformat()][0]
    validation["file_digests"][newest] = "0" * 64  # the day's file was replaced and validated again
    result.write_text(json.dumps(validation))
    says = r"the transform output of taxi 2026-11-10 is not of the files validate passed last \(validate ran since, " \
           r"or the last transform failed\): run transform again"
    with pytest.raises(NotBlessedError, match=says + ", then evaluate, before publishing"):
        publish(taxi_config, interval=END, artifact_root=art, serving_root=str(tmp_path / "serving"))
    assert not (tmp_path / "serving").exists()
    with pytest.raises(StepError, match=says + " before evaluate"):
        evaluate(taxi_config, interval=END, artifact_root=art, force=True)
