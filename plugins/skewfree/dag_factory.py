"""Build a model's DAGs from its light config (no TensorFlow at parse time).

- ``<name>_retrain``: validate -> transform -> train -> evaluate -> is_blessed -> publish
  -> needs_approval -> [approve_promotion] -> rollout, over daily data intervals;
- ``<name>_rollback``: manual only; promotes a named version (default: ``previous``) to ``stable``.

``model_dags()`` builds both for every model folder it discovers (``pipelines/models/*`` and the
folders in ``SKEWFREE_MODELS_DIR``): one DAG file serves every model.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import logging
from typing import ClassVar

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

from pipelines.config import ConfigError, discover_models, load_model_config
from pipelines.runs import CACHED_STEPS, STEPS
from skewfree.approval import approval_page, change_text
from skewfree.assets import published_asset, stable_asset
from skewfree.operators.rollout import RolloutOperator
from skewfree.operators.step import PipelineStepOperator
from skewfree.run_note import refuse
from skewfree.settings import IMAGE_TAG_PATTERN, Settings

log = logging.getLogger(__name__)


# the run's data interval: never the wall clock (``run_interval``)
INTERVAL = "{{ skewfree_interval(dag, dag_run, data_interval_start | default(none)) }}"


def _manual_interval(dag, run_after: dt.datetime):
    """The data interval the DAG's timetable gives a manual run at ``run_after``: the latest complete one."""
    import pendulum

    timetable = dag.timetable
    if not hasattr(timetable, "infer_manual_data_interval"):  # the Task SDK's definition: the core one computes
        from airflow.timetables.interval import CronDataIntervalTimetable as Computed

        timetable = Computed(timetable.expression, timetable.timezone)
    return timetable.infer_manual_data_interval(run_after=pendulum.instance(run_after))


def on_schedule(dag, logical: dt.datetime | None) -> bool:
    """Whether ``logical`` is the logical date of one of a retraining DAG's scheduled runs (midnight for a daily
    model): a manual run there takes that run's place for good (``schedule_slot``). Its timetable is a
    ``CronDataIntervalTimetable``, whose scheduled runs sit at an interval's start (a trigger timetable's
    manual intervals end at any time: not for them)."""
    if logical is None or type(dag.timetable).__name__ != "CronDataIntervalTimetable":
        return False
    return _manual_interval(dag, logical).end == logical


def run_interval(dag, dag_run, data_interval_start: dt.datetime | None = None) -> str:
    """A run's data interval as YYYY-MM-DD: the start of its data interval. Airflow 3 gives a run triggered with
    no logical date (``airflow dags trigger`` without ``--logical-date``, the REST API with ``logical_date:
    null``) no data interval at all: it gets the interval the DAG's timetable gives any manual run, the latest
    complete one before it runs (``run_after``)."""
    if data_interval_start is None:
        data_interval_start = _manual_interval(dag, dag_run.run_after).start
    return data_interval_start.strftime("%Y-%m-%d")


def check_run(context) -> None:
    """Every task's ``pre_execute``: ``refuse_unknown_conf``; and the first task of a manual run says when its
    interval does not end on its logical date's day. The REST API and the UI give a manual run the interval
    that ends at its logical date, but ``airflow dags trigger --logical-date`` the latest one before the run."""
    refuse_unknown_conf(context)
    dag_run, logical, end = context.get("dag_run"), context.get("logical_date"), context.get("data_interval_end")
    run_type = getattr(dag_run, "run_type", None)
    if context["task"].task_id != "validate" or logical is None or end is None or \
            getattr(run_type, "value", run_type) != "manual":
        return
    if on_schedule(context["dag"], logical):  # the REST API's and the UI's date without a time of day,
        # `airflow dags trigger --logical-date 2026-11-20`
        start = run_interval(context["dag"], dag_run, context.get("data_interval_start"))
        if (ti := context.get("ti")) is not None:  # the listener gives the date back when the run ends
            from skewfree.schedule_slot import MARK

            ti.xcom_push(key=MARK, value=logical.isoformat())
        refuse(context, f"this manual run's logical date {logical.isoformat()} is the logical date of the scheduled "
                        f"run of the interval {logical.date()}, which one DAG may have only once. Nothing ran; when "
                        f"this run ends its logical date is cleared, so that the scheduler still creates that run. "
                        f"Trigger again with a time of day, e.g. {logical.date()}T00:01:00Z (not a time still to come: "
                        f"Airflow holds such a run until then, and the runs after it): it retrains the same "
                        f"interval, {start}")
    if logical.date() != end.date():
        start = run_interval(context["dag"], dag_run, context.get("data_interval_start"))
        log.warning("this manual run retrains the interval %s..%s, which does not end on its logical date %s: "
                    "`airflow dags trigger` gives a manual run the latest complete interval before it runs, "
                    "whatever its logical date. To retrain a past interval, run a backfill: airflow backfill "
                    "create --dag-id %s --from-date <its first day> --to-date <its first day>", start,
                    end.date(), logical.date(), context["dag"].dag_id)

