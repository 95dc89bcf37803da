"""transform: TFT AnalyzeDataset and TransformDataset on Beam with TFXIO (RecordBatch) input.

Analyzes the training window only, transforms the train and eval splits with the
same transform graph, and writes ``transform_fn/`` (TFTransformOutput layout),
transformed tf.Example TFRecords per split, and row counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import ModelConfig
from pipelines.lineage import cached_result, input_digest, step_inputs
from pipelines.runs import Run, StepError, write_result
from pipelines.schema import RawSchema
from pipelines.storage import staged_dir

log = logging.getLogger(__name__)

# Each transformed eval example also carries its raw row, serialized as the tf.Example a client sends
# (TFT passes this column through untouched): the skew gate pairs both paths row by row.
RAW_EXAMPLE_KEY = "__raw_example__"

# FnApiRunner, named: "DirectRunner" first tries to download the Prism runner from GitHub, then falls back to it.
# One process: benchmarks/transform_runners.py on 2 cores, with files read by pyarrow in 4 MiB batches, ran one
# worker process per core at 0.82x (200k rows) and 0.95x (1M) of this setting's speed (1.04x at 3M rows, measured
# with AnalyzeAndTransformDataset), for half again the CPU.
DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory")

@dataclass
class TransformResult:
    model: str
    interval: str
    transform_fn: str
    train_files: str
    eval_files: str
    rows: dict[str, int]
    beam_args: list[str]
    input_digest: str = ""
    cached: bool = False


def read_raw(pipeline, label: str, files: list[str], fmt: str, schema: RawSchema, digests: dict[str, str]):
    """Raw rows as TFXIO RecordBatches plus their TensorAdapterConfig.

    Partition files are read with pyarrow as ``validate`` read them, and only the bytes it checked
    (``pipelines.rawdata.read_batches``), into the RecordBatches TFXIO's CSV and Parquet sources make (their
    format and tensor adapter, which are the same for both): by measurement (``benchmarks/transform_runners.py``)
    ``tfxio.CsvTFXIO``'s per-line Python decoding and its 1,000-row batches were most of transform's time.
    Workers share out the files (one file is read by one worker)."""
    import apache_beam as beam
    from tfx_bsl.public import tfxio

    from pipelines.schema import to_tfxio_batch
    from pipelines.tf_schema import tfmd_schema

    source = tfxio.CsvTFXIO(file_pattern=files[0], column_names=schema.names, schema=tfmd_schema(schema))
    config, arrow_schema = source.TensorAdapterConfig(), source.ArrowSchema()

    def read(path: str):
        from pipelines.rawdata import read_batches

        for batch in read_batches(path, fmt, schema, digests[path]):
            yield to_tfxio_batch(batch, schema.features).cast(arrow_schema)

    return (pipeline
            | f"Files{label}" >> beam.Create(files)
            | f"ShareFiles{label}" >> beam.Reshuffle()
            | f"Read{label}" >> beam.FlatMap(read)), config


def resolve_beam_args(config: ModelConfig, cli_args: list[str] | None) -> list[str]:
    """Beam options: the CLI's, else the model config's [transform] beam_args, else ``DEFAULT_BEAM_ARGS``."""
    return list(cli_args or config.transform.beam_args or DEFAULT_BEAM_ARGS)


def pipeline_options(beam_args: list[str]):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(beam_args)


# Runners whose workers are threads or processes of this one: they read and write this machine's paths
LOCAL_RUNNERS = {None, "", "DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _on_loopback(endpoint: str | None) -> bool:
    return bool(endpoint) and endpoint.rsplit(":", 1)[0] in LOOPBACK_HOSTS


def workers_reach(beam_args: list[str]) -> str:
    """Where the pipeline's workers run: ``local`` (in or beside this process), ``this-machine`` (Beam's portable
    path with its job service and SDK workers on loopback: a local job server plus an external worker pool)
    or ``remote`` (Dataflow, Flink, Spark, or a portable job service elsewhere)."""
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions

    options = pipeline_options(beam_args)
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    if name in LOCAL_RUNNERS:
        return "local"
    portable = options.view_as(PortableOptions)
    environment = (portable.environment_type or "").upper()
    if (name == "PortableRunner" and _on_loopback(portable.job_endpoint)
            and (environment == "LOOPBACK" or (environment == "EXTERNAL"
                                               and _on_loopback(portable.environment_config)))):
        return "this-machine"
    return "remote"


def check_workers_reach(beam_args: list[str], inputs: list[str], output: Path) -> None:
    """Refuse, before anything is submitted, a runner whose workers cannot read the inputs or write the output.

    Transform reads the partitions and writes TFT's temp files and its outputs under the step's staged directory
    on this machine's file system. Workers elsewhere see those paths only when they mount the same volume at the
    same path (Flink or Spark on Kubernetes with the roots on a ReadWriteMany claim); never on Dataflow, never a
    pod's own scratch (``SKEWFREE_STAGING_DIR``, where S3 roots are mirrored)."""
    import os

    reach = workers_reach(beam_args)
    if reach != "remote":
        return
    from apache_beam.options.pipeline_options import StandardOptions

    runner = pipeline_options(beam_args).view_as(StandardOptions).runner
    local = [p for p in [*inputs, str(output)] if "://" not in p]
    if runner == "DataflowRunner" and local:
        raise StepError(f"--runner=DataflowRunner: Dataflow's workers cannot read or write this machine's files, "
                        f"and transform reads {local[0]} and writes {output} ({len(local)} local paths). This "
                        f"version runs transform on local paths only: use the local runner (no --runner), or a "
                        f"Flink/Spark runner whose workers mount the data and artifact roots at the same paths")
    scratch = os.environ.get("SKEWFREE_STAGING_DIR")
    private = [p for p in local if scratch and Path(p).is_relative_to(scratch)]
    if private:
        raise StepError(f"{beam_args[0]}: transform would read {private[0]}, a copy in this pod's own scratch "
                        f"({scratch}: the S3 roots are mirrored there), which the runner's workers cannot see. Use "
                        f"the local runner, or put the roots on a volume the workers mount at the same path")
    log.warning("%s runs the pipeline's workers elsewhere: they must see %s and %s at these same paths (a shared "
                "volume mounted alike); otherwise they fail reading the first file", runner, local[0], output)


