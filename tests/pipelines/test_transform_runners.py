"""Transform on Beam's portable path (a local job service plus an external SDK worker pool in other processes:
the architecture Flink and Spark runners use) gives the FnApiRunner's outputs; a runner whose workers cannot
reach the step's paths is refused before anything is submitted."""

from __future__ import annotations

import collections
import contextlib
import glob
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from pipelines.runs import StepError
from pipelines.transform import worker_location, workers_reach
from tests.conftest import END, ROOT, free_port

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=localhost:{job}", "--environment_type=EXTERNAL",
            "--environment_config=localhost:{pool}"]


def test_where_the_workers_run_is_read_from_the_options():
    assert workers_reach(["--runner=FnApiRunner"]) == workers_reach([]) == "local"
    assert workers_reach([a.format(job=1, pool=2) for a in PORTABLE]) == "this-machine"
    assert workers_reach(["--runner=PortableRunner", "--job_endpoint=flink-jobserver:8099",
                          "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]) == "remote"
    assert workers_reach(["--runner=DataflowRunner", "--project=p", "--region=r"]) == "remote"


def test_a_runner_that_cannot_reach_the_paths_is_refused_naming_one(monkeypatch, tmp_path):
    data = str(tmp_path / "data" / "dt=2026-11-10" / "part-00000.csv")
    with pytest.raises(StepError, match=f"Dataflow's workers cannot read or write this machine's files, and "
                                        f"transform reads {data} and writes {tmp_path / 'out'} .* Add "
                                        "--temp_location=gs://BUCKET/PATH"):
        worker_location(["--runner=DataflowRunner", "--project=p"], [data], tmp_path / "out")
    monkeypatch.setenv("SKEWFREE_STAGING_DIR", str(tmp_path / "data"))  # a pod's scratch mirror of S3 roots
    with pytest.raises(StepError, match=f"transform would read {data}, a copy in this pod's own scratch"):
        worker_location(["--runner=FlinkRunner", "--flink_master=flink:8081"], [data], tmp_path / "out")
    # TFT writes through TensorFlow's file system: no s3:// in TF 2.21
    with pytest.raises(StepError, match="--temp_location=s3://b/t: .* reads gs:// and local paths only"):
        worker_location(["--runner=FlinkRunner", "--flink_master=flink:8081", "--temp_location=s3://b/t"], [data],
                        tmp_path / "out")
    assert worker_location(["--runner=FnApiRunner"], [data], tmp_path / "out") is None  # local: the paths
    assert worker_location(["--runner=DataflowRunner", "--project=p", "--temp_location=gs://b/t/"], [data],
                           tmp_path / "out") == "gs://b/t"


@pytest.mark.parametrize(("names", "says"), [
    ([], "not one complete set of part-I-of-N: none"),
    (["part-00000-of-00003.tfrecord", "part-00002-of-00003.tfrecord"], r"files \[1\] of 3 are missing"),
    (["part-00000-of-00002.tfrecord", "part-00001-of-00003.tfrecord"], "not one complete set"),
    (["part-00000-of-00001.tfrecord", "part-x.tfrecord"], "not one complete set"),
])
def test_an_incomplete_set_of_tfrecord_files_is_refused(tmp_path, names, says):
    from pipelines.transform import complete_shards

    for name in names:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(StepError, match=says):
        complete_shards(tmp_path)
    for i in range(3):
        (tmp_path / f"part-{i:05d}-of-00003.tfrecord").write_bytes(b"")
    if not names or "of-00003" in names[0]:
        assert [p.name for p in complete_shards(tmp_path)][-1] == "part-00002-of-00003.tfrecord"


@contextlib.contextmanager
def portable_services(logs: Path):
    """Beam's local job service and an external worker pool (its SDK workers are `python` processes: this
    interpreter's directory first on PATH), as a Flink or Spark deployment would run them."""
    import os

    job, pool = free_port(), free_port()
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"}
    services = [subprocess.Popen([sys.executable, "-m", module, flag, str(port)], env=env, cwd=ROOT,
                                 stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT)
                for name, module, flag, port in (
                    ("job-service", "apache_beam.runners.portability.local_job_service_main", "--port", job),
                    ("worker-pool", "apache_beam.runners.worker.worker_pool_main", "--service_port", pool))]
    try:
        deadline = time.monotonic() + 60
        for port in (job, pool):
            while subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', "
                                  f"{port}), 1)"], capture_output=True).returncode:
                assert time.monotonic() < deadline and all(s.poll() is None for s in services), \
                    (logs / "job-service.log").read_text()[-2000:] + (logs / "worker-pool.log").read_text()[-2000:]
                time.sleep(0.5)
        yield [a.format(job=job, pool=pool) for a in PORTABLE]
    finally:
        for service in services:
            service.terminate()
            service.wait(timeout=30)


