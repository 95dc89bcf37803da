"""The manual-trigger form: JSON-schema validation with messages naming the field; flags for the steps."""

from __future__ import annotations

import functools

import jinja2
import pytest
from airflow.sdk.definitions.param import ParamsDict

from pipelines.config import load_model_config
from pipelines.storage import confined
from skewfree.dag_factory import stable_flag, step_flags, trigger_params
from skewfree.settings import Settings


def validated(conf: dict) -> dict:
    params = ParamsDict(trigger_params())
    params.update(conf)  # what Airflow does with a trigger's conf (UI form or REST API)
    return params.validate()


def test_defaults_are_what_a_scheduled_run_gets():
    assert validated({}) == {
        "epochs": None, "learning_rate": None, "batch_size": None, "gpus": None, "image_tag": None,
        "data_dir": None, "publish": True, "force": False, "allow_older_than_serving": False,
        "allow_class_change": False, "require_approval": False, "accept_anomalies": [],
    }


@pytest.mark.parametrize(("conf", "field"), [
    ({"epochs": 0}, "epochs"),
    ({"epochs": "ten"}, "epochs"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"batch_size": 10**6}, "batch_size"),
    ({"gpus": 9}, "gpus"),
    ({"gpus": -1}, "gpus"),
    ({"image_tag": "latest"}, "image_tag"),
    ({"image_tag": "2.21.0 gpu"}, "image_tag"),
    ({"data_dir": "../etc"}, "data_dir"),
    ({"data_dir": "/etc/passwd"}, "data_dir"),
    ({"data_dir": "taxi/../../secrets"}, "data_dir"),
    ({"data_dir": "~root"}, "data_dir"),
    ({"publish": "yes"}, "publish"),
    ({"accept_anomalies": "volume"}, "accept_anomalies"),
    ({"accept_anomalies": ["volume; rm -rf /"]}, "accept_anomalies"),
])
def test_invalid_values_are_refused_naming_the_field(conf, field):
    with pytest.raises(Exception, match=f"Invalid input for param {field}:"):
        validated(conf)


def test_valid_manual_trigger():
    values = validated({"epochs": 5, "learning_rate": 0.01, "gpus": 2, "image_tag": "2.21.0-gpu",
                        "data_dir": "taxi_trips_fixed/v2", "force": True})
    assert values["image_tag"] == "2.21.0-gpu" and values["data_dir"] == "taxi_trips_fixed/v2"


LOCAL = Settings.from_env({"SKEWFREE_HOME": "/srv/skewfree"})
KUBERNETES = Settings.from_env({"SKEWFREE_BACKEND": "kubernetes", "SKEWFREE_DATA_ROOT": "s3://d/raw",
                                "SKEWFREE_ARTIFACT_ROOT": "s3://a/runs", "SKEWFREE_SERVING_ROOT": "/models",
                                "SKEWFREE_K8S_VOLUME_CLAIMS": "/models=skewfree-serving"})


def render(step: str, params: dict, settings: Settings = LOCAL) -> list[str]:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    flags = step_flags(step, config=load_model_config("taxi"), settings=settings)
    rendered = [env.from_string(flag).render(params=params, run_id="manual__1",
                                             skewfree_stable_flag=functools.partial(stable_flag, "taxi"))
                for flag in flags]
    assert rendered[0] == "--run-id=manual__1"  # every step: validate claims the interval for the run
    return [arg for arg in rendered[1:] if arg]


def test_params_become_step_flags_only_when_set():
    defaults = validated({})
    assert render("train", defaults) == []
    assert render("transform", defaults) == []
    assert render("evaluate", defaults) == ["--model-server-config=/srv/skewfree/serving/models.config"]
    assert render("validate", defaults) == []
    assert render("publish", defaults) == ["--image=local"]
    custom = validated({"epochs": 5, "learning_rate": 0.01, "force": True, "data_dir": "fixed", "gpus": 0,
                        "image_tag": "2.21.0-gpu"})
    assert render("train", custom) == ["--epochs=5", "--learning-rate=0.01", "--gpus=0", "--force"]
    assert render("transform", custom) == ["--force"]
    assert render("evaluate", custom)[-1] == "--force"
    assert render("validate", custom) == ["--data-dir=fixed"]
    assert render("publish", custom)[0] == "--image=local"  # locally the steps ran in this interpreter


