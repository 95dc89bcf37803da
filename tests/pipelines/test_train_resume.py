"""Training resumes from its last checkpoint after the process is killed, and exports completely."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipelines.runs import Run
from tests.conftest import END, ROOT

pytestmark = pytest.mark.slow


def test_sigkill_mid_training_then_resume(trained_run, tmp_path):
    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    run = Run(art, "taxi", END)
    good = (run.result_path("train")).read_text()
    backup = run.run_dir / "train_checkpoints"
    argv = [sys.executable, "-m", "pipelines", "train", "--model", "taxi", "--interval", str(END),
            "--artifact-root", str(art), "--epochs", "6", "--batch-size", "8"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    epochs_seen = 0
    while time.monotonic() < deadline and first.poll() is None:
        if backup.is_dir() and any(p.is_file() and p.name != "history.json" for p in backup.rglob("*")):
            time.sleep(0.3)  # let the epoch's checkpoint finish writing
            os.kill(first.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    output = first.communicate(timeout=60)[0]
    epochs_seen = output.count("Epoch ")
    assert first.returncode == -signal.SIGKILL, f"training was not killed mid-run: {output[-2000:]}"
    assert epochs_seen < 6
    # the killed attempt left the previous good output in place
    assert run.result_path("train").read_text() == good

    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["resumed_from_epoch"] >= 1, "training started over instead of resuming"
    assert result["epochs_run"] == 6 - result["resumed_from_epoch"]
    # the curves and final metrics cover the killed attempt's epochs too (they were the resumed ones only, or none)
    assert result["curves"] and all(len(v) == 6 for v in result["curves"].values()), result["curves"]
    assert result["history"] == {k: v[-1] for k, v in result["curves"].items()}
    assert not backup.exists()  # a completed run clears its backup

    import tensorflow as tf

    canary = json.loads(run.step_dir("evaluate").joinpath("canary.json").read_text())[:5]
    import base64

    serve = tf.saved_model.load(result["saved_model"]).signatures["serving_default"]
    out = serve(examples=tf.constant([base64.b64decode(r["b64"]) for r in canary]))["probability"].numpy()
    assert out.shape == (5,) and ((out > 0) & (out < 1)).all()


def test_sigkill_mid_training_resumes_from_checkpoints_on_s3(trained_run, s3, tmp_path):
    """A pod killed mid-training: its checkpoints were pushed to S3 after each epoch, so a new
    process with an empty local mirror continues from there instead of starting over."""
    from pipelines.objectstore import Mirror, S3Store
    from pipelines.staging import CHECKPOINT_STATE

    # the trained run, moved to S3 as the steps would have left it there
    url = s3["url"] + "/artifacts"
    seed = Mirror(tmp_path / "seed", s3["client"])
    local = seed.local(url)
    shutil.copytree(trained_run["artifact_root"], local)
    for path in local.rglob("*.json"):
        path.write_text(path.read_text().replace(str(trained_run["artifact_root"]), str(local)))
        path.write_text(json.dumps(seed.to_urls(json.loads(path.read_text()))))
    seed.push(local)
    store = S3Store(url, s3["client"])
    train_prefix = ("taxi", "runs", str(END), "train")
    good = store.read_bytes(*train_prefix, "result.json")

    argv = [sys.executable, "-m", "pipelines", "train", "--model", "taxi", "--interval", str(END),
            "--artifact-root", url, "--epochs", "6", "--batch-size", "8"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if any(key.endswith(CHECKPOINT_STATE) for key in store.objects("taxi", "runs", str(END),
                                                                         "train_checkpoints")):
            os.kill(first.pid, signal.SIGKILL)  # an epoch's checkpoint is complete on S3
            break
        time.sleep(0.1)
    output = first.communicate(timeout=60)[0]
    killed_mirrors = set((tmp_path / "staging").glob("skewfree-step-*"))  # SIGKILL: no cleanup
    assert first.returncode == -signal.SIGKILL, f"training was not killed mid-run: {output[-2000:]}"
    assert output.count("Epoch ") < 6
    assert store.read_bytes(*train_prefix, "result.json") == good  # the previous output is untouched

    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["resumed_from_epoch"] >= 1, "training started over instead of resuming"
    assert result["epochs_run"] == 6 - result["resumed_from_epoch"]
    assert result["curves"] and all(len(v) == 6 for v in result["curves"].values()), result["curves"]
    assert result["saved_model"] == url + f"/taxi/runs/{END}/train/saved_model"
    assert store.read_head(*train_prefix, "saved_model", "saved_model.pb") is not None
    assert not store.objects("taxi", "runs", str(END), "train_checkpoints")  # cleared once complete
    assert set((tmp_path / "staging").glob("skewfree-step-*")) == killed_mirrors  # the rerun removed its own
