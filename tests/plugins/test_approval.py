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
    decide = needs_approval.function
    assert decide({"version": 7}, "taxi", params={"require_approval": True}) == "rollout"
    assert decide({"version": 8}, "taxi", params={"require_approval": True}) == "approve_promotion"
    assert decide({"version": 8}, "taxi", params={"require_approval": False}) == "rollout"


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
    # the steps' deadlines plus the approval's: a stuck run cannot hold max_active_runs=1 forever
    assert dag.dagrun_timeout > dt.timedelta(minutes=1440)
    assert rollback_dag("taxi").get_task("rollback").owner == "ml-platform"