# Backfills run several intervals at once; this pool (create it with `airflow pools set
# skewfree_training 1 "..."`) bounds how many of them train at the same time.
TRAINING_POOL = "skewfree_training"

# An anomaly id as validate lists it: KIND or KIND:COLUMN
ANOMALY_ID_PATTERN = r"^[a-z_]+(:[A-Za-z0-9_.-]+)?$"
# A relative path under its root: no leading '/', '~' or '.', no '..' segment.
RELATIVE_PATH_PATTERN = r"^(?![/~.])(?!.*(^|/)\.\.(/|$))[A-Za-z0-9_.=/-]{1,200}$"


def trigger_params() -> dict[str, Param]:
    """The manual-trigger form; scheduled runs use these defaults (model config values for empty ones)."""
    return {
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=500, title="Epochs",
                        description="Training epochs. Empty: the model config's [train] epochs."),
        "learning_rate": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                               title="Learning rate", description="Empty: the model config's value."),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=65536, title="Batch size",
                            description="Empty: the model config's value."),
        "gpus": Param(None, type=["null", "integer"], minimum=0, maximum=8, title="GPUs",
                      description="GPUs for training; the trainer fails fast if it cannot see them. Empty: the "
                                  "model config's [kubernetes] train GPUs on the kubernetes backend, none locally."),
        "image_tag": Param(None, type=["null", "string"], pattern=IMAGE_TAG_PATTERN, title="Trainer image tag",
                           description="Exact trainer image tag (kubernetes backend), optionally pinned to its digest: "
                                       "TAG@sha256:<64 hex>; 'latest' is refused."),
        "data_dir": Param(None, type=["null", "string"], pattern=RELATIVE_PATH_PATTERN, title="Data directory",
                          description="Read partitions from this directory under the data root (e.g. a "
                                      "corrected copy). Relative only: '..' and absolute paths are refused."),
        "publish": Param(True, type="boolean", title="Publish",
                         description="Publish and roll out a blessed model. Off: evaluate only."),
        "force": Param(False, type="boolean", title="Force",
                       description="Recompute transform, train and evaluate even when a cached output matches."),
        "allow_older_than_serving": Param(
            False, type="boolean", title="Allow older than serving",
            description="Promote even if the stable version was trained on newer data (backfills)."),
        "allow_class_change": Param(
            False, type="boolean", title="Allow class change",
            description="Promote a multi-class version whose classes or their order (the class ids) differ from "
                        "the stable version's: clients that read class_ids or scores by position must change too."),
        "require_approval": Param(False, type="boolean", title="Require approval",
                                  description="Wait for a human to approve before the new version "
                                              "takes the 'stable' label."),
        "accept_anomalies": Param(
            [], type="array", items={"type": "string", "pattern": ANOMALY_ID_PATTERN}, title="Accept data anomalies",
            description="Anomaly ids a failed validation listed (e.g. 'categorical_drift:company', 'volume') "
                        "that are a known, expected change: this run passes them, and the version's lineage "
                        "records them. Errors in the data (wrong types, NaN, nulls) cannot be accepted."),
    }


def refuse_unknown_conf(context) -> None:
    """Every task's ``pre_execute``: a trigger's conf key that is no parameter of the DAG fails the task before
    it runs. Airflow passes such a key through unread, so a typo (``epocs``, ``require_aproval``) would run with
    the default: a gate silently off."""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    if problem := unknown_conf(conf, {*context["dag"].params, *context["task"].params}, context["dag"].dag_id):
        refuse(context, problem)


