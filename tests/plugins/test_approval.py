"""Approval with a deadline: a pending approval is rejected when it times out, and nobody is asked to approve
a version that already serves as stable."""

from __future__ import annotations

import datetime as dt


def test_the_approval_times_out_to_reject_and_names_its_assignees(monkeypatch, tmp_path):
    from skewfree.dag_factory import retrain_dag
    from tests.conftest import ROOT

    source = tmp_path / "taxi.toml"
    text = (ROOT / "pipelines/models/taxi/config.toml").read_text()
    source.write_text(text.replace("approval_timeout_minutes = 1440", "approval_timeout_minutes = 30").replace(
        "approval_assignees = []", 'approval_assignees = ["ml-lead"]'))
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    approval = retrain_dag(str(source)).get_task("approve_promotion")
    assert approval.response_timeout == dt.timedelta(minutes=30)
    assert approval.defaults == ["Reject"]  # what the deadline answers
    assert [u["id"] for u in approval.assigned_users] == ["ml-lead"]


def test_no_approval_is_asked_for_the_version_that_already_serves(monkeypatch, tmp_path):
    from skewfree.dag_factory import needs_approval

    config = tmp_path / "models.config"
    config.write_text('model_config_list {\n  config {\n    name: "taxi"\n    base_path: "/m/taxi"\n'
                      '    model_platform: "tensorflow"\n    model_version_policy { specific { versions: 7 } }\n'
                      '    version_labels { key: "stable" value: 7 }\n  }\n}\n')
    monkeypatch.setenv("SKEWFREE_MODEL_SERVER_CONFIG", str(config))
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    decide = needs_approval.function
    assert decide({"version": 7}, "taxi", params={"require_approval": True}) == "rollout"
    assert decide({"version": 8}, "taxi", params={"require_approval": True}) == "approve_promotion"
    assert decide({"version": 8}, "taxi", params={"require_approval": False}) == "rollout"
    # nor for one rolled back from: the rollout skips it (a re-run that published the same model again)
    (tmp_path / "serving" / "taxi" / "8").mkdir(parents=True)
    (tmp_path / "serving" / "taxi" / "8" / "rejected.json").write_text('{"reason": "rolled back"}')
    assert decide({"version": 8}, "taxi", params={"require_approval": True}) == "rollout"
    # nor for one whose class ids differ from stable's, unless the run allows it (then the rollout promotes it)
    for version, classes in ((7, ["a", "b"]), (9, ["b", "a"])):
        (tmp_path / "serving" / "taxi" / str(version)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "serving" / "taxi" / str(version) / "manifest.json").write_text(f'{{"classes": {classes}}}'
                                                                                     .replace("'", '"'))
    assert decide({"version": 9}, "taxi", params={"require_approval": True}) == "rollout"
    assert decide({"version": 9}, "taxi", params={"require_approval": True, "allow_class_change": True}) == \
        "approve_promotion"


def test_a_configured_notifier_is_told_when_an_approval_waits(monkeypatch, tmp_path):
    """SKEWFREE_APPROVAL_NOTIFIER names a callable (or an Airflow notifier): the approval task calls it when it
    starts waiting, with the run's context; a name that does not resolve is refused with the variable named."""
    import json
    from types import SimpleNamespace

    import pytest

    from pipelines.config import ConfigError
    from skewfree.dag_factory import retrain_dag

    record = tmp_path / "notified.jsonl"
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    monkeypatch.setenv("SKEWFREE_TEST_NOTIFICATIONS", str(record))
    monkeypatch.setenv("SKEWFREE_APPROVAL_NOTIFIER", "tests.fixtures.notify:record")
    dag = retrain_dag("taxi")
    [notifier] = dag.get_task("approve_promotion").notifiers
    notifier({"dag": dag, "task_instance": SimpleNamespace(task_id="approve_promotion")})
    assert json.loads(record.read_text()) == {"dag_id": "taxi_retrain", "task_id": "approve_promotion",
                                              "exception": "None"}
    monkeypatch.setenv("SKEWFREE_APPROVAL_NOTIFIER", "tests.fixtures.notify:nothing_here")
    with pytest.raises(ConfigError, match="SKEWFREE_APPROVAL_NOTIFIER='tests.fixtures.notify:nothing_here' does not"):
        retrain_dag("taxi")
    monkeypatch.delenv("SKEWFREE_APPROVAL_NOTIFIER")
    assert retrain_dag("taxi").get_task("approve_promotion").notifiers == []


