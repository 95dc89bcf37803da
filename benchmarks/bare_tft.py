"""The baseline for transform's speed: a minimal TFT script, as its documentation writes one (no assertions).

usage: python benchmarks/bare_tft.py --train A.csv B.csv ... --eval E.csv --out DIR [beam args]
Reads the CSVs with ``tfxio.CsvTFXIO``, runs the taxi module's ``preprocessing_fn`` through
``AnalyzeAndTransformDataset`` on the train files, ``TransformDataset`` on the eval files, writes ``transform_fn``
and tf.Example TFRecords. Nothing of the transform step's own work (row counts, raw-example column for the skew
gate, output checks, staging) is here: ``benchmarks/transform_runners.py`` runs both on the same data.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", required=True)
    parser.add_argument("--eval", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args, beam_args = parser.parse_known_args()
    sys.path.insert(0, str(ROOT))

    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.coders.example_coder import RecordBatchToExamples
    from tfx_bsl.public import tfxio

    from pipelines.models.taxi.features import SCHEMA
    from pipelines.models.taxi.model import preprocessing_fn
    from pipelines.tf_schema import tfmd_schema

    schema = tfmd_schema(SCHEMA)
    with open(args.train[0], newline="") as f:
        columns = next(csv.reader(f))

    def read(pipeline, name, files):
        """One CsvTFXIO per file (it takes one glob), flattened."""
        sources = [tfxio.CsvTFXIO(file_pattern=f, column_names=columns, schema=schema, skip_header_lines=1)
                   for f in files]
        batches = [pipeline | f"Read{name}{i}" >> s.BeamSource() for i, s in enumerate(sources)]
        return batches | f"Flatten{name}" >> beam.Flatten(), sources[0].TensorAdapterConfig()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with beam.Pipeline(options=PipelineOptions(beam_args or ["--runner=FnApiRunner"])) as pipeline:
        with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=out)):
            raw_train, raw_eval = read(pipeline, "Train", args.train), read(pipeline, "Eval", args.eval)
            (train_data, _), transform_fn = raw_train | tft_beam.AnalyzeAndTransformDataset(
                preprocessing_fn, output_record_batches=True)
            eval_data, _ = (raw_eval, transform_fn) | tft_beam.TransformDataset(output_record_batches=True)
            for name, data in (("train", train_data), ("eval", eval_data)):
                _ = (data | f"Encode{name}" >> beam.FlatMapTuple(lambda batch, _: RecordBatchToExamples(batch))
                     | f"Write{name}" >> beam.io.WriteToTFRecord(str(out / name / "part"), file_name_suffix=".tfrecord"))
            _ = transform_fn | tft_beam.WriteTransformFn(str(out / "transform_fn"))


if __name__ == "__main__":
    main()
