"""Gates that compare with what serves and fail closed: change thresholds against the stable version,
the blessing bound to the model it judged, NaN refused by the skew gate and the canary."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from pipelines.config import ChangeThreshold, ConfigError, load_model_config
from tests.conftest import END, ROOT

TAXI = (ROOT / "pipelines/models/taxi/config.toml").read_text()


def config_with(tmp_path, thresholds: str):
    path = tmp_path / "taxi.toml"
    start = TAXI.index("[thresholds]")
    end = TAXI.index("\n[", start + 1)
    path.write_text(TAXI[:start] + "[thresholds]\n" + thresholds + "\n" + TAXI[end:])
    return load_model_config(path)


def serve_as_stable(serving_root, version: int) -> None:
    (serving_root / "models.config").write_text(
        f'model_config_list {{\n  config {{\n    name: "taxi"\n    base_path: "{serving_root / "taxi"}"\n'
        f'    model_platform: "tensorflow"\n    model_version_policy {{ specific {{ versions: {version} }} }}\n'
        f'    version_labels {{ key: "stable" value: {version} }}\n  }}\n}}\n')


def test_change_threshold_names_both_numbers_and_fails_closed():
    drop = ChangeThreshold("higher", absolute=0.01)
    assert drop.violation("auc", 0.86, 0.86, 7) is None and drop.violation("auc", 0.90, 0.86, 7) is None
    why = drop.violation("auc", 0.84, 0.8612, 7)
    assert why == ("auc: candidate 0.8400 vs baseline 0.8612 (version 7): worse by 0.0212, more than the allowed "
                   "0.01 (higher is better)")
    assert "worse by 0.0500" in ChangeThreshold("lower", relative=0.1).violation("log_loss", 0.45, 0.40, 7)
    assert ChangeThreshold("lower", relative=0.2).violation("log_loss", 0.45, 0.40, 7) is None
    assert "not finite numbers" in drop.violation("auc", math.nan, 0.86, 7)
    assert "not finite numbers" in drop.violation("auc", 0.86, None, 7)


def test_change_thresholds_in_the_config(tmp_path):
    config = config_with(tmp_path, "auc = { min = 0.7, change = { absolute = 0.01 } }\n"
                                   "log_loss = { change = { relative = 0.05 } }")
    changes = {b.metric: b.change for b in config.thresholds}
    assert changes["auc"] == ChangeThreshold("higher", absolute=0.01)  # direction known for AUC
    assert changes["log_loss"] == ChangeThreshold("lower", relative=0.05)
    with pytest.raises(ConfigError, match="direction must be \"higher\" or \"lower\""):
        config_with(tmp_path, "label_mean = { change = { absolute = 0.1 } }")
    with pytest.raises(ConfigError, match="needs absolute and/or relative, numbers >= 0"):
        config_with(tmp_path, "auc = { change = { absolute = -0.01 } }")
    with pytest.raises(ConfigError, match=r"\[rollout\] canary_rows must be between 1 and 1000"):
        load_model_config(_write(tmp_path, TAXI.replace("canary_rows = 32", "canary_rows = 5000")))


def _write(tmp_path, text):
    path = tmp_path / "variant.toml"
    path.write_text(text)
    return path


def test_the_baseline_is_the_stable_version_a_pod_is_told(tmp_path):
    """On the kubernetes backend the model server's config file is where the Airflow side reads it, not under
    the serving root a pod sees (with an S3 serving root it cannot be). A pod then took the newest version as
    the baseline: after a rollback, the rejected one (a platform trial). Airflow reads the label and passes
    it (``--stable-version``); the serving root's own models.config and the newest version come after."""
    from pipelines.baseline import resolve_baseline
    from pipelines.runs import StepError

    root = tmp_path / "serving"
    for version in (2026111000, 2026111100):  # complete SavedModels without a manifest
        (root / "taxi" / str(version) / "variables").mkdir(parents=True)
        (root / "taxi" / str(version) / "saved_model.pb").write_bytes(b"graph")
        for name in ("variables.index", "variables.data-00000-of-00001"):
            (root / "taxi" / str(version) / "variables" / name).write_bytes(b"v")
    assert resolve_baseline("taxi", str(root)).version == 2026111100  # no label anywhere: the newest
    told = resolve_baseline("taxi", str(root), stable_version=2026111000)
    assert told.version == 2026111000 and told.how == "label 'stable' in the model server's config file " \
                                                      "(--stable-version)"
    serve_as_stable(root, 2026111100)  # the serving root's models.config says otherwise: what the pod is told wins
    assert resolve_baseline("taxi", str(root), stable_version=2026111000).version == 2026111000
    assert resolve_baseline("taxi", str(root)).version == 2026111100
    # a stable version that is not complete is refused: the newest would be judged against instead (a review)
    (root / "taxi" / "2026111000" / "variables" / "variables.index").unlink()
    with pytest.raises(StepError, match=r"the 'stable' label in the model server's config file \(--stable-version\) "
                                        r"names taxi version 2026111000, which is not a complete version under "
                                        r".*no variables/variables.index.*label a complete version stable"):
        resolve_baseline("taxi", str(root), stable_version=2026111000)
    serve_as_stable(root, 2026111000)
    with pytest.raises(StepError, match=r"the 'stable' label in .*models.config names taxi version 2026111000"):
        resolve_baseline("taxi", str(root))


