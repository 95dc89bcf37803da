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
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.baseline import Baseline, in_candidate_order, local_copy, resolve_baseline
from pipelines.config import PRIMARY_OUTPUT, ModelConfig, TaskConfig
from pipelines.lineage import (
    VERDICT_KEYS,
    cached_result,
    chain_problem,
    config_part,
    input_digest,
    model_fingerprint,
    step_inputs,
)
from pipelines.report import render as render_report
from pipelines.runs import Run, StepError, write_result
from pipelines.slicing import slice_metrics, slice_reasons, worst_slice
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
    model_fingerprint: str | None = None  # the SavedModel this judged: publish refuses any other
    baseline: dict[str, Any] = field(default_factory=dict)  # version, how it was resolved, its metrics
    classes: list[str] | None = None
    slices: list[dict[str, Any]] = field(default_factory=list)  # per-slice metrics and example counts
    report: str = ""  # evaluate/report.html


def serving_signature(saved_model: str | Path | Any):
    """``serving_default`` of an exported model: loaded from its directory, or passed through when already
    loaded (loading a SavedModel with its TFT layer takes seconds: a step loads each model once)."""
    if not isinstance(saved_model, str | Path):
        return saved_model
    import tensorflow as tf

    from pipelines.train import SERVING_SIGNATURE

    return tf.saved_model.load(str(saved_model)).signatures[SERVING_SIGNATURE]


def serve_examples(saved_model: str | Path | Any, examples: list[bytes]) -> dict[str, np.ndarray]:
    """The serving path: serialized raw tf.Examples through ``serving_default``; every output."""
    import tensorflow as tf

    serve = serving_signature(saved_model)
    chunks: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(examples), PREDICT_BATCH):
        for name, value in serve(examples=tf.constant(examples[i : i + PREDICT_BATCH])).items():
            chunks.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def predict_examples(saved_model: str | Path | Any, examples: list[bytes], output: str = "probability") -> np.ndarray:
    """One output of the serving path, [rows] or [rows, classes], as float64."""
    return serve_examples(saved_model, examples)[output].astype(np.float64) if examples else np.zeros(0)


def read_eval_split(file_pattern: str, transformed_spec: dict) -> tuple[dict[str, np.ndarray], list[bytes]]:
    """Transformed eval features and, row-aligned, the raw serialized examples they came from (and, as the
    column ``RAW_LABEL_KEY``, the raw label where transform kept it; b"" where a row has none)."""
    import tensorflow as tf

    from pipelines.transform import RAW_EXAMPLE_KEY, RAW_LABEL_KEY

    spec = {**transformed_spec, RAW_EXAMPLE_KEY: tf.io.FixedLenFeature([], tf.string),
            RAW_LABEL_KEY: tf.io.FixedLenFeature([], tf.string, default_value=b"")}
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
            # float32 cells as written (41.98666, not 41.98666000366211): the same float32 when sent back
            out[name] = value.decode() if isinstance(value, bytes) else float(f"{value:.7g}") if isinstance(
                value, float) else value
    return out


def _keras(metric, labels: np.ndarray, predictions: np.ndarray) -> float:
    metric.update_state(labels, predictions)
    return float(metric.result().numpy())


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    import tf_keras

    label_mean, prediction_mean = float(labels.mean()), float(probabilities.mean())
    positives = int((labels > 0.5).sum())
    # ROC AUC needs both classes and PR AUC a positive; Keras answers 0.0 where they are undefined, which a
    # report would show as a terrible model: NaN says "undefined" (and a gate on it refuses, naming NaN)
    both_classes = 0 < positives < len(labels)
    return {
        "auc": _keras(tf_keras.metrics.AUC(num_thresholds=2000), labels, probabilities) if both_classes
        else float("nan"),
        "pr_auc": _keras(tf_keras.metrics.AUC(num_thresholds=2000, curve="PR"), labels, probabilities) if positives
        else float("nan"),
        "log_loss": _keras(tf_keras.metrics.BinaryCrossentropy(), labels, probabilities),
        "accuracy": _keras(tf_keras.metrics.BinaryAccuracy(threshold=0.5), labels, probabilities),
        # TFMA's calibration: mean prediction / mean label (1.0 is calibrated on average)
        "calibration": prediction_mean / label_mean if label_mean else float("nan"),
        "label_mean": label_mean,
        "prediction_mean": prediction_mean,
    }


