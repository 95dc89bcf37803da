
import pytest

from skewfree.operators.step import PipelineStepOperator
from skewfree.settings import Settings

SETTINGS = Settings(backend="local", data_root="/d", artifact_root="/a", serving_root="/s",
                    server_serving_root="/models", model_server_config="/s/models.config")


def test_argv_is_the_container_command():
    op = PipelineStepOperator(task_id="publish", step="publish", model="taxi", interval="2026-11-10")
    assert op.argv(SETTINGS) == [
        "python", "-m", "pipelines", "publish", "--model", "taxi", "--interval", "2026-11-10",
        "--artifact-root", "/a", "--serving-root", "/s",
    ]


def test_argv_parses_with_the_pipelines_cli():
    from pipelines.cli import build_parser

    for step in ("validate", "transform", "train", "evaluate", "publish"):
        argv = PipelineStepOperator(task_id=step, step=step, model="taxi", interval="2026-11-10").argv(SETTINGS)
        args = build_parser().parse_args(argv[3:])
        assert args.step == step and str(args.interval) == "2026-11-10"


def test_failed_step_reports_its_error_line(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    for key in ("SKEWFREE_DATA_ROOT", "SKEWFREE_ARTIFACT_ROOT", "SKEWFREE_SERVING_ROOT"):
        monkeypatch.delenv(key, raising=False)
    from types import SimpleNamespace

    op = PipelineStepOperator(task_id="validate", step="validate", model="taxi", interval="2026-11-10")
    pushed = {}
    with pytest.raises(AirflowFailException) as err:  # bad input: retrying cannot help, no retry
        op.execute(context={"ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))})
    message = str(err.value)
    assert "step validate failed (exit 1), not retried" in message
    assert f"{tmp_path}/data/taxi_trips/dt=2026-11-10 does not exist" in message
    # the run note's reason: the step's error line, without its prefix
    assert pushed["error"].startswith("data for taxi interval 2026-11-10 failed validation")
    assert "[error missing_partition] missing partition for 2026-11-04" in pushed["error"]
    assert len(pushed["error"]) <= 600  # a note's column holds 1000 characters


def test_a_crashed_step_is_an_infrastructure_failure_that_is_retried(tmp_path, monkeypatch):
    """A step killed from outside (OOM: exit 137) fails with AirflowException, which Airflow retries
    (retries=1 on every step); only the step's own expected errors skip the retry."""
    import sys
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    killed = tmp_path / "python"
    killed.write_text("#!/bin/sh\nprintf 'a byte that is not UTF-8: \\377\\n'\necho 'Killed'\nexit 137\n")
    killed.chmod(0o755)
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(killed))
    op = PipelineStepOperator(task_id="train", step="train", model="taxi", interval="2026-11-10")
    pushed = {}
    with pytest.raises(AirflowException, match=r"step train failed \(exit 137\): Killed") as err:
        op.execute(context={"ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))})
    assert not isinstance(err.value, AirflowFailException)
    assert pushed == {"error": "it crashed (exit 137)"}  # the run note: not whatever line it logged last


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="SKEWFREE_BACKEND='k8s' is not one of local"):
        Settings.from_env({"SKEWFREE_BACKEND": "k8s"})


def test_a_steps_lines_keep_their_level_and_tensorflow_noise_is_turned_down(caplog):
    import logging

    from skewfree.operators.child_log import relog

    log = logging.getLogger("test.step")
    level = None
    with caplog.at_level(logging.DEBUG, logger="test.step"):
        for line in ("2026-11-25 03:39:33,820 WARNING pipelines.validate: 3 rows have no fare",
                     "2026-11-25 03:39:33,821 ERROR pipelines.rollout: canary mismatch on row 4",
                     "2026-11-25 03:39:33,822 INFO pipelines.train: epoch 1/3",
                     "E0000 00:00:1795577971.671994   21856 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR",
                     "2026-11-25 03:39:31,450 INFO absl: Feature pickup_hour has a shape . Setting to DenseTensor.",
                     "W0000 00:00:1795577971.671994   21856 op_kernel.cc:1] a real TensorFlow warning",
                     "E0000 00:00:1795577972.1   21856 graph.cc:1] NodeDef mentions attribute use_unbounded_threadpool"
                     " which is not in the op definition: Op<name=MapDataset>",
                     "2026-11-25 03:39:32,001 INFO apache_beam.transforms.util: BatchElements statistics: "
                     "element_count=20000 batch_count=31",
                     '{"model": "taxi"}',
                     "error: validate: data for taxi failed validation: 1 problem(s), most severe first:",
                     "  1. [error missing_partition] missing partition for 2026-11-07",
                     "Traceback (most recent call last):",
                     '  File "x.py", line 1, in <module>',
                     "ValueError: boom",
                     "plain output"):
            level = relog(line, log, level)
    got = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert got == [
        ("WARNING", "pipelines.validate: 3 rows have no fare"),
        ("ERROR", "pipelines.rollout: canary mismatch on row 4"),
        ("INFO", "pipelines.train: epoch 1/3"),
        ("DEBUG", "E0000 00:00:1795577971.671994   21856 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR"),
        ("DEBUG", "2026-11-25 03:39:31,450 INFO absl: Feature pickup_hour has a shape . Setting to DenseTensor."),
        ("WARNING", "tensorflow: a real TensorFlow warning"),
        ("DEBUG", "E0000 00:00:1795577972.1   21856 graph.cc:1] NodeDef mentions attribute use_unbounded_threadpool"
                  " which is not in the op definition: Op<name=MapDataset>"),
        ("DEBUG", "2026-11-25 03:39:32,001 INFO apache_beam.transforms.util: BatchElements statistics: "
                  "element_count=20000 batch_count=31"),
        ("INFO", '{"model": "taxi"}'),
        # the CLI's failure message and its numbered problems, and a crash's traceback, are errors
        ("ERROR", "error: validate: data for taxi failed validation: 1 problem(s), most severe first:"),
        ("ERROR", "  1. [error missing_partition] missing partition for 2026-11-07"),
        ("ERROR", "Traceback (most recent call last):"),
        ("ERROR", '  File "x.py", line 1, in <module>'),
        ("ERROR", "ValueError: boom"),
        ("INFO", "plain output"),
    ]


def test_extra_links_point_at_the_report_the_version_and_tensorboard(monkeypatch):
    """Each step's links, from its XCom result: evaluate -> the run's report, publish/rollout -> the version on
    the Models page and on the model server, train -> TensorBoard (only when one is configured)."""
    from types import SimpleNamespace

    from skewfree import links
    from skewfree.dag_factory import retrain_dag

    results = {"evaluate": {"interval": "2026-11-10", "blessed": True}, "publish": {"version": 2026111000},
               "rollout": {"stable": 2026111001, "previous_stable": 2026111000},
               "train": {"interval": "2026-11-10", "tensorboard": "/a/taxi/runs/2026-11-10/train/tensorboard"}}
    monkeypatch.setattr(links.XCom, "get_all", lambda *, key, dag_id, task_id, run_id:
                        [results[task_id]] if key == "return_value" and task_id in results else None)
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", "http://127.0.0.1:8501")
    dag = retrain_dag("taxi")

    def shown(task_id):
        key = SimpleNamespace(dag_id="taxi_retrain", task_id=task_id, run_id="manual__1")
        task = dag.get_task(task_id)
        return {link.name: link.get_link(task, ti_key=key) for link in task.operator_extra_links}

    assert shown("evaluate") == {"Model report": "/skewfree/models/taxi/runs/2026-11-10/report"}
    # resolved by the Models page when clicked (skewfree.ui): the model server's and TensorBoard's addresses are
    # the api-server's, not those of the process that ran the task
    assert shown("publish") == {"Version in Skewfree": "/skewfree/#taxi-v2026111000",
                                "Model server": "/skewfree/models/taxi/versions/2026111000/server"}
    assert shown("rollout")["Version in Skewfree"] == "/skewfree/#taxi-v2026111001"
    assert shown("train") == {"TensorBoard": "/skewfree/models/taxi/runs/2026-11-10/tensorboard"}
    results["train"].pop("tensorboard")  # a result without TensorBoard logs: no link
    assert shown("train") == {"TensorBoard": ""}
    assert shown("validate") == {}
    results.pop("evaluate")  # a step that failed returned nothing: no link (and no lookup that logs an error)
    assert shown("evaluate") == {"Model report": ""}


def test_the_result_json_is_the_xcom_not_a_log_line(tmp_path, monkeypatch, caplog):
    """The step's last line (its result, kilobytes of JSON) becomes the XCom and stays out of the INFO log."""
    import json
    import logging
    import sys

    result = {"model": "taxi", "metrics": {"auc": 0.86}, "slices": ["..."] * 50}
    step = tmp_path / "python"
    step.write_text("#!/bin/sh\necho '2026-11-25 06:00:00,000 WARNING pipelines.train: slow disk'\n"
                    f"echo '{json.dumps(result)}'\n")
    step.chmod(0o755)
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(step))
    op = PipelineStepOperator(task_id="train", step="train", model="taxi", interval="2026-11-10")
    monkeypatch.setattr(PipelineStepOperator, "log", property(lambda self: logging.getLogger("test.step")))
    with caplog.at_level(logging.DEBUG, logger="test.step"):
        assert op.execute(context={}) == result
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert "pipelines.train: slow disk" in info and not any('"slices"' in m for m in info), info
    assert any("its result (" in m and "is this task's XCom return_value" in m for m in info), info


def test_a_refused_rollback_gives_the_run_note_its_reason(tmp_path, monkeypatch):
    """A user trial's failed rollbacks all read 'rollback failed: what served before still serves'; the reason
    ('no good version to roll back to', 'no version 2026999900') was only in the task log."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from pipelines import rollout
    from skewfree.operators.rollout import RolloutOperator

    def refused(*args, **kwargs):
        raise rollout.RolloutError("taxi has no version 2026999900 under /s/taxi; versions are [2026120500]")

    monkeypatch.setattr(rollout, "rollback", refused)
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", "http://127.0.0.1:9")
    pushed = {}
    op = RolloutOperator(task_id="rollback", model="taxi", rollback=True)
    with pytest.raises(AirflowFailException, match="no version 2026999900"):
        op.execute({"params": {"target_version": 2026999900}, "run_id": "manual__1",
                    "ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))})
    assert pushed == {"error": "taxi has no version 2026999900 under /s/taxi; versions are [2026120500]"}