@pytest.mark.slow
def test_candidate_against_the_serving_baseline(trained_run, tmp_path, caplog):
    """A weak candidate is refused against a strong stable version with both numbers; the strong one is
    blessed against a weak stable version; the first run has no baseline; publish refuses a model
    retrained after evaluate."""
    from pipelines.evaluate import evaluate
    from pipelines.publish import NotBlessedError, publish
    from pipelines.train import train

    change = config_with(tmp_path, "auc = { change = { absolute = 0.01 } }")
    (tmp_path / "plain").mkdir()
    plain = config_with(tmp_path / "plain", "")
    strong, weak = tmp_path / "strong", tmp_path / "weak"
    shutil.copytree(trained_run["artifact_root"], strong)
    shutil.copytree(trained_run["artifact_root"], weak)

    first = evaluate(change, interval=END, artifact_root=strong, serving_root=str(tmp_path / "empty"), force=True)
    assert first.blessed and first.baseline["version"] is None
    assert "value thresholds only" in first.baseline["how"]

    strong_root = tmp_path / "serving_strong"
    published = publish(plain, interval=END, artifact_root=strong, serving_root=str(strong_root))
    serve_as_stable(strong_root, published.version)
    train(plain, interval=END, artifact_root=weak, overrides={"epochs": 1, "learning_rate": 1e-6}, force=True)
    refused = evaluate(change, interval=END, artifact_root=weak, serving_root=str(strong_root))
    assert not refused.blessed and refused.baseline["version"] == published.version
    [why] = [r for r in refused.reasons if r.startswith("auc: candidate")]
    candidate, baseline = refused.metrics["auc"], refused.baseline["metrics"]["auc"]
    assert f"auc: candidate {candidate:.4f} vs baseline {baseline:.4f} (version {published.version})" in why
    assert baseline == pytest.approx(trained_run["evaluation"].metrics["auc"], abs=1e-6)  # same rows, same model
    assert "label 'stable' in" in refused.baseline["how"]

    # a backfill: a baseline trained for a later interval has seen these eval rows, so no change threshold
    manifest = strong_root / "taxi" / str(published.version) / "manifest.json"
    later = json.loads(manifest.read_text()) | {"interval": "2026-11-20"}
    manifest.write_text(json.dumps(later))
    backfill = evaluate(change, interval=END, artifact_root=weak, serving_root=str(strong_root))
    assert backfill.blessed, backfill.reasons
    assert "it has seen these eval rows" in backfill.baseline["note"]

    weak_root = tmp_path / "serving_weak"
    evaluate(plain, interval=END, artifact_root=weak, serving_root=str(tmp_path / "empty"))  # no thresholds: blessed
    weak_version = publish(plain, interval=END, artifact_root=weak, serving_root=str(weak_root)).version
    serve_as_stable(weak_root, weak_version)
    better = evaluate(change, interval=END, artifact_root=strong, serving_root=str(weak_root))
    assert better.blessed, better.reasons
    assert better.metrics["auc"] > better.baseline["metrics"]["auc"] + 0.01

    train(plain, interval=END, artifact_root=weak, overrides={"epochs": 1, "learning_rate": 1e-3}, force=True)
    with pytest.raises(NotBlessedError, match="is not the one evaluate blessed .* retrained or replaced after evaluate"):
        publish(plain, interval=END, artifact_root=weak, serving_root=str(weak_root))


def test_nan_predictions_refuse_the_model():
    from pipelines.evaluate import nan_prediction_reason

    assert nan_prediction_reason(np.array([0.1, 0.2])) is None
    assert nan_prediction_reason(np.array([0.1, np.nan, np.inf])).startswith("2 of 3 eval rows got a NaN or infinite")
    assert nan_prediction_reason(np.array([[0.5, 0.5], [np.nan, 0.1]])).startswith("1 of 2 eval rows")