def multiclass_metrics(labels: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict[str, float]:
    import tf_keras

    ids = labels.astype(np.int64)
    predicted = scores.argmax(axis=1)
    metrics = {
        "accuracy": float((predicted == ids).mean()),
        "log_loss": _keras(tf_keras.metrics.SparseCategoricalCrossentropy(), ids, scores),
    }
    recalls, precisions = [], []
    for k, name in enumerate(classes):
        hits = float(((predicted == k) & (ids == k)).sum())
        # a class the eval rows do not have has no recall: NaN (a threshold on it refuses, saying why), and the
        # macro recall is over the classes they have (a 0 for it would read as a model that misses them all).
        # Never predicted, a class the rows have has precision 0 (no pass); one they lack has none: NaN.
        recalls.append(float(hits / (ids == k).sum()) if (ids == k).any() else float("nan"))
        precisions.append(float(hits / (predicted == k).sum()) if (predicted == k).any()
                          else 0.0 if (ids == k).any() else float("nan"))
        metrics[f"recall/{name}"], metrics[f"precision/{name}"] = recalls[-1], precisions[-1]
    for name, values in (("macro_recall", recalls), ("macro_precision", precisions)):
        metrics[name] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
    return metrics


def class_name_problem(classes: list[str], ids: np.ndarray, raw_labels: np.ndarray, label: str) -> str | None:
    """Why the served class names are not the eval rows' labels, or None: rows labelled 'Gentoo' whose label id
    ``classes`` names 'Adelie', while 'Gentoo' is the name of another id (the names were given in another order
    than the mapping ``preprocessing_fn`` made: a vocabulary of another name, a lookup table). Names are compared
    without case and surrounding spaces (a ``preprocessing_fn`` may normalise the label before mapping it); a
    raw label no class is named after (another spelling, an id beyond the classes) is not evidence of a wrong
    order and passes, as do rows without a raw label (not a string column, or a transform output from before it
    was kept)."""
    def norm(name: str) -> str:
        return name.strip().casefold()

    named = raw_labels != b""
    pairs = sorted({(i, raw.decode(errors="replace")) for i, raw in zip(
        ids[named].astype(np.int64).tolist(), raw_labels[named].tolist(), strict=True)})
    position = {}
    for k, name in enumerate(classes):
        position.setdefault(norm(name), k)
    wrong = [(i, raw) for i, raw in pairs if 0 <= i < len(classes) and norm(raw) != norm(classes[i])
             and position.get(norm(raw), i) != i]
    if not wrong:
        return None
    shown = "; ".join(f"rows labelled {raw!r} have id {i}, which the model names {classes[i]!r}"
                      for i, raw in wrong[:5])
    order = {}  # id -> the class name its rows carry
    for i, raw in pairs:
        if 0 <= i < len(classes) and norm(raw) in position:
            order.setdefault(i, set()).add(classes[position[norm(raw)]])
    fitting = [next(iter(order[i])) if len(order.get(i, ())) == 1 else None for i in range(len(classes))]
    fix = (f"[task] classes = {json.dumps(fitting)}" if None not in fitting and len(set(fitting)) == len(fitting)
           else "[task] classes in the order of those ids")
    return (f"the class names the model would serve are not the labels of column {label!r}: {shown}"
            f"{f' (and {len(wrong) - 5} more)' if len(wrong) > 5 else ''}. The names are {classes} in id order; "
            f"the ids are what preprocessing_fn maps the label to. Set {fix}, or set label_vocabulary to the "
            f"vocab_filename the label is mapped with (README: multi-class)")


def regression_metrics(labels: np.ndarray, values: np.ndarray) -> dict[str, float]:
    errors = values - labels
    total = float(((labels - labels.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(errors).mean()),
        "rmse": float(np.sqrt((errors ** 2).mean())),
        "r2": 1.0 - float((errors ** 2).sum()) / total if total else float("nan"),
        "label_mean": float(labels.mean()),
        "prediction_mean": float(values.mean()),
    }


def task_metrics(task: TaskConfig, labels: np.ndarray, predictions: np.ndarray,
                 classes: list[str] | None) -> dict[str, float]:
    """The task type's metrics plus the config's extra tf_keras metrics, all on the serving path."""
    import tf_keras

    if task.type == "binary":
        metrics = binary_metrics(labels, predictions)
    elif task.type == "multiclass":
        metrics = multiclass_metrics(labels, predictions, classes or [])
    else:
        metrics = regression_metrics(labels, predictions)
    for name in task.keras_metrics:
        try:
            metric = tf_keras.metrics.get(name)
        except ValueError:
            raise ValueError(f"[task] keras_metrics: {name!r} is not a tf_keras metric") from None
        metrics[name] = (_keras(metric, labels, predictions) if isinstance(metric, tf_keras.metrics.Metric)
                         else float(np.mean(metric(labels, predictions).numpy())))
    metrics["examples"] = float(len(labels))
    return metrics


def threshold_reasons(thresholds, metrics: dict[str, float], classes: list[str] | None) -> list[str]:
    """Why the value thresholds refuse the candidate (fails closed: a metric not computed, NaN)."""
    reasons = []
    for bound in thresholds:
        if bound.metric not in metrics:
            reasons.append(f"threshold on {bound.metric!r}, which this run did not compute (classes: {classes})")
        elif bound.metric.startswith(("recall/", "precision/")) and math.isnan(metrics[bound.metric]):
            reasons.append(f"{bound.metric} cannot be measured: the eval rows have no "
                           f"{bound.metric.split('/', 1)[1]!r} label, so its threshold cannot be met; evaluate on "
                           "more days ([data] eval_days) or drop it")
        elif (why := bound.violation(metrics[bound.metric])) is not None:
            reasons.append(why)
    return reasons


def nan_prediction_reason(predictions: np.ndarray) -> str | None:
    """A NaN or infinite prediction on any eval row refuses the model."""
    if np.isfinite(predictions).all():
        return None
    bad = int((~np.isfinite(predictions.reshape(len(predictions), -1))).any(1).sum())
    return (f"{bad} of {len(predictions)} eval rows got a NaN or infinite prediction through the serving signature: "
            "a model that predicts NaN is never blessed")


def row_differences(training: np.ndarray, serving: np.ndarray) -> np.ndarray:
    """Per row, the largest |training - serving| over the row's outputs, relative above magnitude 1
    (a regression value of 5000 agrees to float32 precision, not to 1e-5 absolute). NaN stays NaN."""
    diff = np.abs(training - serving) / np.maximum(1.0, np.abs(serving))
    return diff.reshape(len(diff), -1).max(axis=1) if len(diff) else diff


def skew_reason(training: np.ndarray, serving: np.ndarray, examples: list[bytes],
                tolerance: float = SKEW_TOLERANCE) -> str | None:
    """Why the serving path disagrees with the training path, naming the worst rows; None if it does not.
    Fails closed: a NaN on either path is a disagreement."""
    diff = np.nan_to_num(row_differences(training, serving), nan=np.inf)
    bad = int((~(diff <= tolerance)).sum())
    if not bad:
        return None
    worst = np.argsort(-diff, kind="stable")[:WORST_ROWS_SHOWN]

    def shown(values: np.ndarray) -> str:
        return np.array2string(values, precision=6) if values.ndim else f"{values:.6f}"

    rows = "; ".join(
        f"eval row {i}: training {shown(training[i])} vs serving {shown(serving[i])} (raw {raw_features(examples[i])})"
        for i in worst
    )
    nan = int(np.isnan(training).reshape(len(training), -1).any(1).sum() + np.isnan(serving).reshape(
        len(serving), -1).any(1).sum())
    return (f"train/serve skew: {bad} of {len(diff)} eval rows differ by more than {tolerance}"
            + (f" ({nan} with NaN predictions)" if nan else f" (max {diff.max():.6g})") + f"; worst: {rows}")


def canary_candidates(examples: list[bytes], count: int = CANARY_ROWS) -> list[int]:
    """Eval rows for single-row checks and canaries: the sparsest (most features missing: the rows a batch
    hides) and the first ones."""
    import tensorflow as tf

    pool = range(min(len(examples), 4096))
    present = {i: len(tf.train.Example.FromString(examples[i]).features.feature) for i in pool}
    sparsest = sorted(pool, key=lambda i: (present[i], i))[: count // 2]
    return (sparsest + [i for i in pool if i not in set(sparsest)])[:count]


def single_row_reason(saved_model: str | Path | Any, examples: list[bytes], batched: np.ndarray, rows: list[int],
                      output: str, tolerance: float = SKEW_TOLERANCE) -> str | None:
    """Clients send one row at a time: each row alone must give what it got in a batch. A preprocessing_fn
    that assumes some row of the batch has a value fails here, not in production."""
    import tensorflow as tf

    from pipelines.serving.rest import model_error

    serve = serving_signature(saved_model)
    for i in rows:
        try:
            alone = serve(examples=tf.constant([examples[i]]))[output].numpy().astype(np.float64)
        except tf.errors.InvalidArgumentError as exc:
            return (f"the serving signature fails on eval row {i} sent alone, as a client sends it: "
                    f"{model_error(exc)} (raw {raw_features(examples[i])}); preprocessing_fn must handle a batch "
                    "in which every row misses a feature")
        diff = row_differences(alone, batched[i : i + 1])[0]
        if not diff <= tolerance:
            return (f"eval row {i} sent alone gets {alone[0]} but {batched[i]} in a batch (|diff| {diff:.3g} > "
                    f"{tolerance}): the served model depends on the other rows of a request")
    return None


def metrics_table(metrics: dict[str, float], baseline: dict[str, float] | None) -> str:
    """Candidate and baseline metrics as a small aligned table for the task log."""
    rows = [("metric", "candidate", "baseline", "change")]
    for name in sorted(metrics):
        base = (baseline or {}).get(name)
        change = f"{metrics[name] - base:+.4f}" if base is not None and np.isfinite([metrics[name], base]).all() else "-"
        rows.append((name, f"{metrics[name]:.6g}", "-" if base is None else f"{base:.6g}", change))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, width, strict=True)))
                     for r in rows)


