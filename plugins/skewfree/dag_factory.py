"""Build a model's daily retraining DAG from its light config (no TensorFlow at parse time)."""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import DAG, CronDataIntervalTimetable, task

from pipelines.config import load_model_config
from pipelines.runs import STEPS
from skewfree.operators.step import PipelineStepOperator

log = logging.getLogger(__name__)


@task.short_circuit(task_id="is_blessed")
def is_blessed(evaluation: dict) -> bool:
    """Let publish run only for a blessed model; otherwise log why and skip it."""
    if evaluation["blessed"]:
        log.info("model blessed with metrics %s", evaluation["metrics"])
        return True
    log.warning("model NOT blessed, publish is skipped: %s", "; ".join(evaluation["reasons"]))
    return False


def retrain_dag(model: str, *, dag_id: str | None = None) -> DAG:
    """validate -> transform -> train -> evaluate -> is_blessed -> publish, over daily data intervals.

    :param model: a registered model name (``taxi``) or a path to a model's config.toml.
    :param dag_id: defaults to ``<name>_retrain``.
    """
    config = load_model_config(model)
    with DAG(
        dag_id=dag_id or f"{config.name}_retrain",
        # Data intervals: the run for day D covers [D, D+1) and reads partitions up to D.
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC"),
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["skewfree", config.name],
        doc_md=f"Daily retraining of **{config.name}** ({config.source}).",
    ) as dag:
        steps = {name: PipelineStepOperator(task_id=name, step=name, model=model) for name in STEPS}
        steps["validate"] >> steps["transform"] >> steps["train"] >> steps["evaluate"]
        is_blessed(steps["evaluate"].output) >> steps["publish"]
    return dag
