"""The daily DAG end to end through Airflow (dag.test on SQLite), as ``./dev demo`` runs it.

One session: a blessed run publishes a version; a model whose threshold cannot be
met is not published and says why; a missing partition fails validate, names the
path, publishes nothing and deletes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, airflow_env, free_port, run_demo, task_states

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

END = dt.date(2026, 11, 10)
ROWS = 2000


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """An isolated Airflow home and roots, and a dags folder with the taxi DAG and a strict variant."""
    home = tmp_path_factory.mktemp("skewfree")
    dags = home / "dags"
    dags.mkdir()
    for dag_file in ("skewfree_models.py",):
        shutil.copy(ROOT / "dags" / dag_file, dags)
    strict = home / "taxi_strict.toml"
    text = (ROOT / "pipelines/models/taxi/config.toml").read_text()
    strict.write_text(text.replace('name = "taxi"', 'name = "taxi_strict"').replace(
        "auc = { min = 0.75", "auc = { min = 0.999"))
    (dags / "taxi_strict_retrain.py").write_text(
        f'"""Airflow DAG for a model that cannot meet its threshold."""\n'
        f"from skewfree.dag_factory import retrain_dag\n\ndag = retrain_dag({str(strict)!r})\n"
    )
    env = airflow_env(home, dags) | {"SKEWFREE_FAILURE_NOTIFIER": "tests.fixtures.notify:record",
                                     "SKEWFREE_TEST_NOTIFICATIONS": str(home / "notifications.jsonl")}
    return {"home": home, "env": env, "strict": strict}


def demo(stack, *args: str) -> subprocess.CompletedProcess:
    return run_demo(stack["env"], *args, rows_per_day=ROWS)


@pytest.fixture(scope="module")
def blessed_run(stack):
    out = demo(stack)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


def test_blessed_run_publishes_a_servable_raw_feature_model(stack, blessed_run):
    import numpy as np
    import tensorflow as tf

    from pipelines.models.taxi.features import SCHEMA
    from pipelines.storage import partition_files, read_files
    from pipelines.tf_schema import raw_examples

    assert task_states(blessed_run.stdout) == {
        "validate": "success", "transform": "success", "train": "success", "evaluate": "success",
        "is_blessed": "success", "publish": "success", "needs_approval": "success",
        "approve_promotion": "skipped", "rollout": "success",
    }
    # the local Beam runner is named: nothing tries to download one (DirectRunner fetched Prism from GitHub)
    assert "prism" not in blessed_run.stdout.lower() and "downloading" not in blessed_run.stdout.lower()
    versions = sorted((stack["home"] / "serving" / "taxi").iterdir())
    assert [v.name for v in versions] == ["2026111000"]
    assert f"published version 2026111000: {versions[0]}" in blessed_run.stdout
    assert "train/serve skew: max |training path - serving path| = " in blessed_run.stdout
    # the rollout task promoted it: the local model server's 'stable' label serves it
    assert "label 'stable' -> version 2026111000 (AVAILABLE)" in blessed_run.stdout
    # the demo ends with a prediction fetched over HTTP from the local model server
    [response] = [line for line in blessed_run.stdout.splitlines() if line.strip().startswith("response: ")]
    served = json.loads(response.split("response: ", 1)[1])["predictions"][0]
    [offline] = [line for line in blessed_run.stdout.splitlines() if "offline prediction of version" in line]
    assert abs(served - float(offline.rsplit(": ", 1)[1])) < 1e-5

    serve = tf.saved_model.load(str(versions[0])).signatures["serving_default"]
    part = stack["home"] / "data" / "taxi_trips" / f"dt={END}"
    rows = read_files(partition_files(part, "csv"), "csv", SCHEMA).slice(0, 50)
    probability = serve(examples=tf.constant(raw_examples(rows, SCHEMA)))["probability"].numpy()
    assert probability.shape == (50,)
    assert np.all((probability > 0) & (probability < 1))
    assert len(np.unique(probability)) > 10  # depends on the features, not a constant


def test_unmet_threshold_fails_the_run_visibly_and_notifies(stack, blessed_run):
    """A run that ships nothing is red, says why in a table, and calls the configured failure notifier."""
    out = demo(stack, "--model", str(stack["strict"]), "--no-generate")
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr[-4000:]
    states = task_states(out.stdout)
    assert states["evaluate"] == "success" and states["is_blessed"] == "failed"
    assert states["publish"] == "upstream_failed" and states["rollout"] == "upstream_failed"
    assert "blessed: False auc=" in out.stdout and "is below the minimum 0.999" in out.stdout
    # the is_blessed task log: one line per metric beside the baseline, then the reasons
    assert "model NOT blessed: nothing is published, what serves is unchanged" in out.stdout
    assert "baseline: none (no published version (first run): value thresholds only)" in out.stdout
    assert not list((stack["home"] / "serving").glob("taxi_strict/*"))
    notified = [json.loads(line) for line in (stack["home"] / "notifications.jsonl").read_text().splitlines()]
    assert any(n["dag_id"] == "taxi_strict_retrain" and n["task_id"] == "is_blessed"
               and "is below the minimum 0.999" in n["exception"] for n in notified)


def test_missing_partition_fails_validate_and_keeps_what_is_served(stack, blessed_run):
    served = stack["home"] / "serving" / "taxi" / "2026111000"
    before = sorted(p.relative_to(served) for p in served.rglob("*"))
    gone = stack["home"] / "data" / "taxi_trips" / "dt=2026-11-07"
    shutil.rmtree(gone)
    try:
        out = demo(stack, "--no-generate")
    finally:  # put the partition back (same date, same bytes) for any later test
        from pipelines.config import load_model_config
        from pipelines.datagen import generate_data

        generate_data(load_model_config("taxi"), data_root=str(stack["home"] / "data"), end=END, days=8,
                      rows_per_day=ROWS)
    assert out.returncode == 1
    states = task_states(out.stdout)
    assert states["validate"] == "failed"
    assert states["publish"] == "upstream_failed"
    assert f"missing partition for 2026-11-07: {gone} does not exist" in out.stdout
    assert "eval metrics" not in out.stdout  # the interval's earlier evaluation is not this run's
    assert sorted(p.name for p in served.parent.iterdir()) == ["2026111000"]
    assert sorted(p.relative_to(served) for p in served.rglob("*")) == before


ROLLBACK = """
import json, os, sys
from pathlib import Path
from skewfree.demo import model_server, run_dag, summarize
from skewfree.settings import Settings
settings = Settings.from_env()
with model_server(Path(settings.model_server_config), int(sys.argv[2])) as url:
    os.environ["AIRFLOW_CONN_MODEL_SERVER_DEFAULT"] = url
    run = run_dag("taxi_rollback", __import__("datetime").date(2026, 11, 10), json.loads(sys.argv[1]))
    from pipelines.serving.client import ModelServerClient
    status, body = ModelServerClient(url).request("GET", "/v1/models/taxi/labels/stable")
    print("RESULT " + json.dumps({"state": str(run.state), "tasks": summarize(run),
                                  "stable": body.get("model_version_status", [{}])[0].get("version")}))