def test_pods_get_the_effective_gpu_count_and_record_the_image_they_ran(tmp_path, monkeypatch):
    """A scheduled run on the kubernetes backend trains with the model config's GPU (taxi: 1) and its trainer
    is told so (its preflight refuses a pod that cannot see it); a run's gpus param overrides both; publish
    records the exact image the pods ran; evaluate is told the stable version, from the model server's config
    file that only this side reads."""
    monkeypatch.setenv("SKEWFREE_MODEL_SERVER_CONFIG", str(tmp_path / "models.config"))
    defaults = validated({})
    assert render("train", defaults, KUBERNETES) == ["--gpus=1"]
    assert render("train", validated({"gpus": 0}), KUBERNETES) == ["--gpus=0"]
    assert render("train", validated({"gpus": 2}), KUBERNETES) == ["--gpus=2"]
    assert render("evaluate", defaults, KUBERNETES) == []  # no config file yet: no stable version
    (tmp_path / "models.config").write_text('model_config_list { config { name: "taxi" base_path: "/models/taxi" '
                                            'model_platform: "tensorflow" version_labels { key: "stable" value: '
                                            '2026111000 } } }')
    assert render("evaluate", defaults, KUBERNETES) == ["--stable-version=2026111000"]
    assert render("publish", defaults, KUBERNETES)[0] == "--image=ghcr.io/skewfree/trainer:0.1.0-tf2.21.0-gpu"
    tagged = validated({"image_tag": "0.2.0-tf2.21.0-gpu"})
    assert render("publish", tagged, KUBERNETES)[0] == "--image=ghcr.io/skewfree/trainer:0.2.0-tf2.21.0-gpu"
    accepting = validated({"accept_anomalies": ["volume", "new_values:company"]})
    assert render("validate", accepting) == ["--accept-anomaly=volume,new_values:company"]


def test_steps_confine_paths_themselves(tmp_path):
    assert confined(tmp_path, "a/b", "data_dir") == tmp_path.resolve() / "a" / "b"
    for bad in ("../x", "/etc", "a/../../x", "~/x", ""):
        with pytest.raises(ValueError, match="data_dir"):
            confined(tmp_path, bad, "data_dir")
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(ValueError, match="escapes its root"):
        confined(tmp_path, "link", "data_dir")