def test_dags_carry_owner_docs_retries_and_deadlines_from_the_model_config(monkeypatch, tmp_path):
    from skewfree.dag_factory import STEP_DOCS, retrain_dag, rollback_dag

    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    dag = retrain_dag("taxi")
    assert "| `auc` | 0.75 |  | at most 0.05 lower |" in dag.doc_md and "taxi_trips/dt={date}" in dag.doc_md
    for step, doc in STEP_DOCS.items():
        task = dag.get_task(step)
        assert task.owner == "ml-platform" and task.doc_md == doc and task.retries == 1
    assert dag.get_task("train").execution_timeout == dt.timedelta(hours=4)  # [kubernetes.resources.train]
    assert dag.get_task("rollout").retries == 0  # a failed rollout already restored stable: never retried
    # every step twice (one retry) at its deadline, the retry delays, the approval's deadline and a day for the
    # training pool: a stuck run cannot hold max_active_runs=1 forever, and a slow one is never cut short
    steps = 2 * (900 + 7200 + 14400 + 3600 + 900)  # taxi's [kubernetes.resources.*] active_deadline_seconds
    assert dag.dagrun_timeout == dt.timedelta(seconds=steps, minutes=5 * 2 + 1440, days=1)
    assert rollback_dag("taxi").get_task("rollback").owner == "ml-platform"


def test_the_approval_body_is_a_decision_page():
    """Candidate vs stable with each threshold, the slices that moved most (largest change first), the gate
    and the report; NaN is shown as NaN, never hidden."""
    from pipelines.config import load_model_config
    from skewfree.approval import approval_page

    config = load_model_config("taxi")
    evaluation = {
        "interval": "2026-11-23", "blessed": True, "reasons": [], "report": "/runs/2026-11-23/evaluate/report.html",
        "metrics": {"auc": 0.87, "log_loss": 0.38, "accuracy": float("nan"), "examples": 20000.0},
        "baseline": {"version": 2026112200, "how": "label 'stable'", "metrics": {"auc": 0.86, "log_loss": 0.40}},
        "slices": [
            {"feature": "payment_type", "slice": "Cash", "examples": 5000,
             "metrics": {"auc": 0.80}, "baseline_metrics": {"auc": 0.85}},
            {"feature": "payment_type", "slice": "Credit Card", "examples": 9000,
             "metrics": {"auc": 0.90}, "baseline_metrics": {"auc": 0.89}},
            {"feature": "trip_miles", "slice": "[2, 5)", "examples": 3, "metrics": {"auc": 0.5}},
            {"feature": "company", "slice": "A|B Cabs", "examples": 700,
             "metrics": {"auc": 0.86}, "baseline_metrics": {"auc": 0.861}},
        ],
    }
    page = approval_page(evaluation, {"version": 2026112300}, config)
    assert page.startswith("### Promote taxi version 2026112300 to `stable`?")
    assert "| `auc` | 0.87 | 0.86 | +0.01 | >= 0.75; at most 0.05 lower than stable |" in page
    assert "| `log_loss` | 0.38 | 0.4 | -0.02 | <= 0.55 |" in page
    assert "| `accuracy` | nan | - | - | >= 0.75 |" in page
    moved = page[page.index("**Slices that moved most**"):]
    assert moved.index("payment_type=Cash") < moved.index("payment_type=Credit Card")
    assert "| payment_type=Cash | 5000 | 0.8 | 0.85 | -0.05 |" in moved and "trip_miles" not in moved
    assert "| company=A\\|B Cabs | 700 |" in moved  # a '|' in a value does not break the table
    # the report published with the version, which no later run of the interval replaces (a user trial saw the
    # run directory's change while an approval waited)
    assert "as published with version 2026112300: [/skewfree/models/taxi/versions/2026112300/report](" in page
    assert "within 1440 minutes: nothing changes" in page
    assert "`/runs/2026-11-23/evaluate/report.html`" in approval_page(evaluation, {}, config)


def test_the_demo_says_where_to_approve_once_a_minute_not_every_second(capsys):
    import logging

    from skewfree.demo import ApprovalWaitFilter

    log = logging.getLogger("test.dag_test_loop")
    log.propagate = False
    shown = []
    handler = logging.Handler()
    handler.emit = shown.append
    log.addHandler(handler)
    log.addFilter(ApprovalWaitFilter("taxi_retrain"))
    for _ in range(100):  # 100 seconds of dag.test()'s loop
        log.warning("Waiting for Human-in-the-loop input for tasks: %s", ["approve_promotion"])
    log.warning("something else")
    assert [r.getMessage() for r in shown] == ["something else"]
    assert capsys.readouterr().out.count("run `./dev airflow` in another terminal") == 1