def unknown_conf(conf: dict, known: set[str], dag_id: str) -> str | None:
    """What is wrong with a trigger's conf keys that are no parameter of the DAG (None: nothing)."""
    unknown = sorted(set(conf) - known)
    if not unknown:
        return None
    guesses = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, known, 1))
               else repr(key) for key in unknown]
    return (f"the trigger's conf has {', '.join(guesses)}, which {'is' if len(unknown) == 1 else 'are'} no parameter "
            f"of {dag_id}: nothing ran. Its parameters are {sorted(known)}; trigger it again with those names")


def stable_flag(model: str) -> str:
    """``--stable-version=N`` for the evaluate pod: the ``stable`` label in the model server's config file, which
    only the Airflow side reads (with an S3 serving root it is not under it); nothing when there is none."""
    from pathlib import Path

    from pipelines.serving.models import version_labels

    config_file = Path(Settings.from_env().model_server_config)
    if not config_file.is_file():
        log.warning("the model server's config file %s is not here: evaluate takes {serving_root}/models.config's "
                    "stable label, else the newest complete version, as the baseline", config_file)
    stable = version_labels(config_file, model).get("stable")
    return f"--stable-version={stable}" if stable is not None else ""


def _flag(flag: str, param: str) -> str:
    """A CLI flag from a trigger param, or nothing when the param is empty (filtered by the operator)."""
    return f"{{{{ '{flag}=' ~ params.{param} if params.{param} is not none else '' }}}}"


def step_flags(step: str, *, config, settings: Settings) -> list[str]:
    """A step's CLI flags from the run's trigger params (templated; empty ones are dropped)."""
    kubernetes = settings.backend == "kubernetes"
    if kubernetes:
        from skewfree.operators.pod import effective_gpus, image_ref  # the kubernetes client only where used
    flags = {
        "validate": [_flag("--data-dir", "data_dir"),
                     "{{ '--accept-anomaly=' ~ params.accept_anomalies | join(',') if params.accept_anomalies "
                     "else '' }}"],
        "transform": [],
        # the trainer gets the GPU count its pod is given, so its preflight refuses a pod without them
        "train": [_flag("--epochs", "epochs"), _flag("--learning-rate", "learning_rate"),
                  _flag("--batch-size", "batch_size"),
                  f"--gpus={effective_gpus(config)}" if kubernetes else _flag("--gpus", "gpus")],
        # the model server's config file names the baseline evaluate compares with; a pod cannot read it, so
        # its stable label is read here when the pod starts
        "evaluate": ["{{ skewfree_stable_flag() }}"] if kubernetes else
        [f"--model-server-config={settings.model_server_config}"],
        # the manifest records the image the steps actually ran in
        "publish": [f"--image={image_ref(settings)}" if kubernetes else "--image=local"],
    }[step]
    # validate claims the interval's run directory for this run; a run of the same interval started since (a
    # manual run beside a backfill's) makes this one stop at its next commit, never mix outputs with it
    flags.insert(0, "--run-id={{ run_id }}")
    if step in CACHED_STEPS:
        flags.append("{{ '--force' if params.force else '' }}")
    return flags


STEP_DOCS = {
    "validate": "The data gate: reads the window's partitions with the schema, checks types, values, nulls, volume "
                "and drift of the newest day against the rest; a failure names the column, file and row, and nothing "
                "after it runs. Drift-like anomalies can be accepted per run (`accept_anomalies`).",
    "transform": "TensorFlow Transform on Apache Beam: analyzes the training days, writes the `transform_fn` (the "
                 "graph the served model embeds) and transformed TFRecords. Cached on its inputs' digests.",
    "train": "Trains the model module's tf_keras model on the transformed data and exports a SavedModel whose "
             "serving signatures take raw features (the TFT graph inside). Runs in the `skewfree_training` pool.",
    "evaluate": "Scores the held-out day through the exported serving signature, against the version serving as "
                "`stable` on the same rows; the skew gate compares the training and serving paths row by row; "
                "writes the report and the blessing.",
    "publish": "Copies the blessed SavedModel to the serving root as version `YYYYMMDDnn` (renamed into place, never "
               "overwritten) with its manifest (lineage), canary rows and report; emits the `published` asset.",
}


