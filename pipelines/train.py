"""train: tf_keras on the transformed TFRecords; export ONE SavedModel that takes raw features.

The serving signature parses serialized tf.Examples with the raw schema (label
excluded) and applies the TFT transform layer inside the model, so serving
computes features with exactly the graph training used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.cluster import WORKERS_ENV
from pipelines.cluster import configure as configure_cluster
from pipelines.config import PRIMARY_OUTPUT, ModelConfig, TaskConfig, TrainConfig
from pipelines.lineage import cached_result, chain_problem, input_digest, step_inputs
from pipelines.runs import Run, StepError, write_result
from pipelines.schema import RAW_SIGNATURE
from pipelines.storage import staged_dir

log = logging.getLogger(__name__)



@dataclass
class TrainResult:
    model: str
    interval: str
    saved_model: str
    params: dict[str, Any]
    devices: list[str]
    epochs_run: int
    resumed_from_epoch: int
    strategy: str
    seconds: float
    history: dict[str, float]
    tensorboard: str
    input_digest: str = ""
    transform_digest: str = ""  # the transform output trained on (its input_digest): evaluate checks it
    cached: bool = False
    # False on a MultiWorkerMirroredStrategy worker that is not the chief: it trained its share and
    # exported to scratch; the chief alone writes the step's output
    chief: bool = True
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # per epoch, for the report


PARSE_BLOCK = 16_384  # records parsed per tf.io.parse_example call: the streamed input's unit of caching and shuffling
SHUFFLE_BLOCKS = 64  # the streamed input shuffles the order of this many parsed blocks (1M rows) each epoch


def make_dataset(file_pattern: str, feature_spec: dict, label: str, *, batch_size: int,
                 shuffle_seed: int | None = None, cache_file: str | None = None):
    """Batched (features, label) from transformed tf.Example TFRecords, for data that does not fit in memory.

    Records are parsed ``PARSE_BLOCK`` at a time. Reading a TFRecord file costs a dataset op per record (0.64 s
    of the 2.2 s an epoch of 120,000 rows took here: the input, not the model, was the limit), so with
    ``cache_file`` the parsed blocks are written to that file during the first epoch and read back whole in the
    next ones, which then run at the in-memory fit's speed (benchmarks/train_input.py). With ``shuffle_seed``,
    each epoch visits the blocks in a new order (``SHUFFLE_BLOCKS`` at a time) and permutes the rows inside each
    block; ``rebatch`` then slices blocks into batches without a per-example op."""
    import tensorflow as tf

    files = tf.data.Dataset.list_files(file_pattern, shuffle=False)

    def parse(serialized):
        features = tf.io.parse_example(serialized, feature_spec)
        return features, features.pop(label)

    ds = tf.data.TFRecordDataset(files).batch(PARSE_BLOCK).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if cache_file is not None:
        # TF 2.21 logs "The calling iterator did not fully read the dataset being cached" once per cache file even
        # after a full first pass (even for Dataset.range(n).cache(file); tensorflow/tensorflow#60174, #122752):
        # the cache files are complete after the first epoch and the next epochs read them (checked here).
        ds = ds.cache(cache_file)
    if shuffle_seed is not None:
        def permute(features, labels):
            order = tf.random.shuffle(tf.range(tf.shape(labels)[0]), seed=shuffle_seed)
            return {name: tf.gather(values, order) for name, values in features.items()}, tf.gather(labels, order)

        ds = ds.shuffle(SHUFFLE_BLOCKS, seed=shuffle_seed, reshuffle_each_iteration=True)
        ds = ds.map(permute)  # sequential: a seeded random op stays deterministic (op determinism is on)
    ds = ds.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)
    # Under MultiWorkerMirroredStrategy each worker keeps its share of the batches. The default (shard
    # by file) fails when transform wrote fewer files than there are workers, as it does for small data.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def parsed_bytes(feature_spec: dict, rows: int) -> int:
    """About how many bytes ``rows`` parsed rows of ``feature_spec`` take (a string or variable-length feature
    counted as 64 bytes)."""
    import math

    import tensorflow as tf

    per_row = 0
    for feature in feature_spec.values():
        if isinstance(feature, tf.io.FixedLenFeature) and feature.dtype != tf.string:
            per_row += math.prod(feature.shape or [1]) * feature.dtype.size
        else:
            per_row += 64
    return per_row * rows


def input_cache_file(cache_dir: Path, name: str, needed: int) -> str | None:
    """A file for make_dataset's cache of parsed blocks in ``cache_dir``, or None (stream every epoch) when the
    disk there has less than twice the ``needed`` bytes free."""
    free = shutil.disk_usage(cache_dir).free
    if free < 2 * needed:
        log.warning("streaming %s from the TFRecords every epoch: its parsed cache needs about %.1f GB and %s has "
                    "%.1f GB free (set TMPDIR to a larger disk to cache it)", name, needed / 1e9, cache_dir, free / 1e9)
        return None
    return str(cache_dir / name)


def in_memory_arrays(file_pattern: str, feature_spec: dict, label: str, *, parse_batch: int = 8192):
    """Every transformed example as numpy arrays (features dict, labels), parsed in large batches: what
    ``model.fit`` consumes fastest (it shuffles and slices the arrays itself, no per-example ops)."""
    import numpy as np
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(file_pattern))
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).batch(parse_batch)
    ds = ds.map(lambda s: tf.io.parse_example(s, feature_spec), num_parallel_calls=tf.data.AUTOTUNE)
    columns: dict[str, list] = {}
    for parsed in ds.prefetch(tf.data.AUTOTUNE):
        for name, tensor in parsed.items():
            columns.setdefault(name, []).append(tensor.numpy())
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    return arrays, arrays.pop(label)


SERVING_SIGNATURE = "serving_default"  # serialized tf.Example with raw features


def class_names(task: TaskConfig, tft_output, label: str | None = None) -> list[str]:
    """A multi-class task's class names in label-id order: from the config, or the label's TFT vocabulary.
    Configured ``classes`` are refused where the TFT vocabulary named after the ``label`` column (its
    ``vocab_filename``, as the label's ids are usually made) gives a name another id, or has a name they lack:
    the ids are that vocabulary's order (by frequency, unless pinned), so each name would go to another
    class's scores."""
    if task.classes:
        vocabulary = _vocabularies(tft_output).get(label) if label else None
        if vocabulary is not None and (
                any(vocabulary.index(c) != i for i, c in enumerate(task.classes) if c in vocabulary)
                or set(vocabulary) - set(task.classes)):
            hashed = vocabulary == sorted(vocabulary, key=lambda name: hashlib.sha1(name.encode()).digest())
            raise StepError(
                f"[task] classes = {list(task.classes)} are not the label's ids: TFT vocabulary {label!r} "
                f"numbers them {vocabulary}, and a label mapped through it has those ids. Set label_vocabulary = "
                f"{label!r} instead of classes" + (
                    " (its order is the one fingerprint_shuffle=True gives, by a hash of each name; without it, "
                    "TFT orders a vocabulary by frequency, which can change from one run to the next; README: "
                    "multi-class)" if hashed else
                    ", and pin the order with fingerprint_shuffle=True: TFT orders a vocabulary by frequency, "
                    "which can change from one run to the next (README: multi-class)"))
        return list(task.classes)
    try:
        vocabulary = tft_output.vocabulary_by_name(task.label_vocabulary)
    except (ValueError, OSError) as exc:
        raise StepError(f"[task] label_vocabulary = {task.label_vocabulary!r}, but transform wrote no such TFT "
                        f"vocabulary ({exc}); compute it in preprocessing_fn with "
                        f"vocab_filename={task.label_vocabulary!r}") from None
    return [v.decode() if isinstance(v, bytes) else str(v) for v in vocabulary]


def _vocabularies(tft_output) -> dict[str, list[str]]:
    """Every TFT vocabulary the transform wrote, by its file name (the ``vocab_filename``)."""
    import tensorflow as tf

    assets = f"{tft_output.transform_savedmodel_dir}/assets"
    found = {}
    for name in sorted(tf.io.gfile.listdir(assets)) if tf.io.gfile.isdir(assets) else []:
        try:
            found[name] = [v.decode() if isinstance(v, bytes) else str(v) for v in tft_output.vocabulary_by_name(name)]
        except (ValueError, OSError, UnicodeDecodeError):
            continue  # not a vocabulary TFT reads back
    return found


def task_outputs(task: TaskConfig, output, classes: list[str] | None):
    """The served outputs of one task type from the model's output tensor (TF Serving's usual names)."""
    import tensorflow as tf

    if task.type == "multiclass":
        scores = tf.cast(output, tf.float32)
        ids = tf.argmax(scores, axis=1)
        return {"scores": scores, "class_ids": ids, "classes": tf.gather(tf.constant(classes), ids)}
    return {PRIMARY_OUTPUT[task.type]: tf.cast(tf.reshape(output, [-1]), tf.float32)}


def check_output_shape(model, task: TaskConfig, classes: list[str] | None) -> None:
    """build_model's output must fit the task: one value per row, or one score per class."""
    width = model.output_shape[-1] if len(model.output_shape) > 1 else 1
    want = len(classes) if task.type == "multiclass" else 1
    if width != want:
        what = f"{want} scores (one per class: {classes})" if task.type == "multiclass" else "1 value per row"
        raise StepError(f"build_model's output has shape {model.output_shape}, but a {task.type} task needs {what}")


def export_serving_model(model, tft_output, schema, export_dir: Path, task: TaskConfig | None = None) -> None:
    """Save ``model`` with the TFT layer inside and two raw-feature signatures.

    ``serving_default`` parses serialized tf.Examples (a missing feature is simply
    absent); ``serving_raw`` takes one named tensor per raw feature, one value per
    row. Both feed the same TFT layer and model, so they agree on the same row.
    The outputs follow the task type: ``probability`` (binary), ``value`` (regression),
    or ``scores``, ``class_ids`` and ``classes`` (multi-class).
    """
    import tensorflow as tf
    import tf_keras

    from pipelines.tf_schema import TF_DTYPES, serving_feature_spec, value_checks

    # The TFT graph takes float32: under a mixed_float16 policy a new layer would cast its inputs to
    # float16, so it is made under float32 (a layer keeps the policy it was made with).
    policy = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy("float32")
    try:
        model.tft_layer = tft_output.transform_features_layer()  # tracked, so its assets ship with the model
    finally:
        tf_keras.mixed_precision.set_global_policy(policy)
    task = task or TaskConfig()
    features = schema.serving_features()
    raw_spec = serving_feature_spec(schema)
    input_names = list(model.input_names)
    classes = class_names(task, tft_output, schema.label) if task.type == "multiclass" else None
    check_output_shape(model, task, classes)

    def predict_raw(raw: dict) -> dict:
        transformed = model.tft_layer(value_checks(raw, features))  # refused before the TFT graph reads them
        return task_outputs(task, model({name: transformed[name] for name in input_names}), classes)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        return predict_raw(tf.io.parse_example(serialized, raw_spec))

    @tf.function(input_signature=[tf.TensorSpec([None], TF_DTYPES[f.type], name=f.name) for f in features])
    def serve_raw_features(*columns):
        raw = {}
        for f, column in zip(features, columns, strict=True):
            if f.nullable:  # the TFT graph takes nullable columns as [batch, 1] SparseTensors
                rows = tf.range(tf.shape(column, out_type=tf.int64)[0])
                indices = tf.stack([rows, tf.zeros_like(rows)], axis=1)
                raw[f.name] = tf.SparseTensor(indices, column, [tf.shape(column, out_type=tf.int64)[0], 1])
            else:
                raw[f.name] = column
        return predict_raw(raw)

    model.save(str(export_dir), save_format="tf",
               signatures={SERVING_SIGNATURE: serve_tf_examples, RAW_SIGNATURE: serve_raw_features})
    import json

    from pipelines.schema import RAW_FEATURES_ASSET, SERVING_CHECKS, SERVING_CHECKS_ASSET, describe

    asset = Path(export_dir) / RAW_FEATURES_ASSET
    asset.parent.mkdir(parents=True, exist_ok=True)
    asset.write_text(json.dumps(describe(features), indent=1))
    (Path(export_dir) / SERVING_CHECKS_ASSET).write_text(json.dumps(SERVING_CHECKS))


class NoGPUError(StepError):
    """GPUs were requested but TensorFlow sees none: fail before any data is read."""


def gpu_preflight(requested: int) -> list[str]:
    """Log the devices TensorFlow sees; fail fast when ``requested`` GPUs are not all visible."""
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_physical_devices()]
    gpus = tf.config.list_physical_devices("GPU")
    log.info("TensorFlow %s sees devices: %s (GPUs requested: %d)", tf.__version__, devices, requested)
    if requested and len(gpus) < requested:
        raise NoGPUError(f"{requested} GPU(s) requested but TensorFlow sees {len(gpus)} "
                         f"(devices: {devices}); check the node's GPU driver and the nvidia.com/gpu limit")
    return devices


