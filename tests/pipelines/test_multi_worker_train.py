"""Multi-worker training as the Indexed Job runs it, on this machine: the train pod's argv in N local
processes, each with the environment the Job gives its pod (the workers' addresses, its completion index).
They train one model together; only the chief commits it, and it passes the skew gate like a one-worker run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import END, ROOT, free_port

pytestmark = pytest.mark.slow
WORKERS = 2


def test_n_local_workers_with_the_jobs_environment_train_one_model(trained_run, tmp_path):
    from pipelines.cli import step_argv
    from pipelines.cluster import INDEX_ENV, WORKERS_ENV
    from pipelines.config import load_model_config
    from pipelines.evaluate import evaluate
    from tests.plugins.test_train_job import multi_worker_config

    art = tmp_path / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    single = json.loads((art / "taxi" / "runs" / str(END) / "train" / "result.json").read_text())
    shutil.rmtree(art / "taxi" / "runs" / str(END) / "train")
    shutil.rmtree(art / "taxi" / "runs" / str(END) / "evaluate")
    source = multi_worker_config(tmp_path, workers=WORKERS, gpus=0)
    argv = step_argv("train", model=str(source), interval=str(END),
                     roots={"data": "unused", "artifact": str(art), "serving": "unused"}, extra=("--epochs=2",))
    hosts = ",".join(f"127.0.0.1:{free_port()}" for _ in range(WORKERS))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1", **{WORKERS_ENV: hosts})
    workers = [subprocess.Popen([sys.executable, *argv[1:]], env=env | {INDEX_ENV: str(i)}, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(WORKERS)]
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=600)[0])
        finally:
            worker.kill()
    for i, (worker, out) in enumerate(zip(workers, outputs, strict=True)):
        assert worker.returncode == 0, f"worker {i}:\n{out[-4000:]}"
    assert f"multi-worker cluster: worker 0 of {hosts.split(',')}" in outputs[0]
    assert "strategy multi_worker with 2 replica(s)" in outputs[0]  # one collective across both processes
    assert "not the chief: exporting to scratch" in outputs[1]

    result = json.loads((art / "taxi" / "runs" / str(END) / "train" / "result.json").read_text())
    assert result["chief"] is True and result["strategy"] == "multi_worker" and result["epochs_run"] == 2
    assert set(result["history"]) == set(single["history"])  # the same metrics as the one-worker run
    config = load_model_config(str(source))
    evaluation = evaluate(config, interval=END, artifact_root=art)
    assert evaluation.metrics["max_abs_skew"] < 1e-4, evaluation.metrics  # the skew gate holds
    assert evaluation.metrics["examples"] == trained_run["evaluation"].metrics["examples"]
    assert 0.5 < evaluation.metrics["auc"] <= 1