def with_raw_examples(batches, adapter_config, schema: RawSchema, label: str):
    """Append the RAW_EXAMPLE_KEY passthrough column to every batch (and to the adapter's schema)."""
    import apache_beam as beam
    import pyarrow as pa
    from tfx_bsl.coders.example_coder import RecordBatchToExamples
    from tfx_bsl.public import tfxio

    serving_names = [f.name for f in schema.serving_features()]
    column_type = pa.large_list(pa.large_binary())

    def attach(batch):
        examples = pa.array(RecordBatchToExamples(batch.select(serving_names)), pa.large_binary())
        offsets = pa.array(range(batch.num_rows + 1), pa.int64())
        return batch.append_column(RAW_EXAMPLE_KEY, pa.LargeListArray.from_arrays(offsets, examples))

    config = tfxio.TensorAdapterConfig(
        adapter_config.arrow_schema.append(pa.field(RAW_EXAMPLE_KEY, column_type)),
        adapter_config.tensor_representations,
    )
    return batches | f"AttachRawExamples{label}" >> beam.Map(attach), config


PROGRESS_ROWS = 100_000  # transform logs each time a worker process has read this many more rows of a split
_rows_read: dict[str, int] = {}  # per process: Beam runs the counting step in its worker processes


def progress(split: str, rows: int) -> None:
    """Log the rows of ``split`` this process has read so far, every ``PROGRESS_ROWS``: a long transform shows it
    is moving (each worker process counts its own rows; the total is logged when the pipeline ends)."""
    before = _rows_read.get(split, 0)
    _rows_read[split] = before + rows
    if _rows_read[split] // PROGRESS_ROWS > before // PROGRESS_ROWS:
        log.info("%s split: %d rows read so far (this worker process)", split, _rows_read[split])


