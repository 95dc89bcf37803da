"""evaluate: metrics through the exported serving signature, a train/serve skew gate, the blessing.

The eval split comes from the transform output, where each transformed example
also carries its raw row as the serialized tf.Example a client would send. So
every eval row is scored twice:

- the **training path**: the transformed example, fed to the trained Keras model;
- the **serving path**: the raw example, through the exported SavedModel's
  ``serving_default`` signature, loaded fresh from disk (TFT layer inside).

Metrics are computed on the serving path: the gate judges the model as it will
be served. The two paths must agree within ``SKEW_TOLERANCE`` on every row, or
the model is not blessed.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import ModelConfig
from pipelines.lineage import cached_result, input_digest, model_fingerprint, step_inputs
from pipelines.runs import Run, write_result
from pipelines.storage import staged_dir, write_json

log = logging.getLogger(__name__)

PREDICT_BATCH = 4096
SKEW_TOLERANCE = 1e-5
WORST_ROWS_SHOWN = 3
CANARY_ROWS = 64


@dataclass
class EvaluateResult:
    model: str
    interval: str
    saved_model: str
    blessed: bool
    reasons: list[str]
    metrics: dict[str, float]
    blessing: str
    canary: str
    input_digest: str = ""
    cached: bool = False


def predict_examples(saved_model_dir: str, examples: list[bytes]) -> np.ndarray:
    """The serving path: serialized raw tf.Examples through ``serving_default``."""
    import tensorflow as tf

    from pipelines.train import SERVING_OUTPUT, SERVING_SIGNATURE

    serve = tf.saved_model.load(saved_model_dir).signatures[SERVING_SIGNATURE]
    chunks = [
        serve(examples=tf.constant(examples[i : i + PREDICT_BATCH]))[SERVING_OUTPUT].numpy()
        for i in range(0, len(examples), PREDICT_BATCH)
    ]
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)


def read_eval_split(file_pattern: str, transformed_spec: dict) -> tuple[dict[str, np.ndarray], list[bytes]]:
    """Transformed eval features and, row-aligned, the raw serialized examples they came from."""
    import tensorflow as tf

    from pipelines.transform import RAW_EXAMPLE_KEY

    spec = {**transformed_spec, RAW_EXAMPLE_KEY: tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(tf.io.gfile.glob(file_pattern)).batch(PREDICT_BATCH)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in ds.map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value.numpy())
    columns = {k: np.concatenate(v) for k, v in parts.items()}
    return columns, list(columns.pop(RAW_EXAMPLE_KEY))


def raw_features(example: bytes) -> dict[str, Any]:
    """A serialized raw tf.Example as a plain dict (a missing feature is absent)."""
    import tensorflow as tf

    out = {}
    for name, feature in tf.train.Example.FromString(example).features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if values:
            value = values[0]
            out[name] = value.decode() if isinstance(value, bytes) else value
    return out


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    import tf_keras

    def value(metric) -> float:
        metric.update_state(labels, probabilities)
        return float(metric.result().numpy())

    return {
        "auc": value(tf_keras.metrics.AUC(num_thresholds=2000)),
        "log_loss": value(tf_keras.metrics.BinaryCrossentropy()),
        "accuracy": value(tf_keras.metrics.BinaryAccuracy(threshold=0.5)),
        "label_mean": float(labels.mean()),
        "prediction_mean": float(probabilities.mean()),
        "examples": float(len(labels)),
    }


def skew_reason(training: np.ndarray, serving: np.ndarray, examples: list[bytes]) -> str | None:
    """Why the serving path disagrees with the training path, naming the worst rows; None if it does not."""
    diff = np.abs(training - serving)
    bad = int((diff > SKEW_TOLERANCE).sum())
    if not bad:
        return None
    worst = np.argsort(-diff)[:WORST_ROWS_SHOWN]
    rows = "; ".join(
        f"eval row {i}: training {training[i]:.6f} vs serving {serving[i]:.6f} (raw {raw_features(examples[i])})"
        for i in worst
    )
    return (f"train/serve skew: {bad} of {len(diff)} eval rows differ by more than {SKEW_TOLERANCE} "
            f"(max {diff.max():.6g}); worst: {rows}")


def evaluate(config: ModelConfig, *, interval: dt.date, artifact_root: Path, force: bool = False) -> EvaluateResult:
    run = Run(artifact_root, config.name, interval)
    transformed = run.read_result("transform")
    trained = run.read_result("train")
    # the model itself (a forced retrain has the same inputs but other weights), the eval split
    # (transform's digest), the thresholds (config) and this code
    fingerprint = model_fingerprint(trained["saved_model"])
    digest = input_digest(step="evaluate", **step_inputs(config), transform=transformed["input_digest"],
                          saved_model=fingerprint)
    if (hit := cached_result(run, "evaluate", digest, force=force or fingerprint is None)) is not None:
        return EvaluateResult(**hit)

    import tensorflow_transform as tft
    import tf_keras

    features = config.features_module()
    label = features.transformed_name(features.LABEL_KEY)

    tft_output = tft.TFTransformOutput(transformed["transform_fn"])
    columns, examples = read_eval_split(transformed["eval_files"], tft_output.transformed_feature_spec())
    labels = columns.pop(label).astype(np.float64)

    keras_model = tf_keras.models.load_model(trained["saved_model"], compile=False)
    training = keras_model.predict({k: columns[k] for k in keras_model.input_names}, batch_size=PREDICT_BATCH,
                                   verbose=0).reshape(-1).astype(np.float64)
    serving = predict_examples(trained["saved_model"], examples)

    metrics = {k: round(v, 6) for k, v in binary_metrics(labels, serving).items()}
    metrics["max_abs_skew"] = float(np.abs(training - serving).max())
    reasons = []
    for bound in config.thresholds:
        if bound.metric not in metrics:
            reasons.append(f"threshold on unknown metric {bound.metric!r}; metrics are {sorted(metrics)}")
        elif (why := bound.violation(metrics[bound.metric])) is not None:
            reasons.append(why)
    if (why := skew_reason(training, serving, examples)) is not None:
        reasons.append(why)
    blessed = not reasons
    log.info("metrics %s -> %s", metrics, "BLESSED" if blessed else "NOT blessed: " + "; ".join(reasons))

    final = run.step_dir("evaluate")
    result = EvaluateResult(
        model=config.name,
        interval=interval.isoformat(),
        saved_model=trained["saved_model"],
        blessed=blessed,
        reasons=reasons,
        metrics=metrics,
        blessing=str(final / "blessing.json"),
        canary=str(final / "canary.json"),
        input_digest=digest,
    )
    with staged_dir(final) as out:
        write_json(out / "blessing.json", {
            "blessed": blessed,
            "reasons": reasons,
            "metrics": metrics,
            "thresholds": [b.__dict__ for b in config.thresholds],
            "skew_tolerance": SKEW_TOLERANCE,
            "saved_model": trained["saved_model"],
        })
        # Real eval rows with their offline (serving-path) predictions: canary requests for a rollout.
        write_json(out / "canary.json", [
            {"b64": base64.b64encode(examples[i]).decode(), "features": raw_features(examples[i]),
             "prediction": float(serving[i])}
            for i in range(min(CANARY_ROWS, len(examples)))
        ])
        write_result(out, result)
    return result