def distribution_strategy(name: str):
    """``default``: one device; ``mirrored``: every local GPU; ``multi_worker``: the cluster in TF_CONFIG."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def epoch_log(backup_dir: Path, chief: bool):
    """A callback that records each epoch's metrics beside the checkpoints (``history.json``, pushed with them on
    S3), so a resumed attempt's curves and final metrics cover every epoch, not only those it ran itself (all
    were lost when a kill came after the last epoch's checkpoint). ``curves()``: per metric, one value an epoch."""
    import tf_keras

    path = backup_dir / "history.json"

    class EpochLog(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            try:  # the killed attempt's (the checkpoints' directory is keyed by the inputs: the same training)
                self.epochs = {int(k): v for k, v in json.loads(path.read_text()).items()}
            except (OSError, ValueError, AttributeError):
                self.epochs = {}

        def on_epoch_end(self, epoch, logs=None):
            self.epochs[epoch] = {k: float(v) for k, v in (logs or {}).items()}
            if chief:  # before BackupAndRestore's save: a kill between the two reruns the epoch, which replaces it
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".json.tmp")  # never a truncated file: renamed into place whole
                partial.write_text(json.dumps(self.epochs))
                os.replace(partial, path)

        def curves(self) -> dict[str, list[float]]:
            epochs = [self.epochs[e] for e in sorted(self.epochs)]
            names = [k for k in (epochs[0] if epochs else {}) if all(k in e for e in epochs)]
            return {k: [round(e[k], 6) for e in epochs] for k in names}

    return EpochLog()