def dag_doc(config, settings: Settings) -> str:
    """The DAG's doc_md: what it runs on, from the model config."""
    def shown(value):
        return "" if value is None else f"{value:g}"

    thresholds = "\n".join(f"| `{b.metric}` | {shown(b.min)} | {shown(b.max)} | "
                           f"{change_text(b.change)} |" for b in config.thresholds)
    return (f"### {config.name}: daily retraining\n\n"
            f"Model module `{config.module}` ({config.task.type}), config `{config.source.parent.name}/"
            f"{config.source.name}`, owner `{config.owner}`.\n\n"
            f"- data: `{config.data.location}` ({config.data.format}) under `{settings.data_root}`; a run for day D "
            f"reads D-{config.data.lookback_days}..D, the newest {config.data.eval_days} day(s) held out\n"
            f"- serving root: `{settings.serving_root}`; model server config `{settings.model_server_config}`\n"
            f"- a pending approval is rejected after {config.rollout.approval_timeout_minutes:g} minutes\n\n"
            f"| metric | min | max | change vs stable |\n|---|---|---|---|\n{thresholds}\n")


STEP_RETRIES, RETRY_DELAY = 1, dt.timedelta(minutes=2)


def dagrun_timeout(config) -> dt.timedelta:
    steps = sum((STEP_RETRIES + 1) * config.kubernetes.for_step(s).active_deadline_seconds for s in STEPS)
    return (dt.timedelta(seconds=steps) + STEP_RETRIES * len(STEPS) * RETRY_DELAY
            + dt.timedelta(minutes=config.rollout.approval_timeout_minutes) + dt.timedelta(days=1))


def step_task(step: str, *, model: str, config, settings: Settings):
    """One step, on the configured backend: a local subprocess or a pod, with the same argv; retried once on an
    infrastructure failure, bounded by the step's deadline from the model config."""
    options = {"pool": TRAINING_POOL} if step == "train" else {}
    options.update(doc_md=STEP_DOCS[step], retries=STEP_RETRIES, retry_delay=RETRY_DELAY,
                   execution_timeout=dt.timedelta(seconds=config.kubernetes.for_step(step).active_deadline_seconds))
    if step == "publish":
        options["outlets"] = [published_asset(config.name)]
    flags = step_flags(step, config=config, settings=settings)
    if settings.backend == "kubernetes":
        from skewfree.operators.pod import step_pod  # the kubernetes client only where it is used

        return step_pod(step, model=model, config=config, settings=settings, interval=INTERVAL,
                        extra_args=flags, **options)
    return PipelineStepOperator(task_id=step, step=step, model=model, interval=INTERVAL, extra_args=flags,
                                **options)


def gate_report(evaluation: dict) -> str:
    """The evaluation as a short table: each metric beside the baseline's, then the reasons."""
    baseline = evaluation.get("baseline") or {}
    base = baseline.get("metrics") or {}
    lines = [f"  {'metric':<22} {'candidate':>11} {'baseline':>11}"]
    for name, value in sorted(evaluation["metrics"].items()):
        shown = f"{base[name]:>11.6g}" if name in base else f"{'-':>11}"
        lines.append(f"  {name:<22} {value:>11.6g} {shown}")
    lines.append(f"  baseline: {baseline.get('version') or 'none'} ({baseline.get('how', 'not compared')})")
    lines += [f"  - {reason}" for reason in evaluation["reasons"]]
    return "\n".join(lines)


@task.short_circuit(task_id="is_blessed")
def is_blessed(evaluation: dict, params: dict | None = None) -> bool:
    """Publish only a blessed model. A model that is not blessed FAILS this task, so the run is red, the
    failure notifier fires, and nobody mistakes a run that shipped nothing for a success."""
    from airflow.sdk.exceptions import AirflowFailException

    if not evaluation["blessed"]:
        raise AirflowFailException(f"model NOT blessed: nothing is published, what serves is unchanged\n"
                                   f"{gate_report(evaluation)}")
    if not (params or {}).get("publish", True):
        log.warning("model blessed, but this run was triggered with publish=false: publish is skipped")
        return False
    log.info("model blessed\n%s", gate_report(evaluation))
    return True