def columns(transform_dir: Path, split: str) -> dict[str, collections.Counter]:
    """Each transformed feature's values as a multiset (a runner may order rows, and features in a serialized
    tf.Example, differently)."""
    import tensorflow as tf

    found: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in sorted(glob.glob(str(transform_dir / split / "part-*.tfrecord"))):
        for record in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(record.numpy())
            for name, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                values = tuple(getattr(feature, kind).value) if kind else ()
                if name == "__raw_example__":  # the raw row, serialized: compare its features, not its bytes
                    raw = tf.train.Example.FromString(values[0]).features.feature
                    values = tuple(sorted((k, str(v)) for k, v in raw.items()))
                found[name][values] += 1
    return found


def assert_same_outputs(local: Path, other: Path) -> None:
    """Two transform outputs of the same data agree: row counts, vocabularies, every transformed feature (floats
    up to rounding), and quantile buckets within TFT's approximation."""
    import json

    import numpy as np

    from pipelines.models.taxi.features import BUCKET_FEATURES, transformed_name

    assert json.loads((other / "result.json").read_text())["rows"] == json.loads((local / "result.json").read_text())["rows"]
    for vocabulary in (local / "transform_fn" / "transform_fn" / "assets").iterdir():
        assert (other / "transform_fn" / "transform_fn" / "assets" / vocabulary.name).read_bytes() == \
            vocabulary.read_bytes()
    buckets = {transformed_name(f) for f in BUCKET_FEATURES}
    for split in ("train", "eval"):
        want, got = columns(local, split), columns(other, split)
        assert set(want) == set(got)
        for name in set(want) - buckets:
            if all(isinstance(v, float) for values in want[name] for v in values):
                # means and variances summed in another order: equal up to float rounding
                a, b = (np.sort(np.array([v for values in c.elements() for v in values])) for c in (want[name], got[name]))
                assert a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-5), f"{split} {name}"
            else:
                assert want[name] == got[name], f"{split} {name}"
        # approximate quantiles (TFT's epsilon 0.01) depend on how rows were bundled: the FnApiRunner itself
        # moves a few rows between neighbouring buckets from run to run. Each bucket holds the same rows +- 1%.
        rows = sum(want[next(iter(buckets))].values())
        for name in buckets:
            for bucket in set(want[name]) | set(got[name]):
                assert abs(want[name][bucket] - got[name][bucket]) <= 0.01 * rows, (split, name, bucket)


@pytest.mark.slow
def test_transform_through_the_portable_runner_equals_the_fn_api_runner(trained_run, taxi_config, tmp_path):
    from pipelines.transform import transform

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    with portable_services(tmp_path) as beam_args:
        result = transform(taxi_config, interval=END, artifact_root=art, beam_args=beam_args, force=True)
    assert result.beam_args == beam_args and result.rows["train"] > 0
    # the trained run's transform ran on the default runner (FnApiRunner, one process)
    assert_same_outputs(trained_run["run"].step_dir("transform"), Path(result.transform_fn).parent)


@pytest.mark.slow
def test_transform_through_gcs_with_workers_elsewhere_equals_the_fn_api_runner(trained_run, taxi_config, tmp_path,
                                                                               monkeypatch):
    """Dataflow's layout on Beam's portable path: with --temp_location=gs://..., the step uploads the partitions,
    its workers (another process) read them and write TFT's temp files and the outputs to GCS (TensorFlow's and
    Beam's own GCS clients, against a GCS fake on loopback), and the step brings the outputs back and commits them:
    the FnApiRunner's outputs, and nothing left in the bucket."""
    from pipelines.transform import transform
    from tests.fixtures.gcs import fake_gcs

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    with fake_gcs(tmp_path / "gcs") as gcs:
        for name, value in gcs.env.items():
            monkeypatch.setenv(name, value)
        with portable_services(tmp_path) as beam_args:  # the services inherit the environment
            result = transform(taxi_config, interval=END, artifact_root=art, force=True,
                               beam_args=[*beam_args, "--temp_location=gs://skewfree-test/beam"])
        assert gcs.objects() == []  # the attempt directory was deleted
        requests = [(method, urllib.parse.unquote(path)) for method, path in gcs.requests]
    # the workers read the uploaded inputs and wrote there; the step brought the outputs back from there
    for method, part in (("GET", "/inputs/00000-dt="), ("PUT", "/work/"), ("GET", "/work/train/part-"),
                         ("GET", "/work/eval/part-"), ("GET", "/work/transform_fn/transform_fn/saved_model.pb")):
        assert any(m == method and part in path for m, path in requests), f"no {method} of {part} on GCS"
    assert_same_outputs(trained_run["run"].step_dir("transform"), Path(result.transform_fn).parent)
    import tensorflow_transform as tft  # the SavedModel brought back is whole: train builds its layer from it

    assert tft.TFTransformOutput(result.transform_fn).transform_features_layer() is not None


