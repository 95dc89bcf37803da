"""evaluate: metrics through the exported serving signature on raw eval rows, and the blessing.

The eval partitions are read raw, encoded as the tf.Examples a client would send,
and scored by the SavedModel loaded fresh from disk: the gate judges the model
exactly as it will be served.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config import ModelConfig
from pipelines.runs import Run, write_result
from pipelines.schema import RawSchema, to_tfxio_batch
from pipelines.storage import read_files, staged_dir, write_json

log = logging.getLogger(__name__)

PREDICT_BATCH = 4096


@dataclass
class EvaluateResult:
    model: str
    interval: str
    saved_model: str
    blessed: bool
    reasons: list[str]
    metrics: dict[str, float]
    blessing: str


def raw_examples(table, schema: RawSchema) -> list[bytes]:
    """Raw rows as serialized tf.Examples carrying the serving features (no label)."""
    from tfx_bsl.coders.example_coder import RecordBatchToExamples

    return RecordBatchToExamples(to_tfxio_batch(table, schema.serving_features()))


def predict_examples(saved_model_dir: str, examples: list[bytes]) -> np.ndarray:
    import tensorflow as tf

    from pipelines.train import SERVING_OUTPUT

    serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    chunks = [
        serve(examples=tf.constant(examples[i : i + PREDICT_BATCH]))[SERVING_OUTPUT].numpy()
        for i in range(0, len(examples), PREDICT_BATCH)
    ]
    return np.concatenate(chunks).astype(np.float64)


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


def evaluate(config: ModelConfig, *, interval: dt.date, data_root: str, artifact_root: Path) -> EvaluateResult:
    schema: RawSchema = config.features_module().SCHEMA
    run = Run(artifact_root, config.name, interval)
    validation = run.read_result("validate")
    trained = run.read_result("train")
    _, eval_dates = config.split_window(interval)
    files = [Path(f) for d in eval_dates for f in validation["partitions"][d.isoformat()]]
    table = read_files(files, config.data.format, schema)
    labels = table.column(schema.label).to_numpy().astype(np.float64)
    probabilities = predict_examples(trained["saved_model"], raw_examples(table, schema))
    metrics = {k: round(v, 6) for k, v in binary_metrics(labels, probabilities).items()}

    reasons = []
    for bound in config.thresholds:
        if bound.metric not in metrics:
            reasons.append(f"threshold on unknown metric {bound.metric!r}; metrics are {sorted(metrics)}")
        elif (why := bound.violation(metrics[bound.metric])) is not None:
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
    )
    with staged_dir(final) as out:
        write_json(out / "blessing.json", {
            "blessed": blessed,
            "reasons": reasons,
            "metrics": metrics,
            "thresholds": [b.__dict__ for b in config.thresholds],
            "saved_model": trained["saved_model"],
        })
        np.save(out / "eval_predictions.npy", probabilities)
        write_result(out, result)
    return result