def checkpoint_callbacks(backup_dir: Path) -> list:
    """With the artifact root on S3: push the checkpoints after every epoch (after BackupAndRestore
    wrote them), so a new pod resumes a killed one. Nothing for a local root."""
    import tf_keras

    from pipelines.staging import checkpoint_sync

    sync = checkpoint_sync(backup_dir)
    if sync is None:
        return []

    class PushCheckpoints(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # only the worker that writes the chief checkpoint uploads (MultiWorkerMirroredStrategy)
            if self.model.distribute_strategy.extended.should_checkpoint:
                sync()

    return [PushCheckpoints()]


def training_data(params: TrainConfig, transformed: dict, spec: dict, label: str, cache_dir: Path) -> dict:
    """``model.fit`` arguments for the transformed data: numpy arrays when the TFRecords fit in
    ``[train] in_memory_max_mb`` (and one worker trains), else datasets streamed from the TFRecords with their
    parsed blocks cached in ``cache_dir``."""
    import tensorflow as tf

    train_bytes = sum(Path(f).stat().st_size for f in tf.io.gfile.glob(transformed["train_files"]))
    if params.strategy != "multi_worker" and train_bytes <= params.in_memory_max_mb * 2**20:
        x, y = in_memory_arrays(transformed["train_files"], spec, label)
        data = {"x": x, "y": y, "batch_size": params.batch_size, "shuffle": True,
                "validation_data": in_memory_arrays(transformed["eval_files"], spec, label),
                "validation_batch_size": 4096}
        log.info("training from memory: %d rows, %.1f MB of TFRecords (<= [train] in_memory_max_mb %d)",
                 len(y), train_bytes / 2**20, params.in_memory_max_mb)
    else:
        data = {"x": make_dataset(transformed["train_files"], spec, label, batch_size=params.batch_size,
                                  shuffle_seed=params.seed, cache_file=input_cache_file(
                                      cache_dir, "train", parsed_bytes(spec, transformed["rows"]["train"]))),
                "validation_data": make_dataset(transformed["eval_files"], spec, label, batch_size=4096,
                                                cache_file=input_cache_file(
                                                    cache_dir, "eval", parsed_bytes(spec, transformed["rows"]["eval"])))}
        log.info("training streamed from TFRecords (%.1f MB%s), parsed blocks cached in %s after the first epoch",
                 train_bytes / 2**20, "; multi_worker: each worker keeps its share of the batches"
                 if params.strategy == "multi_worker" else f" > [train] in_memory_max_mb {params.in_memory_max_mb}",
                 cache_dir)
    return data


def train(config: ModelConfig, *, interval: dt.date, artifact_root: Path,
          overrides: dict[str, Any] | None = None, force: bool = False, gpus: int = 0) -> TrainResult:
    started = time.monotonic()
    params: TrainConfig = dataclasses.replace(config.train, **(overrides or {}))
    run = Run(artifact_root, config.name, interval)
    transformed = run.read_result("transform")
    if (problem := chain_problem(config, interval, run, through="transform")) is not None:
        raise StepError(f"{problem} before train")  # else it fits this code behind another code's TFT graph
    digest = input_digest(step="train", **step_inputs(config), transform=transformed["input_digest"],
                          params=dataclasses.asdict(params))
    if (hit := cached_result(run, "train", digest, force=force)) is not None:
        return TrainResult(**hit)

    log.info("training %s %s with params %s", config.name, interval, json.dumps(dataclasses.asdict(params),
                                                                               sort_keys=True))
    devices = gpu_preflight(gpus)
    import tensorflow as tf
    import tensorflow_transform as tft
    import tf_keras

    features = config.features_module()
    module = config.model_module()

    # The strategy first: MultiWorkerMirroredStrategy configures collectives and must exist before
    # TensorFlow runs any op ("Collective ops must be configured at program startup").
    if params.mixed_precision:
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
    if params.strategy == "multi_worker":
        cluster = configure_cluster()
        if cluster:
            log.info("multi-worker cluster: worker %s of %s", cluster["task"]["index"], cluster["cluster"]["worker"])
        else:  # e.g. the local backend: [train] workers pods exist only as a Kubernetes Indexed Job
            log.warning("strategy multi_worker without a cluster (no TF_CONFIG or %s): training as one worker",
                        WORKERS_ENV)
    strategy = distribution_strategy(params.strategy)
    chief = strategy.extended.should_checkpoint  # False only on a multi-worker worker that is not the chief
    log.info("strategy %s with %d replica(s), mixed precision %s%s", params.strategy,
             strategy.num_replicas_in_sync, params.mixed_precision,
             "" if chief else "; not the chief: exporting to scratch, the chief writes the output")

    tf_keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()

    tft_output = tft.TFTransformOutput(transformed["transform_fn"])
    spec = tft_output.transformed_feature_spec()
    label = features.transformed_name(features.LABEL_KEY)
    # Checkpoints live outside the staged output so a killed attempt resumes from its last epoch;
    # keyed by the input digest, so an attempt with other params or data never restores them.
    backup_dir = run.run_dir / "train_checkpoints" / digest[:16]
    # every worker saves (the save may run collectives), but only the chief into the run directory
    output = staged_dir(run.step_dir("train")) if chief else tempfile.TemporaryDirectory(prefix="skewfree-worker-")
    with output as out, tempfile.TemporaryDirectory(prefix="skewfree-train-input-") as cache_dir:
        out = Path(out)
        data = training_data(params, transformed, spec, label, Path(cache_dir))
        with strategy.scope():
            model = module.build_model(tft_output, learning_rate=params.learning_rate)
        # the export's checks, before an epoch is spent: classes that misname the label's ids, an output that
        # does not fit the task (export_serving_model makes them again on the model it saves)
        check_output_shape(model, config.task, class_names(config.task, tft_output, features.SCHEMA.label)
                           if config.task.type == "multiclass" else None)
        epochs_logged = epoch_log(backup_dir, chief)
        history = model.fit(
            **data,
            epochs=params.epochs,
            callbacks=[
                epochs_logged,
                tf_keras.callbacks.BackupAndRestore(str(backup_dir)),
                *checkpoint_callbacks(backup_dir),
                tf_keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")),
            ],
            verbose=2,
        )
        export_serving_model(model, tft_output, features.SCHEMA, out / "saved_model", config.task)
        curves = epochs_logged.curves()
        final = run.step_dir("train")
        result = TrainResult(
            model=config.name,
            interval=interval.isoformat(),
            saved_model=str(final / "saved_model") if chief else "",  # a worker's scratch export is discarded
            params=dataclasses.asdict(params),
            devices=devices,
            epochs_run=len(history.epoch),
            # BackupAndRestore resumes a killed attempt: the first epoch this process ran
            resumed_from_epoch=history.epoch[0] if history.epoch else params.epochs,
            strategy=params.strategy,
            seconds=round(time.monotonic() - started, 2),
            # every epoch's, a killed attempt's too (epoch_log)
            history={k: v[-1] for k, v in curves.items()},
            curves=curves,
            tensorboard=str(final / "tensorboard") if chief else "",
            input_digest=digest,
            transform_digest=transformed["input_digest"],
            chief=chief,
        )
        if not chief:
            return result
        write_result(out, result)
    shutil.rmtree(backup_dir.parent, ignore_errors=True)  # done: nothing left to resume
    return result
