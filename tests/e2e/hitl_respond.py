"""Answer a human-in-the-loop task the way the Airflow UI does, for tests: wait until the task is
awaiting input, then record the choice through Airflow's own HITL API route function.

usage: python tests/e2e/hitl_respond.py DAG_ID TASK_ID OPTION [TIMEOUT_SECONDS]

OPTION ``@deadline`` answers nothing: it prints the deadline the task was given, moves it to the past (as if
nobody answered in time) and waits for whoever runs the scheduler's timeout sweep (the demo does, as
the scheduler would) to apply the task's defaults.
"""

from __future__ import annotations

import sys
import time


class _Tester:
    def get_id(self) -> str:
        return "tester"

    def get_name(self) -> str:
        return "tester"


def main() -> int:
    from airflow import settings
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState

    dag_id, task_id, option = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 600
    if settings.Session is None:
        settings.configure_orm()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with settings.Session() as session:
            ti = (session.query(TaskInstance)
                  .filter_by(dag_id=dag_id, task_id=task_id, state=TaskInstanceState.AWAITING_INPUT)
                  .first())
            if ti is not None and option == "@deadline":
                return expire(ti, session)
            if ti is not None:
                update_hitl_detail(dag_id=dag_id, dag_run_id=ti.run_id, task_id=task_id,
                                   update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[option]),
                                   user=_Tester(), session=session)
                session.commit()
                print(f"answered {option!r} for {dag_id}.{task_id} in run {ti.run_id}")
                return 0
        time.sleep(0.5)
    print(f"no {dag_id}.{task_id} awaited input within {timeout}s", file=sys.stderr)
    return 1


def expire(ti, session, timeout: float = 120) -> int:
    import datetime as dt

    from airflow.models.hitl import HITLDetail
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    now = dt.datetime.now(dt.UTC)
    print(f"deadline in {(ti.trigger_timeout - now).total_seconds() / 60:.1f} minutes")
    ti.trigger_timeout = now - dt.timedelta(seconds=1)
    session.commit()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # nothing here applies it: the process running the DAG must
        session.expire_all()
        if ti.state != TaskInstanceState.AWAITING_INPUT:
            detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
            chosen = detail.chosen_options if detail else None
            print(f"deadline passed for {ti.dag_id}.{ti.task_id} in run {ti.run_id}: chosen {chosen}")
            return 0
        time.sleep(0.5)
    print(f"{ti.dag_id}.{ti.task_id} was still awaiting input {timeout}s after its deadline", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