"""


def rollback(stack, conf: dict) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-c", ROLLBACK, json.dumps(conf), str(free_port())], env=stack["env"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, (out.stdout + out.stderr)[-4000:]
    return json.loads(lines[0][len("RESULT "):]), out.stdout + out.stderr


def test_rollback_dag_to_a_named_version(stack, blessed_run):
    base = stack["home"] / "serving" / "taxi"
    older = base / "2026110900"  # a version trained on the previous day's data
    if not older.exists():
        shutil.copytree(base / "2026111000", older)

    result, log = rollback(stack, {"target_version": 123})
    assert result["state"] == "failed" and result["stable"] == "2026111000"
    assert "taxi has no version 123 under" in log and "2026110900" in log  # lists the versions that exist

    result, log = rollback(stack, {"target_version": 2026110900})
    assert result["state"] == "success", log[-3000:]
    assert result["stable"] == "2026110900"
    assert (base / "2026111000" / "rejected.json").is_file()  # rolled back from: never a default target
    result, log = rollback(stack, {})  # default: the newest good version before stable; there is none
    assert result["state"] == "failed" and result["stable"] == "2026110900"
    assert "no good version to roll back to before stable 2026110900 (rejected: [2026111000]" in log
    result, log = rollback(stack, {"target_version": 2026111000})  # named, a rejected version may return
    assert result["state"] == "success", log[-3000:]
    assert result["stable"] == "2026111000"


def durations(stdout: str) -> dict[str, float]:
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in {"transform", "train"} and parts[2].endswith("s"):
            out[parts[0]] = float(parts[2][:-1])
    return out


def versions(stack) -> list[str]:
    return sorted(p.name for p in (stack["home"] / "serving" / "taxi").iterdir() if p.name.isdigit())


def test_rerun_of_the_same_interval_is_cached_and_publishes_no_duplicate(stack, blessed_run):
    before = versions(stack)
    out = demo(stack, "--no-generate")
    assert out.returncode == 0, out.stdout[-4000:]
    assert "cache hit: transform for taxi 2026-11-10 reused" in out.stdout
    assert "cache hit: train for taxi 2026-11-10 reused" in out.stdout
    # evaluate is judged again: the first run had no baseline, now 2026111000 serves as stable
    assert "cache hit: evaluate" not in out.stdout
    assert "baseline: 2026111000 (label 'stable' in" in out.stdout
    assert "(identical model already published)" in out.stdout
    assert versions(stack) == before
    first, again = durations(blessed_run.stdout), durations(out.stdout)
    print(f"\nfirst run: transform {first['transform']}s train {first['train']}s; "
          f"cached rerun: transform {again['transform']}s train {again['train']}s")
    assert again["transform"] < first["transform"] / 2 and again["train"] < first["train"] / 2


def test_a_bad_conf_is_refused_in_one_line_before_any_run(stack, blessed_run):
    """A misspelt key or a wrong type: one line naming it, no traceback, no run (each task refuses an unknown
    key too, for triggers from the UI's JSON box or the REST API)."""
    for conf, says in (('{"epocs": 3}', "'epocs' (did you mean 'epochs'?), which is no parameter of taxi_retrain"),
                       ('{"epochs": "five"}', "Invalid input for param epochs: 'five' is not of type")):
        out = demo(stack, "--no-generate", "--conf", conf)
        assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("--conf refused: "), out.stderr
        assert says in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
        assert "==> taxi_retrain run" not in out.stdout


def test_force_recomputes_cached_steps(stack, blessed_run):
    out = demo(stack, "--no-generate", "--conf", '{"force": true, "epochs": 1}')
    assert out.returncode == 0, out.stdout[-4000:]
    assert "cache hit" not in out.stdout
    assert '"epochs": 1' in out.stdout  # train logs its params


def test_rejected_approval_leaves_stable_untouched(stack, blessed_run):
    """require_approval: the run waits on the approval task; a human rejects; nothing is promoted."""
    responder = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "e2e" / "hitl_respond.py"), "taxi_retrain", "approve_promotion",
         "Reject", "600"], env=stack["env"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    config = stack["home"] / "serving" / "models.config"
    stable_before = config.read_text()
    try:
        # after test_force (epochs 1), the default epochs train a new model: a new version, so an approval is asked
        out = demo(stack, "--no-generate", "--conf", '{"require_approval": true}')
    finally:
        answered = responder.communicate(timeout=60)[0]
    assert "answered 'Reject'" in answered, answered
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    states = task_states(out.stdout)
    assert states["publish"] == "success" and states["needs_approval"] == "success"
    assert states["approve_promotion"] == "success" and states["rollout"] == "skipped"
    assert config.read_text() == stable_before  # nothing promoted


def test_an_unanswered_approval_is_rejected_at_its_deadline(stack, blessed_run):
    """Nobody answers: at the deadline ([rollout] approval_timeout_minutes, 1440 for taxi) the scheduler's
    sweep applies the default, Reject; the run ends, nothing is promoted, and later runs are not stalled.
    The test moves the deadline to the past instead of waiting a day, and nothing else: the demo, which has
    no scheduler, runs that sweep itself (it used to wait for an answer forever)."""
    responder = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "e2e" / "hitl_respond.py"), "taxi_retrain", "approve_promotion",
         "@deadline", "600"], env=stack["env"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    config = stack["home"] / "serving" / "models.config"
    stable_before = config.read_text()
    try:  # the version the previous test's human rejected is still not stable: an approval is asked again
        out = demo(stack, "--no-generate", "--conf", '{"require_approval": true}')
    finally:
        swept = responder.communicate(timeout=60)[0]
    assert "deadline in 14" in swept and "chosen ['Reject']" in swept, swept
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    states = task_states(out.stdout)
    assert states["approve_promotion"] == "success" and states["rollout"] == "skipped"
    assert config.read_text() == stable_before
    # what the approver was shown: a decision page, not a dict
    import sqlite3

    with contextlib.closing(sqlite3.connect(stack["home"] / "airflow" / "airflow.db")) as db:
        [body] = db.execute("SELECT body FROM hitl_detail ORDER BY created_at DESC LIMIT 1").fetchone()
    assert body.startswith("### Promote taxi version 202611100") and "| `auc` |" in body, body
    assert "at most 0.05 lower than stable" in body and "**Slices that moved most**" in body, body


def test_bad_newest_day_stops_in_validate_until_the_change_is_accepted(stack, blessed_run):
    """A 10x row spike stops the run in validate with nothing served changed; accepted, it ships with lineage."""
    import pyarrow as pa

    from pipelines.models.taxi.features import SCHEMA
    from pipelines.storage import read_files, write_table_bytes

    serving = stack["home"] / "serving" / "taxi"
    before = {v: sorted(p.relative_to(serving / v) for p in (serving / v).rglob("*")) for v in versions(stack)}
    config_before = (stack["home"] / "serving" / "models.config").read_text()
    newest = stack["home"] / "data" / "taxi_trips" / f"dt={END}" / "part-00000.csv"
    original = newest.read_bytes()
    try:
        newest.write_bytes(write_table_bytes(pa.concat_tables([read_files([newest], "csv", SCHEMA)] * 10), "csv"))
        out = demo(stack, "--no-generate")
        assert out.returncode == 1
        states = task_states(out.stdout)
        assert states["validate"] == "failed"
        assert states["transform"] == states["publish"] == states["rollout"] == "upstream_failed"
        assert f"{END}: {10 * ROWS} rows is 10x the median {ROWS} of the reference window" in out.stdout
        assert "--accept-anomaly volume" in out.stdout
        assert {v: sorted(p.relative_to(serving / v) for p in (serving / v).rglob("*")) for v in versions(stack)
                } == before
        assert (stack["home"] / "serving" / "models.config").read_text() == config_before

        out = demo(stack, "--no-generate", "--conf", '{"accept_anomalies": ["volume"]}')
        assert out.returncode == 0, out.stdout[-4000:]
        [new] = sorted(set(versions(stack)) - set(before))
        manifest = json.loads((serving / new / "manifest.json").read_text())
        assert manifest["accepted_anomalies"] == ["volume"]
    finally:
        newest.write_bytes(original)


def test_every_demo_run_stays_in_the_history_off_the_schedule(stack, blessed_run):
    """Each demo run of this module is still in Airflow's history (dag.test() clears the runs at its logical
    date: the demo's are never the same), none sits on a scheduled run's logical date (midnight), each has
    the interval END as its data interval, and its duration is its run time, not days."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(stack["home"] / "airflow" / "airflow.db")) as db:
        runs = db.execute("SELECT run_id, logical_date, data_interval_start, start_date, end_date FROM dag_run "
                          "WHERE dag_id = 'taxi_retrain'").fetchall()
    assert len(runs) >= 5, runs  # this module ran the demo at least five times before this test
    assert len({r[0] for r in runs}) == len(runs)
    for run_id, logical, interval_start, started, ended in runs:
        logical = dt.datetime.fromisoformat(logical)
        assert logical.time() != dt.time() and logical.date() == END + dt.timedelta(days=1), run_id
        assert dt.datetime.fromisoformat(interval_start).date() == END, run_id
        if ended:
            duration = dt.datetime.fromisoformat(ended) - dt.datetime.fromisoformat(started)
            assert dt.timedelta(0) < duration < dt.timedelta(minutes=30), (run_id, started, ended)


def test_publish_and_promotion_are_asset_events_with_the_version(stack, blessed_run):
    """publish emits skewfree.taxi.published with the version, interval and metrics; a rollout that moved the
    label emits skewfree.taxi.stable; a run that promoted nothing (its rollout skipped) emits no stable event."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(stack["home"] / "airflow" / "airflow.db")) as db:
        events = db.execute("SELECT asset.name, asset_event.extra, asset_event.source_run_id FROM asset_event "
                            "JOIN asset ON asset.id = asset_event.asset_id "
                            "WHERE asset_event.source_dag_id = 'taxi_retrain' ORDER BY asset_event.id").fetchall()
        rollbacks = db.execute("SELECT COUNT(*) FROM asset_event WHERE source_dag_id = 'taxi_rollback'").fetchone()[0]
        rollouts = dict(db.execute("SELECT run_id, state FROM task_instance WHERE dag_id = 'taxi_retrain' "
                                   "AND task_id = 'rollout'").fetchall())
    published = [(json.loads(extra), run) for name, extra, run in events if name == "skewfree.taxi.published"]
    stable = [(json.loads(extra), run) for name, extra, run in events if name == "skewfree.taxi.stable"]
    first, _ = published[0]
    assert first["version"] == 2026111000 and first["interval"] == str(END) and first["reused"] is False
    assert 0.5 < first["metrics"]["auc"] <= 1 and first["metrics"]["examples"] > 0
    assert stable and stable[0][0]["version"] == 2026111000 and stable[0][0]["label"] == "stable"
    assert {run for _, run in stable} == {run for run, state in rollouts.items() if state == "success"}
    assert any(state == "skipped" for state in rollouts.values())  # e.g. the rejected approval: no event
    assert rollbacks >= 1  # the rollback DAG's promotions are stable events too
    # the extra links the worker stored for the first run's tasks (Airflow shows them on the task page)
    with contextlib.closing(sqlite3.connect(stack["home"] / "airflow" / "airflow.db")) as db:
        stored = {(task, key): json.loads(value) for task, key, value in db.execute(
            "SELECT task_id, key, value FROM xcom WHERE dag_id = 'taxi_retrain' AND key LIKE '_link_%' "
            "AND run_id = ?", (stable[0][1],)).fetchall()}
    assert stored[("evaluate", "_link_ReportLink")] == f"/skewfree/models/taxi/runs/{END}/report"
    assert stored[("publish", "_link_VersionLink")] == "/skewfree/#taxi-v2026111000"
    assert stored[("publish", "_link_ModelServerLink")] == "/skewfree/models/taxi/versions/2026111000/server"
    # resolved when clicked (skewfree.ui): the demo's run links to whatever TensorBoard `./dev airflow` starts
    assert stored[("train", "_link_TensorBoardLink")] == f"/skewfree/models/taxi/runs/{END}/tensorboard"


def test_each_run_has_a_note_saying_what_it_shipped(stack, blessed_run):
    """The run-note listener (skewfree.run_note) wrote what every finished run of this module shipped, or why
    it shipped nothing, on the DagRun: the first line a person reads on the run's page."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(stack["home"] / "airflow" / "airflow.db")) as db:
        notes = db.execute("SELECT dag_run.dag_id, dag_run.run_id, dag_run.state, dag_run_note.content FROM dag_run "
                           "LEFT JOIN dag_run_note ON dag_run_note.dag_run_id = dag_run.id "
                           "ORDER BY dag_run.id").fetchall()
    finished = [n for n in notes if n[2] in ("success", "failed")]
    assert finished and all(note for *_, note in finished), notes
    texts = [note for *_, note in finished]
    assert texts[0].startswith("published 2026111000, now stable (auc "), texts
    assert any(t.startswith("not blessed: auc") and "below the minimum 0.999" in t for t in texts), texts
    assert any(t.startswith("failed in validate: data for taxi interval ") and "failed validation" in t
               and t.endswith("Nothing published, what serves is unchanged (see the validate log)") for t in texts), texts
    assert any(t.endswith("not promoted: Reject by tester") for t in texts), texts
    assert any(t.endswith("not promoted: Reject at the deadline (nobody answered)") for t in texts), texts
    assert any(t.startswith("rolled back: ") and "now stable (was " in t for t in texts), texts


READ_LOGS = """
import json, sys
from airflow.models.taskinstance import TaskInstance
from airflow.utils.log.log_reader import TaskLogReader
from airflow.utils.session import create_session
from sqlalchemy import select

dag_id, states = sys.argv[1], json.loads(sys.argv[2])
found = {}
with create_session() as session:
    for ti in session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id)):
        if ti.state not in states.get(ti.task_id, ()):
            continue
        chunks, _ = TaskLogReader().read_log_chunks(ti, ti.try_number, {})
        found.setdefault(ti.task_id, []).append(
            [{"level": getattr(m, "level", None), "event": m.event} for m in chunks if hasattr(m, "event")])
print(json.dumps(found))
"""


def test_the_demos_task_logs_open_in_airflow(stack, blessed_run):
    """dag.test() writes no task log files; the demo files each task's lines where Airflow's log reader (the UI's
    log view) finds them, with the levels the step logged."""
    wanted = {"train": ["success"], "evaluate": ["success"], "validate": ["failed"],
              "approve_promotion": ["success", "failed"]}
    out = subprocess.run([sys.executable, "-c", READ_LOGS, "taxi_retrain", json.dumps(wanted)], env=stack["env"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    logs = json.loads(out.stdout.strip().splitlines()[-1])
    train = [m["event"] for m in logs["train"][0]]
    assert any("pipelines.train: training taxi" in e for e in train), train[:40]
    assert any("pipelines.evaluate: BLESSED" in m["event"] for run in logs["evaluate"] for m in run)
    # a validate that failed: its error is an error in the log view, naming the missing partition
    assert any(m["level"] == "error" and "missing partition" in m["event"] for run in logs["validate"] for m in run)
    # the approval task deferred and resumed under one try: its log has both halves
    approvals = logs["approve_promotion"]
    assert approvals and all(run for run in approvals), approvals