def named_notifier(variable: str):
    """The Airflow notifier (or callable taking the context) that the environment variable ``variable`` names
    (``package.module:name``); None when unset."""
    import importlib
    import os

    spec = os.environ.get(variable)
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{variable}={spec!r} does not name an object (package.module:name): {exc}") from None


def failure_notifier():
    """``SKEWFREE_FAILURE_NOTIFIER``: called when a task fails, e.g. a model that is not blessed."""
    return named_notifier("SKEWFREE_FAILURE_NOTIFIER")


def approval_notifiers() -> list:
    """``SKEWFREE_APPROVAL_NOTIFIER``: told when a promotion starts waiting for a human (the HITL operator's
    notifiers, which must be Airflow notifiers: a plain callable is wrapped in one)."""
    from airflow.sdk import BaseNotifier

    notifier = named_notifier("SKEWFREE_APPROVAL_NOTIFIER")
    if notifier is None or isinstance(notifier, BaseNotifier):
        return [notifier] if notifier else []

    class _Callable(BaseNotifier):
        def notify(self, context):
            notifier(context)

    return [_Callable()]


@task.branch(task_id="needs_approval")
def needs_approval(publication: dict, model: str, params: dict | None = None) -> str:
    """Promotion waits for a human when the run asks for it, unless the version already serves as stable
    (a rerun that published nothing new) or will not be promoted (``never_promoted``: rolled back from, or a
    retraining of a version that was; ``class_change`` without ``allow_class_change``): nobody is asked to
    approve what already serves or what will not be promoted."""
    from pathlib import Path

    from pipelines.rollout import class_change, never_promoted
    from pipelines.serving.models import version_labels
    from skewfree.hooks.artifacts import open_root

    if not (params or {}).get("require_approval"):
        return "rollout"
    settings = Settings.from_env()
    stable = version_labels(Path(settings.model_server_config), model).get("stable")
    if stable == publication["version"]:
        log.info("version %s of %s already serves as stable: no approval asked", stable, model)
        return "rollout"
    store = open_root(settings.serving_root, settings.aws_conn_id)
    why = never_promoted(store, model, publication["version"])
    if why is None and stable is not None and not params.get("allow_class_change"):
        why = class_change(store, model, publication["version"], stable)
    if why is not None:
        log.info("no approval asked, the rollout skips it: %s", why)
        return "rollout"
    return "approve_promotion"


def retrain_dag(model: str, *, dag_id: str | None = None) -> DAG:
    """The daily retraining DAG of one model.

    :param model: a registered model name (``taxi``) or a path to a model's config.toml.
    :param dag_id: defaults to ``<name>_retrain``.
    """
    config = load_model_config(model)
    settings = Settings.from_env()  # environment only: which backend, roots and image
    with DAG(
        dag_id=dag_id or f"{config.name}_retrain",
        # Data intervals: the run for day D covers [D, D+1) and reads partitions up to D.
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC"),
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["skewfree", config.name],
        doc_md=dag_doc(config, settings),
        params=trigger_params(),
        user_defined_macros={"approval_page": functools.partial(approval_page, config=config),
                             "skewfree_interval": run_interval,
                             "skewfree_stable_flag": functools.partial(stable_flag, config.name)},
        # every step's deadline (each may run twice: one retry, 2 min apart), the approval's, and a day queued
        # for the training pool: a run can never hold max_active_runs=1 forever, nor be cut short by this
        dagrun_timeout=dagrun_timeout(config),
        default_args={"owner": config.owner, "pre_execute": check_run,
                      **({"on_failure_callback": notifier} if (notifier := failure_notifier()) else {})},
    ) as dag:
        steps = {name: step_task(name, model=model, config=config, settings=settings)
                 for name in STEPS}
        steps["validate"] >> steps["transform"] >> steps["train"] >> steps["evaluate"]
        is_blessed(steps["evaluate"].output) >> steps["publish"]
        approve_promotion = ApprovalOperator(
            task_id="approve_promotion",
            subject=f"Promote {config.name} version {{{{ ti.xcom_pull(task_ids='publish')['version'] }}}} to stable?",
            # a decision page: candidate vs stable with thresholds, the slices that moved most, the report
            body="{{ approval_page(ti.xcom_pull(task_ids='evaluate'), ti.xcom_pull(task_ids='publish')) }}",
            # a pending approval must not stall later daily runs (max_active_runs=1): it is rejected at its
            # deadline, and the run ends with nothing promoted
            response_timeout=dt.timedelta(minutes=config.rollout.approval_timeout_minutes),
            defaults=["Reject"],
            assigned_users=[{"id": user, "name": user} for user in config.rollout.approval_assignees] or None,
            notifiers=approval_notifiers(),
        )
        rollout = RolloutOperator(
            task_id="rollout",
            model=model,
            version="{{ ti.xcom_pull(task_ids='publish')['version'] }}",
            trigger_rule="none_failed_min_one_success",
            outlets=[stable_asset(config.name)],  # emitted only when the label moved (else the task is skipped)
        )
        branch = needs_approval(steps["publish"].output, config.name)
        steps["publish"] >> branch >> [approve_promotion, rollout]
        approve_promotion >> rollout
    return dag


