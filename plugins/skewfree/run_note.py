"""The run note: what a Skewfree run shipped, in one line on the DagRun ("published 2026112300, now stable",
"not blessed: ...", "failed in validate: ...").

An Airflow listener (registered by ``skewfree_plugin``): when a run of a ``<model>_retrain`` or ``<model>_rollback``
DAG finishes, the scheduler (or ``dag.test()``) calls it inside its own database session; it reads the run's task
states, results (XComs) and the approval's answer, and sets the note, unless a person wrote one (its own note
from an earlier finish of a run cleared and run again is replaced). The Task SDK gives tasks no way to write a
note, so it is written where the run's state is decided. A failure here is logged by Airflow and changes
nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

APPROVAL_TASK = "approve_promotion"
# the steps of a retraining run in order: the first failed one is what the note names
ORDER = ("validate", "transform", "train", "evaluate", "is_blessed", "publish", "needs_approval", APPROVAL_TASK,
         "rollout", "rollback")


def approval_answers(session, dag_id: str, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The approval request and its answer per run: ``chosen`` (e.g. ``['Approve']``), ``by`` (the user's name;
    None when the deadline answered), ``at`` (ISO time) and ``pending``. Runs that asked nobody are absent."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import select

    if not run_ids:
        return {}
    rows = session.execute(
        select(TI.run_id, HITLDetail).join(HITLDetail, HITLDetail.ti_id == TI.id)
        .where(TI.dag_id == dag_id, TI.task_id == APPROVAL_TASK, TI.run_id.in_(run_ids))).all()
    return {run_id: {"chosen": list(detail.chosen_options or []), "by": detail.responded_by_user_name,
                     "at": detail.responded_at.isoformat(timespec="seconds") if detail.responded_at else None,
                     "pending": detail.responded_at is None}
            for run_id, detail in rows}


def answer_text(answer: dict[str, Any] | None) -> str:
    """An approval answer in words: 'Approve by alice', 'Reject at the deadline', 'waiting'."""
    if not answer:
        return "not asked"
    if answer["pending"]:
        return "waiting for an answer"
    chosen = ", ".join(answer["chosen"]) or "no option"
    return f"{chosen} by {answer['by']}" if answer["by"] else f"{chosen} at the deadline (nobody answered)"


def _headline(metrics: dict[str, Any], baseline: dict[str, Any]) -> str:
    for name in ("auc", "accuracy", "rmse"):
        value = metrics.get(name)
        if isinstance(value, int | float):
            old = (baseline.get("metrics") or {}).get(name)
            was = f" vs {old:.4g} of {baseline.get('version')}" if isinstance(old, int | float) else ""
            return f" ({name} {value:.4g}{was})"
    return ""


def refuse(context, problem: str) -> None:
    """Fail the task, not retried, with ``problem``; its XCom ``error`` is the reason this note gives."""
    from airflow.sdk.exceptions import AirflowFailException

    if (ti := context.get("ti")) is not None:
        ti.xcom_push(key="error", value=problem[:600])
    raise AirflowFailException(problem) from None  # (raised while handling another: that one is not repeated)


def summary(states: dict[str, str], results: dict[str, Any], answer: dict[str, Any] | None) -> str:
    """The note for a finished run, from its task states, the tasks' results and the approval answer."""
    evaluation = results.get("evaluate") or {}
    publication = results.get("publish") or {}
    if "rollback" in states:  # the rollback DAG
        done = results.get("rollback") or {}
        if states["rollback"] == "success" and done.get("stable"):
            return f"rolled back: {done['stable']} now stable (was {done.get('previous_stable')})"
        error = results.get("rollback_error")
        return f"rollback {states['rollback']}: nothing changed" if states["rollback"] == "skipped" else \
            f"rollback failed: {error + '. What' if error else 'what'} served before still serves (see the rollback log)"
    failed = next((task for task in ORDER if states.get(task) == "failed"), None)
    if failed == "is_blessed":
        reasons = "; ".join(evaluation.get("reasons") or []) or "see the is_blessed log"
        return f"not blessed: {reasons}. Nothing published, what serves is unchanged"
    version = publication.get("version")
    if failed == "rollout":
        error = results.get("rollout_error")
        return f"published {version}; rollout failed and was undone: {error + '. What' if error else 'what'} " \
               "served before still serves"
    if failed:
        # the local step operator pushes the step's error line as the XCom "error"; a pod's step writes it as
        # its result, which KubernetesPodOperator pushes for a failed container too
        pod_result = results.get(failed)
        error = results.get(f"{failed}_error") or (pod_result.get("error") if isinstance(pod_result, dict) else None)
        return f"failed in {failed}: {error + '. ' if error else ''}Nothing published, what serves is unchanged " \
               f"(see the {failed} log)"
    if states.get("publish") == "skipped" and evaluation.get("blessed"):
        return f"blessed{_headline(evaluation.get('metrics') or {}, evaluation.get('baseline') or {})}, " \
               "not published (publish=false)"
    if not version:
        return "nothing published: " + ", ".join(f"{t} {s}" for t, s in states.items() if s not in ("success",))
    reused = " (identical model, reused)" if publication.get("reused") else ""
    headline = _headline(evaluation.get("metrics") or {}, evaluation.get("baseline") or {})
    if states.get("rollout") == "success":
        approved = f", approved: {answer_text(answer)}" if answer else ""
        return f"published {version}{reused}, now stable{headline}{approved}"
    if answer and not answer["pending"] and "Approve" not in answer["chosen"]:
        return f"published {version}{reused}, not promoted: {answer_text(answer)}"
    skipped = results.get("rollout_skipped")
    return f"published {version}{reused}, not promoted: {skipped or 'rollout ' + states.get('rollout', 'did not run')}"


