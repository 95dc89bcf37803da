"""A manual run refused for sitting on a scheduled run's logical date gives that date back when it ends.

Airflow keeps one run per DAG and logical date, whatever the run's type (apache/airflow#41208). A manual run
given a scheduled run's logical date (the UI's or the REST API's date without a time of day, midnight for a
daily model) takes that run's place: when the scheduled run falls due, the scheduler logs "run already
exists; skipping dagrun creation" on every loop and never creates it, and the daily schedule stops there.
``dag_factory.check_run`` refuses such a run in its ``validate`` task before anything runs, and marks it
(XCom ``MARK``); this listener (registered by ``skewfree_plugin``, called by the scheduler in its session
when a run finishes) clears the logical date of a run so marked, and of no other: the run stays, failed,
with its note and its id, as a run triggered without a logical date; the scheduler creates the scheduled
run when it falls due.
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl
from sqlalchemy.orm import object_session

log = logging.getLogger(__name__)

MARK = "skewfree_gives_back_logical_date"  # validate's XCom on a run refused for its logical date


def give_back(dag_run) -> bool:
    """Clear a finished run's logical date when its validate task marked it; True when it did."""
    if dag_run.logical_date is None:
        return False
    session = object_session(dag_run)
    if session is not None:  # the scheduler's: committed with the run's new state
        return _clear(dag_run, session)
    from airflow.utils.session import create_session

    with create_session() as own:  # dag.test() hands over a detached run (it merges it back afterwards)
        return _clear(dag_run, own)


def _clear(dag_run, session) -> bool:
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from sqlalchemy import select, update

    marked = session.scalar(select(XComModel.key).where(
        XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id, XComModel.task_id == "validate",
        XComModel.map_index == -1, XComModel.key == MARK))
    if marked is None:
        return False
    logical, dag_run.logical_date = dag_run.logical_date, None
    if object_session(dag_run) is not session:  # (the detached run's attribute too: the merge keeps it)
        session.execute(update(DagRun).where(DagRun.id == dag_run.id).values(logical_date=None))
    log.warning("manual run %s of %s had the logical date %s of a scheduled run; cleared, so that the scheduler "
                "creates that run", dag_run.run_id, dag_run.dag_id, logical.isoformat())
    return True


def _give_back(dag_run) -> None:
    try:
        give_back(dag_run)
    except Exception:  # noqa: BLE001 - never cost the run its note (pluggy stops at a raising listener)
        log.exception("could not clear the logical date of %s", dag_run.run_id)


@hookimpl
def on_dag_run_failed(dag_run, msg: str):
    _give_back(dag_run)


@hookimpl
def on_dag_run_success(dag_run, msg: str):  # (its tasks marked successful by hand)
    _give_back(dag_run)