def check_dense_outputs(transform_fn: Path, config: ModelConfig) -> None:
    """Every transformed feature must be dense: a sparse one is a nullable raw column passed through
    without its missing values filled, which the model cannot take (train would fail with a TypeError)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    spec = tft.TFTransformOutput(str(transform_fn)).transformed_feature_spec()
    sparse = sorted(name for name, feature in spec.items() if not isinstance(feature, tf.io.FixedLenFeature))
    if sparse:
        raise StepError(f"{config.name}: preprocessing_fn returns {sparse} as sparse tensors: a nullable raw column "
                        "reaches preprocessing_fn as a SparseTensor with missing values; fill them into a dense "
                        "[batch] tensor (pipelines.preprocessing.fill) before scaling or returning it")


def transform(
    config: ModelConfig, *, interval: dt.date, artifact_root: Path, beam_args: list[str] | None = None,
    force: bool = False,
) -> TransformResult:
    run = Run(artifact_root, config.name, interval)
    validation = run.read_result("validate")
    train_dates, eval_dates = config.split_window(interval)
    files = {
        "train": [f for d in train_dates for f in validation["partitions"][d.isoformat()]],
        "eval": [f for d in eval_dates for f in validation["partitions"][d.isoformat()]],
    }
    digest = input_digest(step="transform", **step_inputs(config),
                          data={split: [validation["file_digests"][f] for f in fs] for split, fs in files.items()})
    if (hit := cached_result(run, "transform", digest, force=force)) is not None:
        return TransformResult(**hit)

    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.metrics.metric import Metrics, MetricsFilter
    from tfx_bsl.coders.example_coder import RecordBatchToExamples
    schema: RawSchema = config.features_module().SCHEMA
    preprocessing_fn = config.model_module().preprocessing_fn
    beam_args = resolve_beam_args(config, beam_args)
    with staged_dir(run.step_dir("transform")) as out:
        counters = {split: Metrics.counter("skewfree", f"{split}_rows") for split in files}

        def counted(split):
            counter = counters[split]

            def count(batch):
                counter.inc(batch.num_rows)
                progress(split, batch.num_rows)
                return batch

            return count

        for split, split_files in files.items():
            log.info("%s split: reading %d file(s), %.1f MB (%s)", split, len(split_files),
                     sum(Path(f).stat().st_size for f in split_files) / 1e6, beam_args[0] if beam_args else "")
        check_workers_reach(beam_args, [f for fs in files.values() for f in fs], out)
        pipeline = beam.Pipeline(options=pipeline_options(beam_args))
        with tft_beam.Context(temp_dir=str(out / "tmp"), passthrough_keys={RAW_EXAMPLE_KEY}):
            raw = {}
            for split, split_files in files.items():
                batches, adapter_config = read_raw(pipeline, split.title(), split_files, config.data.format, schema,
                                                   validation["file_digests"])
                batches = batches | f"Count{split.title()}" >> beam.Map(counted(split))
                if split == "eval":
                    batches, adapter_config = with_raw_examples(batches, adapter_config, schema, split.title())
                raw[split] = (batches, adapter_config)

            # AnalyzeDataset, then TransformDataset on the train files read again (cheap with pyarrow) rather than
            # AnalyzeAndTransformDataset on one read: a fifth less peak memory, measured at 3M rows 3.07 and 3.08 GiB
            # against 3.84 GiB (1M rows: 1.59 and 1.77 against 1.99 GiB), in the same time up to this VM's noise
            transform_fn = raw["train"] | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
            raw["train"] = read_raw(pipeline, "TrainAgain", files["train"], config.data.format, schema,
                                    validation["file_digests"])
            for split, dataset in raw.items():
                transformed, _ = (dataset, transform_fn) | f"Transform{split.title()}" >> tft_beam.TransformDataset(
                    output_record_batches=True)
                _ = (
                    transformed
                    | f"Batches{split.title()}" >> beam.Keys()  # (batch, passthrough) pairs
                    | f"Encode{split.title()}" >> beam.FlatMap(RecordBatchToExamples)
                    | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
                        str(out / split / "part"), file_name_suffix=".tfrecord"
                    )
                )
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(str(out / "transform_fn"))
        result = pipeline.run()
        result.wait_until_finish()
        rows = {}
        for split in files:
            found = result.metrics().query(MetricsFilter().with_name(f"{split}_rows"))["counters"]
            rows[split] = int(sum(c.committed or c.attempted or 0 for c in found))
        if not rows["train"] or not rows["eval"]:
            raise ValueError(f"transform read no rows for a split: {rows}")
        for split, count in rows.items():
            shards = sorted((out / split).glob("part-*.tfrecord"))
            log.info("%s split: %d rows read and transformed, written to %d TFRecord file(s), %.1f MB", split,
                     count, len(shards), sum(p.stat().st_size for p in shards) / 1e6)
        check_dense_outputs(out / "transform_fn", config)

        shutil.rmtree(out / "tmp", ignore_errors=True)
        final = run.step_dir("transform")
        res = TransformResult(
            model=config.name,
            interval=interval.isoformat(),
            transform_fn=str(final / "transform_fn"),
            train_files=str(final / "train" / "part-*.tfrecord"),
            eval_files=str(final / "eval" / "part-*.tfrecord"),
            rows=rows,
            beam_args=beam_args,
            input_digest=digest,
        )
        write_result(out, res)
    log.info("transformed %s rows", rows)
    return res
