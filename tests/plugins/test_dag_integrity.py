"""Parsing dags/ the way the DAG processor does: no import errors, nothing heavy imported."""

import json
import subprocess
import sys

from tests.conftest import ROOT, airflow_env

PARSE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
started = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("taxi_retrain")
print(json.dumps({
    "seconds": time.monotonic() - started,
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dags),
    "heavy": sorted(m for m in ("tensorflow", "tensorflow_transform", "apache_beam", "tf_keras", "tfx_bsl",
                                "pyarrow", "numpy") if m in sys.modules),
    "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} if dag else None,
    "trigger_rules": {t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule) for t in dag.tasks} if dag else None,
    "params": {k: dag.params[k] for k in dag.params} if dag else None,
    "rollback": {
        "tasks": [t.task_id for t in bag.dags["taxi_rollback"].tasks],
        "schedule": type(bag.dags["taxi_rollback"].timetable).__name__,
        "params": {k: bag.dags["taxi_rollback"].params[k] for k in bag.dags["taxi_rollback"].params},
        "paused_at_creation": [bag.dags[d].is_paused_upon_creation for d in ("taxi_rollback", "taxi_retrain")],
    } if "taxi_rollback" in bag.dags else None,
    "timetable": type(dag.timetable).__name__ if dag else None,
    "interval_template": dag.get_task("train").interval if dag else None,
    "pools": {t.task_id: t.pool for t in dag.tasks} if dag else None,
}))
"""


def parse_dags(tmp_path):
    out = subprocess.run([sys.executable, "-c", PARSE, str(ROOT / "dags")], env=airflow_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dagbag_loads_without_heavy_imports(tmp_path):
    parsed = parse_dags(tmp_path)
    assert parsed["import_errors"] == {}
    assert {"taxi_retrain", "taxi_rollback"} <= set(parsed["dag_ids"])
    assert parsed["heavy"] == [], f"parsing dags/ imported {parsed['heavy']}"


def test_retrain_dag_shape_and_data_intervals(tmp_path):
    parsed = parse_dags(tmp_path)
    assert parsed["tasks"] == {
        "validate": ["transform"],
        "transform": ["train"],
        "train": ["evaluate"],
        "evaluate": ["is_blessed"],
        "is_blessed": ["publish"],
        "publish": ["needs_approval"],
        "needs_approval": ["approve_promotion", "rollout"],
        "approve_promotion": ["rollout"],
        "rollout": [],
    }
    # rollout runs after the approval when one was asked for, or straight after the branch otherwise
    assert parsed["trigger_rules"]["rollout"] == "none_failed_min_one_success"
    assert parsed["params"]["require_approval"] is False and parsed["params"]["publish"] is True
    assert parsed["params"]["allow_older_than_serving"] is False and parsed["params"]["gpus"] is None
    assert parsed["pools"]["train"] == "skewfree_training"  # bounds concurrent training in backfills
    assert parsed["pools"]["transform"] == "default_pool"
    # scheduled over data intervals: the run for day D is keyed by its interval start, never now()
    assert parsed["timetable"] == "CronDataIntervalTimetable"
    assert parsed["interval_template"] == "{{ skewfree_interval(dag, dag_run, data_interval_start | default(none)) }}"


def test_ruff_airflow_rules_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "AIR", "dags", "plugins"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rollback_dag_is_manual_with_a_version_param(tmp_path):
    rollback = parse_dags(tmp_path)["rollback"]
    assert rollback["tasks"] == ["rollback"]
    assert rollback["schedule"] == "NullTimetable"  # manual triggers only
    assert rollback["params"] == {"target_version": None}
    # a rollback is needed at once: its DAG starts unpaused (a paused one's run stays queued without a word);
    # the retraining DAG keeps Airflow's default
    assert rollback["paused_at_creation"] == [False, None]


def test_dropping_a_model_folder_adds_its_dags_and_a_broken_one_is_named(tmp_path):
    """No DAG file per model: a folder in SKEWFREE_MODELS_DIR gets both DAGs; broken folders become one
    import error naming each, and hide no other model's DAGs."""
    import shutil

    models = tmp_path / "team_models"
    taxi = ROOT / "pipelines" / "models" / "taxi"
    for name in ("fares", "typo", "nobuild"):
        shutil.copytree(taxi, models / name, ignore=shutil.ignore_patterns("__pycache__"))
        config = models / name / "config.toml"
        # no 'name' or 'module': the folder's name and package ('fares', importable from the models folder)
        config.write_text("\n".join(line for line in config.read_text().splitlines()
                                    if not line.startswith(("name =", "module ="))))
    typo = models / "typo" / "config.toml"
    typo.write_text(typo.read_text().replace("auc = { min = 0.75", "acu = { min = 0.75"))
    model_py = models / "nobuild" / "model.py"
    model_py.write_text(model_py.read_text().replace("def build_model(", "def build_the_model("))

    env = airflow_env(tmp_path) | {"SKEWFREE_MODELS_DIR": str(models)}
    out = subprocess.run([sys.executable, "-c", PARSE, str(ROOT / "dags")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"fares_retrain", "fares_rollback", "taxi_retrain", "taxi_rollback"} <= set(parsed["dag_ids"])
    assert not {"typo_retrain", "typo_rollback", "nobuild_retrain", "skewfree_broken_models"} & set(parsed["dag_ids"])
    # a broken model.py keeps the rollback DAG, which needs the config only (a user trial: a bad edit took it away,
    # when a rollback was needed most)
    assert "nobuild_rollback" in parsed["dag_ids"]
    assert parsed["heavy"] == []
    [error] = parsed["import_errors"].values()
    assert "2 model folder(s) failed to load" in error
    assert f"- typo: {typo}: [thresholds] 'acu' is not a metric of a binary task" in error
    assert f"- nobuild: model 'nobuild' ({models / 'nobuild' / 'config.toml'}): {model_py} is missing build_model" in error
    assert "; its rollback DAG is loaded" in error.split("- nobuild: ")[1] and "rollback" not in error.split("- typo: ")[1]