@pytest.mark.slow
def test_a_partition_changed_after_validate_is_refused_before_the_job_and_nothing_is_left_on_gcs(
        trained_run, taxi_config, tmp_path, monkeypatch):
    """The upload hashes each partition against validate's sha256: a changed file stops the step before anything
    is submitted (the runner's job service is not even running), names the file, deletes what was uploaded, and
    the committed transform output stays as it was."""
    import json

    from pipelines.runs import Run
    from pipelines.transform import transform
    from tests.fixtures.gcs import fake_gcs

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    run = Run(art, "taxi", END)
    committed = (run.step_dir("transform") / "result.json").read_bytes()
    # a copy of the data the copied validate result points at (the shared data stays as it is)
    validated = run.result_path("validate")
    first = next(f for fs in json.loads(validated.read_text())["partitions"].values() for f in fs)
    data_root = first[:first.index("/taxi_trips/")]
    shutil.copytree(data_root, tmp_path / "data")
    validated.write_text(validated.read_text().replace(f'"{data_root}/', f'"{tmp_path / "data"}/'))
    files = [f for fs in run.read_result("validate")["partitions"].values() for f in fs]
    assert all(f.startswith(str(tmp_path / "data")) for f in files)
    changed = Path(files[len(files) // 2])
    changed.write_bytes(changed.read_bytes().replace(b"Cash", b"Cask", 1))
    beam_args = [a.format(job=free_port(), pool=free_port()) for a in PORTABLE]
    with fake_gcs(tmp_path / "gcs") as gcs:
        for name, value in gcs.env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=f"{changed}: its sha256 is .* the file changed after validate"):
            transform(taxi_config, interval=END, artifact_root=art, force=True,
                      beam_args=[*beam_args, "--temp_location=gs://skewfree-test/beam"])
        uploads = [p for m, p in gcs.requests if m in ("POST", "PUT") and "inputs" in urllib.parse.unquote(p)]
        assert uploads and gcs.objects() == []  # it had uploaded files before the changed one: all deleted
    assert (run.step_dir("transform") / "result.json").read_bytes() == committed
    assert json.loads(committed)["rows"]["train"] > 0


def test_attempts_a_killed_transform_left_on_gcs_are_swept_once_old(tmp_path, monkeypatch):
    """A killed pod cannot delete its attempt directory: the next transform of the model removes those nothing
    was written in for a day (storage's LEFTOVER_AGE_SECONDS), and leaves recent ones and other models' alone."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.transform import sweep_remote_attempts
    from tests.fixtures.gcs import fake_gcs

    with fake_gcs(tmp_path / "gcs") as gcs:
        for name, value in gcs.env.items():
            monkeypatch.setenv(name, value)
        FileSystems.set_options(PipelineOptions([]))
        root = "gs://skewfree-test/beam/skewfree-transform"
        for path in ("taxi/2026-11-10/aaa/inputs/00000-dt=2026-11-04-part-00000.csv", "taxi/2026-11-10/aaa/work/x",
                     "taxi/2026-11-09/bbb/work/y", "penguins/2026-11-10/ccc/work/z"):
            with FileSystems.create(f"{root}/{path}", compression_type=CompressionTypes.UNCOMPRESSED) as out:
                out.write(b"left by a killed run")
        assert sweep_remote_attempts("gs://skewfree-test/beam", "taxi") == []  # all written just now
        removed = sweep_remote_attempts("gs://skewfree-test/beam", "taxi", min_age_seconds=0)
        assert sorted(removed) == [f"{root}/taxi/2026-11-09/bbb", f"{root}/taxi/2026-11-10/aaa"]
        assert gcs.objects() == ["beam/skewfree-transform/penguins/2026-11-10/ccc/work/z"]


@pytest.mark.slow
def test_transform_on_worker_processes_equals_one_process(trained_run, taxi_config, tmp_path):
    """FnApiRunner worker processes (a setting for a machine with more cores: they share out the partition files)
    give one process's outputs."""
    from pipelines.transform import transform

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    beam_args = ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    result = transform(taxi_config, interval=END, artifact_root=art, beam_args=beam_args, force=True)
    assert_same_outputs(trained_run["run"].step_dir("transform"), Path(result.transform_fn).parent)