def test_a_conf_key_that_is_no_parameter_fails_every_task_before_it_runs():
    """A trigger's conf goes to Airflow as is: a typo ('epocs', 'require_aproval') would run with the default
    (an approval gate silently off) unless each task's pre_execute refuses it, naming the key."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from skewfree.dag_factory import check_run, refuse_unknown_conf, retrain_dag, rollback_dag

    retrain, rollback = retrain_dag("taxi"), rollback_dag("taxi")
    for dag, hook in ((retrain, check_run), (rollback, refuse_unknown_conf)):  # (check_run calls it first)
        assert dag.tasks and all(t._pre_execute_hook is hook for t in dag.tasks), dag.dag_id

    pushed = {}

    def run(dag, task_id: str, conf) -> None:
        pushed.clear()
        refuse_unknown_conf({"dag": dag, "task": dag.get_task(task_id), "dag_run": SimpleNamespace(conf=conf),
                             "ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))})

    for conf in (None, {}, {"epochs": 3, "require_approval": True}):  # scheduled runs, the UI form
        run(retrain, "validate", conf)
    with pytest.raises(AirflowFailException) as err:
        run(retrain, "rollout", {"epocs": 3, "require_aproval": True, "epochs": 2})
    assert str(err.value).startswith("the trigger's conf has 'epocs' (did you mean 'epochs'?), 'require_aproval' "
                                     "(did you mean 'require_approval'?), which are no parameter of taxi_retrain")
    assert pushed == {"error": str(err.value)}  # the run note's reason (it said only "see the validate log")
    run(rollback, "rollback", {"target_version": 2026120600})
    with pytest.raises(AirflowFailException, match=r"'version' \(did you mean 'target_version'\?\), which is no "
                                                   r"parameter of taxi_rollback: nothing ran. Its parameters are "
                                                   r"\['target_version'\]"):
        run(rollback, "rollback", {"version": 2026120600})
    with pytest.raises(AirflowFailException, match=r"conf has 'zzz', which is no parameter"):
        run(retrain, "validate", {"zzz": 1})


def test_a_run_triggered_without_a_logical_date_retrains_the_latest_interval(caplog):
    """Airflow 3 gives a manual run without a logical date (the README's `airflow dags trigger` line) no data
    interval: every step failed rendering '{{ data_interval_start | ds }}'. It now retrains the interval the
    timetable gives any manual run; a logical date outside that interval is pointed out, with the backfill to
    run instead (Airflow 3 does not derive a manual run's interval from it)."""
    import datetime as dt
    import logging
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from skewfree.dag_factory import check_run, retrain_dag

    dag = retrain_dag("taxi")
    env = dag.get_template_env()
    run_after = dt.datetime(2026, 12, 7, 15, 30, tzinfo=dt.UTC)
    for task_id in ("validate", "train", "publish"):
        template = env.from_string(dag.get_task(task_id).interval)
        assert template.render(dag=dag, dag_run=SimpleNamespace(run_after=run_after)) == "2026-12-06"
        assert template.render(dag=dag, dag_run=SimpleNamespace(run_after=run_after),
                               data_interval_start=dt.datetime(2026, 11, 20, tzinfo=dt.UTC)) == "2026-11-20"

    def pre_execute(logical_date, interval_start=None, run_type="manual"):
        caplog.clear()
        interval = {} if interval_start is None else {"data_interval_start": interval_start,
                                                      "data_interval_end": interval_start + dt.timedelta(days=1)}
        with caplog.at_level(logging.WARNING):
            check_run({"dag": dag, "task": dag.get_task("validate"), "logical_date": logical_date, **interval,
                       "dag_run": SimpleNamespace(conf={}, run_type=run_type, run_after=run_after)})
        return caplog.text

    day = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    assert pre_execute(None) == ""
    assert pre_execute(dt.datetime(2026, 12, 7, 15, 30, tzinfo=dt.UTC), day) == ""  # the demo's: its interval's end
    # the REST API and the UI: the interval that ends at the logical date
    assert pre_execute(dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC), dt.datetime(2026, 11, 19, tzinfo=dt.UTC)) == ""
    # ... but a logical date at midnight is the logical date of the scheduled run of 2026-11-20, which Airflow then
    # never creates: the daily schedule stopped there for good (a user trial), so the run is refused
    with pytest.raises(AirflowFailException) as err:
        pre_execute(dt.datetime(2026, 11, 20, tzinfo=dt.UTC), dt.datetime(2026, 11, 19, tzinfo=dt.UTC))
    assert str(err.value) == (
        "this manual run's logical date 2026-11-20T00:00:00+00:00 is the logical date of the scheduled run of the "
        "interval 2026-11-20, which one DAG may have only once. Nothing ran; when this run ends its logical date is "
        "cleared, so that the scheduler still creates that run. Trigger again with a time of day, e.g. "
        "2026-11-20T00:01:00Z (not a time still to come: Airflow holds such a run until then, and the runs after "
        "it): it retrains the same interval, 2026-11-19")
    with pytest.raises(AirflowFailException, match=r"logical date 2026-11-20T00:00:00\+00:00 is the logical date of "
                                                   r"the scheduled run .* it retrains the same interval, 2026-12-06"):
        pre_execute(dt.datetime(2026, 11, 20, tzinfo=dt.UTC), day)  # `airflow dags trigger --logical-date 2026-11-20`
    said = pre_execute(dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC), day)
    assert ("this manual run retrains the interval 2026-12-06..2026-12-07, which does not end on its logical date "
            "2026-11-20: `airflow dags trigger` gives a manual run the latest complete interval before it runs, "
            "whatever its logical date. To retrain a past interval, run a backfill: airflow backfill create "
            "--dag-id taxi_retrain") in said
    assert pre_execute(dt.datetime(2026, 11, 20, tzinfo=dt.UTC), day, run_type="scheduled") == ""


def test_only_a_retraining_dags_scheduled_logical_dates_count_as_taken():
    """The schedule slot's rule (a review): a trigger or delta timetable gives a manual run an interval that
    ends at any time, so 'the interval ends at the logical date' held for every manual run of such DAGs. Only a
    CronDataIntervalTimetable's scheduled runs sit where a manual run can take their place; and the listener
    clears only a run its own validate refused and marked (schedule_slot.MARK)."""
    import datetime as dt
    from types import SimpleNamespace

    from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable
    from airflow.timetables.trigger import CronTriggerTimetable, DeltaTriggerTimetable

    from skewfree.dag_factory import on_schedule, retrain_dag

    midnight, noon = dt.datetime(2026, 11, 20, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    assert on_schedule(retrain_dag("taxi"), midnight) and not on_schedule(retrain_dag("taxi"), noon)
    assert on_schedule(SimpleNamespace(timetable=CronDataIntervalTimetable("@daily", "UTC")), midnight)
    for timetable in (CronTriggerTimetable("@daily", timezone="UTC"), DeltaTriggerTimetable(dt.timedelta(days=1)),
                      DeltaDataIntervalTimetable(dt.timedelta(days=1))):
        for logical in (midnight, noon):
            assert not on_schedule(SimpleNamespace(timetable=timetable), logical), (timetable, logical)
    assert not on_schedule(retrain_dag("taxi"), None)