def test_auc_of_one_class_is_undefined_and_refused_not_zero():
    """Keras answers 0.0 for the AUC of one-class labels: a report would show a terrible model where the metric
    does not exist. It is NaN, and a threshold on it refuses naming NaN."""
    from pipelines.config import Bound
    from pipelines.evaluate import binary_metrics

    two = binary_metrics(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.1, 0.9, 0.2, 0.8]))
    assert two["auc"] == pytest.approx(1.0) and two["pr_auc"] == pytest.approx(1.0, abs=1e-3)
    negatives = binary_metrics(np.zeros(4), np.array([0.1, 0.9, 0.2, 0.8]))
    assert math.isnan(negatives["auc"]) and math.isnan(negatives["pr_auc"])
    positives = binary_metrics(np.ones(4), np.array([0.1, 0.9, 0.2, 0.8]))
    assert math.isnan(positives["auc"]) and positives["pr_auc"] == pytest.approx(1.0, abs=1e-3)
    assert "nan" in Bound("auc", min=0.7).violation(negatives["auc"]).lower()


def test_nan_predictions_never_pass_the_skew_gate():
    from pipelines.evaluate import skew_reason
    from pipelines.serving.client import encode_example

    examples = [encode_example({"x": float(i)}, {"x": "DT_FLOAT"}) for i in range(3)]
    training = np.array([0.1, 0.2, 0.3])
    assert skew_reason(training, training.copy(), examples) is None
    why = skew_reason(training, np.array([0.1, np.nan, 0.3]), examples)
    assert why.startswith("train/serve skew: 1 of 3 eval rows differ by more than 1e-05 (1 with NaN predictions)")


class _Server:
    """The model server's answers, for the canary alone (the HTTP path is tested in test_rollout.py)."""

    def __init__(self, prediction):
        self.prediction = prediction

    def predict(self, model, body, *, version=None, label=None):
        return {"predictions": [self.prediction]}


@pytest.mark.parametrize("served", [math.nan, math.inf, {"scores": [0.2, math.nan]}, 0.5])
def test_a_nan_canary_is_refused(served):
    from pipelines.config import RolloutConfig
    from pipelines.rollout import RolloutError, run_canary

    rows = [{"b64": "", "prediction": [0.2, 0.8] if isinstance(served, dict) else 0.1,
             "output": "scores" if isinstance(served, dict) else "probability"}] * 4
    with pytest.raises(RolloutError, match="canary mismatch on eval row 0"):
        run_canary(_Server(served), "taxi", 1, rows, RolloutConfig(canary_rows=4))
    with pytest.raises(RolloutError, match="shipped 4 canary rows but \\[rollout\\] canary_rows = 8"):
        run_canary(_Server(0.1), "taxi", 1, rows, RolloutConfig(canary_rows=8))


def test_canary_json_is_valid_for_every_row(trained_run):
    rows = json.loads(open(trained_run["run"].read_result("evaluate")["canary"]).read())
    assert len(rows) >= 32 and all(np.isfinite(row["prediction"]) for row in rows)


def test_slice_names_for_categories_and_intervals():
    from pipelines.config import SliceSpec
    from pipelines.slicing import slice_names

    values = ["Cash", "Card", None, "Card", "Mobile", "Card", "Cash"]
    assert list(slice_names(values, SliceSpec("payment_type", top_k=2))) == [
        "Cash", "Card", "missing", "Card", "other", "Card", "Cash"]
    assert list(slice_names([0.5, 2.0, 7.5, None, 30.0], SliceSpec("trip_miles", boundaries=(2.0, 10.0)))) == [
        "< 2", "[2, 10)", "[2, 10)", "missing", ">= 10"]


def test_slice_thresholds_name_the_worst_slices_and_skip_small_ones():
    from pipelines.config import Bound
    from pipelines.slicing import slice_reasons

    slices = [{"feature": "f", "slice": name, "examples": n, "metrics": {"accuracy": acc}}
              for name, n, acc in [("a", 500, 0.9), ("b", 400, 0.6), ("c", 300, 0.5), ("tiny", 10, 0.0),
                                   ("nan", 200, math.nan)]]
    [reason] = slice_reasons(slices, (Bound("accuracy", min=0.7),), min_examples=100)
    assert reason.startswith("slice threshold on accuracy: f=nan (200 rows): accuracy=nan is not a finite number")
    assert "f=c (300 rows): accuracy=0.5000 is below the minimum 0.7; f=b (400 rows)" in reason
    assert "tiny" not in reason and "f=a" not in reason


