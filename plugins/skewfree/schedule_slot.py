"""A manual run on a scheduled run's logical date gives that date back when it ends.

Airflow keeps one run per DAG and logical date, whatever the run's type (apache/airflow#41208). A manual run
given a scheduled run's logical date (the UI's or the REST API's date without a time of day, midnight for a
daily model) takes that run's place: when the scheduled run falls due, the scheduler logs "run already
exists; skipping dagrun creation" on every loop and never creates it, and the daily schedule stops there.
``dag_factory.check_run`` refuses such a run before anything runs; this listener (registered by
``skewfree_plugin``, called by the scheduler when the run finishes, in its session) then clears the run's
logical date, as a run triggered without one has. The run stays, failed, with its note and its id; the
scheduler creates the scheduled run when it falls due.
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


def give_back(dag_run) -> bool:
    """Clear a finished manual run's logical date when it is a scheduled run's; True when it did."""
    from skewfree.dag_factory import on_schedule

    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    dag = getattr(dag_run, "dag", None)
    if run_type != "manual" or dag is None or not on_schedule(dag, dag_run.logical_date):
        return False
    logical = dag_run.logical_date
    dag_run.logical_date = None
    from sqlalchemy.orm import object_session

    if object_session(dag_run) is None:  # dag.test() hands over a detached run: write it in a session of ours
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import update

        with create_session() as session:
            session.execute(update(DagRun).where(DagRun.id == dag_run.id).values(logical_date=None))
    log.warning("manual run %s of %s had the logical date %s of a scheduled run; cleared, so that the scheduler "
                "creates that run", dag_run.run_id, dag_run.dag_id, logical.isoformat())
    return True


@hookimpl
def on_dag_run_failed(dag_run, msg: str):
    give_back(dag_run)


@hookimpl
def on_dag_run_success(dag_run, msg: str):  # (its tasks marked successful by hand)
    give_back(dag_run)