def run_summary(dag_run, session) -> str | None:
    """The note of a finished Skewfree run, read in ``session``; None for other DAGs."""
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    if not dag_run.dag_id.endswith(("_retrain", "_rollback")):
        return None
    states = dict(session.execute(select(TI.task_id, TI.state).where(
        TI.dag_id == dag_run.dag_id, TI.run_id == dag_run.run_id, TI.map_index == -1)).all())
    if not set(states) & {"validate", "rollback"}:
        return None  # not a Skewfree DAG
    rows = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id,
                                              map_indexes=-1)).all()
    results = {(row.task_id if row.key == "return_value" else f"{row.task_id}_{row.key}"):
               XComModel.deserialize_value(row) for row in rows if not row.key.startswith("_link_")}
    answers = approval_answers(session, dag_run.dag_id, [dag_run.run_id])
    return summary({task: getattr(state, "value", state) for task, state in states.items() if state}, results,
                   answers.get(dag_run.run_id))


def _annotate(dag_run, session, *, bound: bool) -> None:
    from airflow.models.dagrun import DagRunNote

    existing = session.get(DagRunNote, dag_run.id)
    if existing is not None and existing.user_id is not None:
        return  # a person wrote it (the UI and the REST API record who): theirs stays
    note = run_summary(dag_run, session)
    if not note:
        return
    note = note[:1000]  # the column's limit
    # this listener's earlier note (no user) is replaced: a run cleared and run again shipped something else
    if bound:  # the scheduler's session: committed with the run's new state
        dag_run.note = note
    elif existing is not None:
        existing.content = note
    else:
        row = DagRunNote(content=note)
        row.dag_run_id = dag_run.id
        session.add(row)
    log.info("run note: %s", note)


def _write(dag_run) -> None:
    from airflow.utils.session import create_session
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is not None:
        _annotate(dag_run, session, bound=True)
        return
    with create_session() as own:  # dag.test() hands over a detached run (it merges it back afterwards)
        _annotate(dag_run, own, bound=False)


@hookimpl
def on_dag_run_success(dag_run, msg: str):
    _write(dag_run)


@hookimpl
def on_dag_run_failed(dag_run, msg: str):
    _write(dag_run)