def compare_with_baseline(config: ModelConfig, interval: dt.date, baseline: Baseline | None, serving_root: str | None,
                          examples: list[bytes], labels: np.ndarray, metrics: dict[str, float],
                          classes: list[str] | None) -> tuple[dict[str, Any], list[str], np.ndarray | None]:
    """The baseline's metrics (and predictions) on the same raw eval rows, and why the change thresholds
    refuse the candidate."""
    changes = [b for b in config.thresholds if b.change is not None]
    if baseline is None:
        log.info("no baseline: %s has no published version yet, so only value thresholds apply", config.name)
        return {"version": None, "how": "no published version (first run): value thresholds only"}, [], None
    task = config.task
    try:
        with local_copy(serving_root, config.name, baseline.version) as path:
            outputs = serve_examples(path, examples)
        predictions = outputs[PRIMARY_OUTPUT[task.type]].astype(np.float64)
        if task.type == "multiclass":
            predictions = in_candidate_order(predictions, outputs["class_ids"], outputs["classes"], baseline.classes,
                                             classes or [])
        base = {k: round(v, 6) for k, v in task_metrics(task, labels, predictions, classes).items()}
    except Exception as exc:  # noqa: BLE001 - any failure to score the baseline is reported, never a pass
        why = (f"baseline version {baseline.version} ({baseline.how}) could not be scored on this run's eval rows: "
               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        log.warning(why)
        return {"version": baseline.version, "how": baseline.how, "error": why}, (
            [why + "; the change thresholds cannot be judged"] if changes else []), None
    compared = {"version": baseline.version, "how": baseline.how, "metrics": base}
    if baseline.interval and baseline.interval > interval.isoformat():
        # a backfill: the baseline was trained on newer data, which includes this run's eval days, so its
        # metrics here are inflated; value thresholds still apply, and rollout never promotes an older model
        note = (f"baseline version {baseline.version} was trained for {baseline.interval}, after this run's interval "
                f"{interval}: it has seen these eval rows, so the change thresholds are not judged (a backfill)")
        log.warning(note)
        return {**compared, "note": note}, [], predictions
    reasons = [why for b in changes if (why := b.change.violation(b.metric, metrics.get(b.metric), base.get(b.metric),
                                                                  baseline.version)) is not None]
    return compared, reasons, predictions


def evaluate(config: ModelConfig, *, interval: dt.date, artifact_root: Path, serving_root: str | None = None,
             server_config: str | None = None, stable_version: int | None = None,
             force: bool = False) -> EvaluateResult:
    """Score the candidate (and the baseline) through the serving signature; bless or not, with reasons.

    :param serving_root: where published versions are; the baseline is resolved there (see ``pipelines.baseline``).
    :param server_config: the model server's config file, whose ``stable`` label names the baseline.
    :param stable_version: that label's version, read from the file by the caller (before ``server_config``).
    """
    run = Run(artifact_root, config.name, interval)
    transformed = run.read_result("transform")
    trained = run.read_result("train")
    if (problem := chain_problem(config, interval, run, through="train")) is not None:
        raise StepError(f"{problem} before evaluate")  # else the model left from before is judged as this run's
    # the model itself (a forced retrain has the same inputs but other weights), the eval split
    # (transform's digest), the thresholds (config), this code and the baseline it is compared with
    fingerprint = model_fingerprint(trained["saved_model"])
    baseline = resolve_baseline(config.name, serving_root, server_config, stable_version) if serving_root else None
    digest = input_digest(step="evaluate", **step_inputs(config), transform=transformed["input_digest"],
                          # its verdict's settings (thresholds, slices, skew tolerance) and the canary rows it
                          # ships (no other [rollout] setting)
                          verdict=config_part(config, VERDICT_KEYS),
                          canary_rows=max(CANARY_ROWS, config.rollout.canary_rows),
                          saved_model=fingerprint,
                          baseline=[baseline.version, baseline.content_digest, baseline.interval] if baseline else None)
    if (hit := cached_result(run, "evaluate", digest, force=force or fingerprint is None)) is not None:
        return EvaluateResult(**hit)

    import tensorflow_transform as tft
    import tf_keras

    from pipelines.train import check_output_shape, class_names
    from pipelines.transform import RAW_LABEL_KEY

    features = config.features_module()
    label = features.transformed_name(features.LABEL_KEY)
    task = config.task
    output = PRIMARY_OUTPUT[task.type]

    tft_output = tft.TFTransformOutput(transformed["transform_fn"])
    classes = class_names(task, tft_output, features.SCHEMA.label) if task.type == "multiclass" else None
    columns, examples = read_eval_split(transformed["eval_files"], tft_output.transformed_feature_spec())
    labels = columns.pop(label).astype(np.float64).reshape(-1)
    raw_labels = columns.pop(RAW_LABEL_KEY)

    keras_model = tf_keras.models.load_model(trained["saved_model"], compile=False)
    check_output_shape(keras_model, task, classes)  # a model trained before the task's classes changed
    if task.type == "multiclass" and (problem := class_name_problem(classes, labels, raw_labels,
                                                                    features.SCHEMA.label)):
        raise StepError(problem)
    serve = serving_signature(trained["saved_model"])  # the exported model, loaded fresh from disk, once
    serving = predict_examples(serve, examples, output)
    training = keras_model.predict({k: columns[k] for k in keras_model.input_names}, batch_size=PREDICT_BATCH,
                                   verbose=0).astype(np.float64).reshape(serving.shape)

    metrics = {k: round(v, 6) for k, v in task_metrics(task, labels, serving, classes).items()}
    metrics["max_abs_skew"] = float(np.max(np.nan_to_num(row_differences(training, serving), nan=np.inf)))
    reasons = []
    if (why := nan_prediction_reason(serving)) is not None:
        reasons.append(why)
    reasons += threshold_reasons(config.thresholds, metrics, classes)
    tolerance = config.evaluation.skew_tolerance
    if (why := skew_reason(training, serving, examples, tolerance)) is not None:
        reasons.append(why)
    canary_rows = canary_candidates(examples, max(CANARY_ROWS, config.rollout.canary_rows))
    if (why := single_row_reason(serve, examples, serving, canary_rows, output, tolerance)) is not None:
        reasons.append(why)
    compared, changed, baseline_predictions = compare_with_baseline(config, interval, baseline, serving_root, examples,
                                                                    labels, metrics, classes)
    reasons += changed
    slices: list[dict[str, Any]] = []
    if config.evaluation.slices:
        raw_rows = [raw_features(e) for e in examples]
        slices = slice_metrics(task, config.evaluation.slices, raw_rows, labels, serving, classes)
        if baseline_predictions is not None:  # the same slices scored by stable: which ones moved
            before = slice_metrics(task, config.evaluation.slices, raw_rows, labels, baseline_predictions, classes)
            for candidate, stable in zip(slices, before, strict=True):
                candidate["baseline_metrics"] = stable["metrics"]
        reasons += slice_reasons(slices, config.evaluation.slice_thresholds, config.evaluation.slice_min_examples)
        for bound in config.thresholds:  # an overall threshold broken: the slice where it breaks worst
            if bound.violation(metrics.get(bound.metric)) is not None and \
                    (hint := worst_slice(slices, bound, config.evaluation.slice_min_examples)) is not None:
                reasons = [f"{r} ({hint})" if r.startswith(f"{bound.metric}=") else r for r in reasons]
    blessed = not reasons
    log.info("candidate vs baseline (%s):\n%s", compared.get("how"), metrics_table(metrics, compared.get("metrics")))
    log.info("%s", "BLESSED" if blessed else "NOT blessed:\n" + "\n".join(f"  - {r}" for r in reasons))

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
        model_fingerprint=fingerprint,
        baseline=compared,
        classes=classes,
        slices=slices,
        report=str(final / "report.html"),
    )
    with staged_dir(final) as out:
        write_json(out / "blessing.json", {
            "blessed": blessed,
            "reasons": reasons,
            "metrics": metrics,
            "thresholds": [asdict(b) for b in config.thresholds],
            "task": task.type,
            "classes": classes,
            "skew_tolerance": tolerance,
            "saved_model": trained["saved_model"],
            "model_fingerprint": fingerprint,
            "baseline": compared,
        })
        # Real eval rows with their offline (serving-path) predictions: canary requests for a rollout.
        write_json(out / "canary.json", [
            {"b64": base64.b64encode(examples[i]).decode(), "features": raw_features(examples[i]),
             "output": output, "prediction": serving[i].tolist()}
            for i in canary_rows
        ])
        (out / "report.html").write_text(render_report(
            asdict(result), task=task.type, thresholds=[asdict(b) for b in config.thresholds], labels=labels,
            predictions=serving, classes=classes, baseline_predictions=baseline_predictions,
            curves=trained.get("curves", {}), skew_tolerance=tolerance))
        write_result(out, result)
    return result
