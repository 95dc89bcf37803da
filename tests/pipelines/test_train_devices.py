"""train's device preflight and its strategy / mixed-precision switches, run as the pod runs them:
``python -m pipelines train`` in a fresh process (a mixed-precision policy is process-global)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from pipelines.cli import step_argv
from pipelines.runs import Run
from tests.conftest import END, ROOT, free_port

pytestmark = pytest.mark.slow


def untrained_copy(trained_run, tmp_path) -> Run:
    """The trained run's validate and transform outputs, without its train output."""
    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    run = Run(art, "taxi", END)
    shutil.rmtree(run.step_dir("train"))
    return run


def taxi_variant(tmp_path, **train: str) -> str:
    """The taxi config with [train] settings replaced, e.g. ``strategy='"mirrored"'``."""
    text = (ROOT / "pipelines/models/taxi/config.toml").read_text()
    for key, value in train.items():
        text, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert found, key
    path = tmp_path / "taxi_variant.toml"
    path.write_text(text)
    return str(path)


def step_command(step: str, run: Run, model: str, *args: str) -> list[str]:
    """The step's container argv (``pipelines.cli.step_argv``) for this interpreter."""
    roots = {"artifact": str(run.artifact_root), "serving": f"{run.artifact_root}-serving"}  # no baseline there
    argv = step_argv(step, model=model, interval=str(END), roots=roots, extra=args)
    return [sys.executable, *argv[1:]]


def step_cli(step: str, run: Run, model: str, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(step_command(step, run, model, *args), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_gpus_requested_but_none_visible_fails_before_training(trained_run, tmp_path):
    run = untrained_copy(trained_run, tmp_path)
    started = time.monotonic()
    out = step_cli("train", run, "taxi", "--gpus", "1", env={"CUDA_VISIBLE_DEVICES": "-1"})
    seconds = time.monotonic() - started
    print(f"\nfailed after {seconds:.1f} s (process start and TensorFlow import included)")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    # the devices it does see are logged, and the one-line error says what is missing and where to look
    assert "sees devices: ['/physical_device:CPU:0']" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("error: train: 1 GPU(s) requested but TensorFlow sees 0"), last
    assert "nvidia.com/gpu" in last
    # nothing was trained, written or checkpointed
    assert "Epoch 1/" not in out.stdout + out.stderr
    assert not run.step_dir("train").exists()
    assert not (run.run_dir / "train_checkpoints").exists()


def test_mirrored_strategy_with_mixed_precision_trains_and_serves_float32(trained_run, small_data, tmp_path):
    import numpy as np
    import tensorflow as tf

    from pipelines.models.taxi.features import SCHEMA
    from pipelines.storage import partition_files, read_files
    from pipelines.tf_schema import raw_examples

    run = untrained_copy(trained_run, tmp_path)
    config = taxi_variant(tmp_path, strategy='"mirrored"', mixed_precision="true")
    out = step_cli("train", run, config, "--epochs", "1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "strategy mirrored with 1 replica(s), mixed precision True" in out.stdout
    result = json.loads(run.result_path("train").read_text())
    assert result["strategy"] == "mirrored" and result["epochs_run"] == 1

    # float16 inside, float32 at the serving boundary: the exported signature is unchanged
    serve = tf.saved_model.load(result["saved_model"]).signatures["serving_default"]
    rows = read_files(partition_files(small_data / "taxi_trips" / f"dt={END}", "csv"), "csv", SCHEMA).slice(0, 20)
    probability = serve(examples=tf.constant(raw_examples(rows, SCHEMA)))["probability"]
    assert probability.dtype == tf.float32
    assert np.all((probability.numpy() > 0) & (probability.numpy() < 1))

    # and the skew gate finds the training path (float16 model on TFT's float32 output) equal to serving
    out = step_cli("evaluate", run, config)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    evaluation = json.loads(run.result_path("evaluate").read_text())
    assert not [r for r in evaluation["reasons"] if "skew" in r], evaluation["reasons"]


def test_multi_worker_from_tf_config_trains_once_and_only_the_chief_writes(trained_run, tmp_path):
    """Two workers on loopback, as two pods of a multi-worker job would run: one model, one output."""
    run = untrained_copy(trained_run, tmp_path)
    before = sorted(p.name for p in run.run_dir.iterdir())
    config = taxi_variant(tmp_path, strategy='"multi_worker"')
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    argv = step_command("train", run, config, "--epochs", "2")
    scratch = [tmp_path / f"tmp{index}" for index in range(2)]  # each worker's TMPDIR
    for t in scratch:
        t.mkdir()
    workers = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={
            **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(scratch[index]),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        })
        for index in range(2)
    ]
    try:
        logs = [w.communicate(timeout=600)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    for log in logs:
        assert "strategy multi_worker with 2 replica(s)" in log
    assert "not the chief" in logs[1] and "not the chief" not in logs[0]
    chief, other = (json.loads(log.strip().splitlines()[-1]) for log in logs)
    assert chief["chief"] and not other["chief"]
    assert chief["epochs_run"] == other["epochs_run"] == 2

    # the chief's output alone is in the run directory, complete; no worker left anything behind
    result = json.loads(run.result_path("train").read_text())
    assert result == chief
    assert (run.step_dir("train") / "saved_model" / "saved_model.pb").is_file()
    assert sorted(p.name for p in run.run_dir.iterdir()) == sorted([*before, "train"])  # no temp dirs left
    assert other["saved_model"] == ""  # the other worker's export went to scratch, now removed
    assert not [p.name for t in scratch for p in t.iterdir() if p.name.startswith("skewfree-worker-")]