def test_a_broken_overall_threshold_names_the_worst_slice():
    """A user trial: r2 fell under its minimum because of one new category, and the reason named nothing but
    the number; the slice table in the report had the answer. The reason now names the worst judged slice."""
    from pipelines.config import Bound
    from pipelines.slicing import worst_slice

    slices = [{"feature": "kind", "slice": name, "examples": n, "metrics": {"r2": r2}}
              for name, n, r2 in [("boiler", 900, 0.91), ("heat_pump", 240, -7.0), ("tiny", 5, -50.0)]]
    assert worst_slice(slices, Bound("r2", min=0.8), min_examples=100) == \
        "worst slice: kind=heat_pump (240 rows) at r2=-7"
    assert worst_slice(slices, Bound("r2", min=-10.0), min_examples=100) is None  # none breaks it
    nan = [{"feature": "kind", "slice": "x", "examples": 300, "metrics": {"r2": math.nan}}, *slices]
    assert worst_slice(nan, Bound("r2", min=0.8), min_examples=100) == "worst slice: kind=x (300 rows) at r2=nan"


@pytest.mark.slow
def test_per_slice_metrics_in_the_evaluation(trained_run, tmp_path):
    from pipelines.evaluate import evaluate

    art = tmp_path / "art"
    shutil.copytree(trained_run["artifact_root"], art)
    own = TAXI[TAXI.index("# Per-slice metrics"):TAXI.index("# Guarded rollout")]  # replaced by these slices
    text = TAXI.replace(own, "").replace("[rollout]", '[evaluation]\nslice_min_examples = 150\nslice_thresholds = { accuracy = '
                        '{ min = 0.99 } }\n[[evaluation.slices]]\nfeature = "payment_type"\ntop_k = 3\n'
                        '[[evaluation.slices]]\nfeature = "trip_miles"\nboundaries = [2.0, 5.0]\n\n[rollout]')
    config = load_model_config(_write(tmp_path, text))
    result = evaluate(config, interval=END, artifact_root=art, force=True)
    by = {(s["feature"], s["slice"]): s for s in result.slices}
    assert {("payment_type", "Credit Card"), ("payment_type", "Cash"), ("trip_miles", "< 2"),
            ("trip_miles", ">= 5")} <= set(by)
    assert sum(s["examples"] for (f, _), s in by.items() if f == "trip_miles") == result.metrics["examples"]
    assert "auc" in by[("payment_type", "Credit Card")]["metrics"]
    [reason] = [r for r in result.reasons if r.startswith("slice threshold on accuracy")]
    judged = [s for s in result.slices if s["examples"] >= 150]
    strict = evaluate(load_model_config(_write(tmp_path, text.replace("accuracy = { min = 0.75 }",
                                                                      "accuracy = { min = 0.99 }"))),
                      interval=END, artifact_root=art, force=True)
    [overall] = [r for r in strict.reasons if r.startswith("accuracy=")]
    assert "is below the minimum 0.99 (worst slice: " in overall and " rows) at accuracy=" in overall
    assert any(f"{s['feature']}={s['slice']} ({s['examples']} rows)" in reason for s in judged)
    assert not any(f"={s['slice']} ({s['examples']} rows)" in reason for s in result.slices if s["examples"] < 150)


def test_a_class_the_eval_rows_do_not_have_has_no_recall_not_zero():
    """A user trial: an eval day without 'urgent' rows reported recall/urgent 0, pulled macro_recall down and
    refused the model with 'recall/urgent=0.0000 is below the minimum 0.5': it missed no urgent ticket."""
    from pipelines.config import Bound
    from pipelines.evaluate import multiclass_metrics, threshold_reasons

    classes = ["low", "high", "urgent"]
    labels = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.85, 0.05]])
    metrics = multiclass_metrics(labels, scores, classes)
    assert metrics["recall/low"] == 0.5 and metrics["recall/high"] == 1.0 and math.isnan(metrics["recall/urgent"])
    assert metrics["macro_recall"] == 0.75  # over the classes the eval rows have
    # rightly never predicted: no precision either, and macro_precision is over the others (a perfect model on
    # these rows was refused for a 0 here); a class the rows have but the model never predicts has precision 0
    assert math.isnan(metrics["precision/urgent"]) and metrics["macro_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert multiclass_metrics(np.array([0, 1]), np.array([[0.9, 0.1, 0], [0.8, 0.2, 0]]), classes)[
        "precision/high"] == 0.0
    assert threshold_reasons([Bound("recall/urgent", min=0.5), Bound("macro_recall", min=0.7),
                              Bound("recall/low", min=0.6), Bound("precision/urgent", min=0.5)], metrics, classes) == [
        "recall/urgent cannot be measured: the eval rows have no 'urgent' label, so its threshold cannot be met; "
        "evaluate on more days ([data] eval_days) or drop it",
        "recall/low=0.5000 is below the minimum 0.6",
        "precision/urgent cannot be measured: the eval rows have no 'urgent' label, so its threshold cannot be met; "
        "evaluate on more days ([data] eval_days) or drop it"]