def rollback_dag(model: str, *, dag_id: str | None = None) -> DAG:
    """Manual rollback: the trigger form takes the version to make stable again.

    :param model: a registered model name or a path to a model's config.toml.
    """
    config = load_model_config(model, check_module=False)  # (model.py broken by an edit: still there)
    with DAG(
        dag_id=dag_id or f"{config.name}_rollback",
        schedule=None,
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        # manual only, so unpaused costs nothing, and a rollback is needed at once: a paused DAG's run stays
        # queued without a word (a user trial, in an emergency)
        is_paused_upon_creation=False,
        max_active_runs=1,
        tags=["skewfree", config.name, "rollback"],
        default_args={"owner": config.owner, "pre_execute": refuse_unknown_conf},
        doc_md=f"Roll **{config.name}** back: load a published version, canary-check it, make it `stable`.",
        params={
            "target_version": Param(
                None, type=["null", "integer"], minimum=1, title="Target version",
                description="A published version (YYYYMMDDnn), a number (JSON: 2026120600, not \"2026120600\"). "
                            "Empty: the newest good version before the one "
                            "serving as stable (never one rolled back from). It must exist under the serving "
                            "root; the task lists the versions if not."),
        },
    ) as dag:
        RolloutOperator(task_id="rollback", model=model, rollback=True, outlets=[stable_asset(config.name)])
    return dag


class _BrokenModels(DAG):
    """Stands for the model folders that failed to load. Airflow records a DAG that fails validation as
    an import error of its file and still loads the file's other DAGs: so the UI's import errors name
    each broken model and its problem, and every other model keeps its DAGs."""

    errors: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        listed = "\n".join(f"- {name}: {error}" for name, error in sorted(self.errors.items()))
        raise ConfigError(f"{len(self.errors)} model folder(s) failed to load; their DAGs are missing (but a "
                          f"rollback DAG said to be loaded), every other model's are loaded:\n{listed}")


def model_dags() -> dict[str, DAG]:
    """``<name>_retrain`` and ``<name>_rollback`` of every discovered model, by dag_id; a broken model
    becomes an import error naming it (see ``_BrokenModels``) and hides no other model's DAGs."""
    dags: dict[str, DAG] = {}
    errors: dict[str, str] = {}
    try:
        models = discover_models()
    except ConfigError as exc:
        models, errors["models"] = {}, str(exc)
    for name in models:
        failed: list[str] = []
        # each DAG on its own: a broken model.py (a bad edit: when a rollback is needed most) costs the
        # retraining DAG only; the rollback DAG needs the model's config alone
        for build in (retrain_dag, rollback_dag):
            try:
                dag = build(name)
            except Exception as exc:  # noqa: BLE001 - any failure of one model must not hide the others
                failed.append(str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}")
                continue
            dags[dag.dag_id] = dag
        if failed:
            errors[name] = failed[0] + ("" if len(failed) > 1 else "; its rollback DAG is loaded")
    if errors:
        broken = type("BrokenModels", (_BrokenModels,), {"errors": errors})
        dags["skewfree_broken_models"] = broken(dag_id="skewfree_broken_models", schedule=None,
                                                start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return dags
