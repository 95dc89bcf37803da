"""Extra links on the steps' task pages: train -> TensorBoard, evaluate -> the run's model report, publish and
rollout -> the version on the Models page and on the model server.

Airflow 3 computes a link in the worker when the task finishes (``get_link`` may read the task's XCom) and
stores it as the XCom ``_link_<class>``; the UI shows it. The classes are registered in ``skewfree_plugin``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

PREFIX = "/skewfree"  # where the api-server mounts the Models page (skewfree.ui)


def _model(ti_key) -> str:
    return ti_key.dag_id.removesuffix("_retrain").removesuffix("_rollback")


def _result(ti_key) -> dict[str, Any]:
    """The task's result, or {} for a task that failed before returning one. (``XCom.get_all`` rather than
    ``get_value``: its lookup of an absent XCom logs no 'XCom not found' error beside the step's own.)"""
    values = XCom.get_all(key="return_value", dag_id=ti_key.dag_id, task_id=ti_key.task_id, run_id=ti_key.run_id)
    value = values[0] if values else None
    return value if isinstance(value, dict) else {}


class TensorBoardLink(BaseOperatorLink):
    """The run's training curves: the Models page redirects to the TensorBoard its Airflow names
    (``SKEWFREE_TENSORBOARD_URL``) when clicked, so the link outlives the process that made it."""

    name = "TensorBoard"

    def get_link(self, operator, *, ti_key) -> str:
        result = _result(ti_key)
        if not result.get("tensorboard") or not result.get("interval"):
            return ""
        return f"{PREFIX}/models/{_model(ti_key)}/runs/{result['interval']}/tensorboard"


class ReportLink(BaseOperatorLink):
    """The model report evaluate wrote for this run (candidate vs stable, slices, plots)."""

    name = "Model report"

    def get_link(self, operator, *, ti_key) -> str:
        interval = _result(ti_key).get("interval")
        return f"{PREFIX}/models/{_model(ti_key)}/runs/{interval}/report" if interval else ""


def _version(ti_key) -> int | None:
    result = _result(ti_key)
    return result.get("stable") if "stable" in result else result.get("version")


class VersionLink(BaseOperatorLink):
    """The version this task published (or made stable) on the Models page."""

    name = "Version in Skewfree"

    def get_link(self, operator, *, ti_key) -> str:
        version = _version(ti_key)
        return f"{PREFIX}/#{_model(ti_key)}-v{version}" if version else ""


class ModelServerLink(BaseOperatorLink):
    """The version's status on the model server, fetched by the api-server (the browser may not reach the
    server's own address)."""

    name = "Model server"

    def get_link(self, operator, *, ti_key) -> str:
        version = _version(ti_key)
        return f"{PREFIX}/models/{_model(ti_key)}/versions/{version}/server" if version else ""


STEP_LINKS = {"train": (TensorBoardLink(),), "evaluate": (ReportLink(),),
              "publish": (VersionLink(), ModelServerLink())}
PROMOTION_LINKS = (VersionLink(), ModelServerLink())
ALL_LINKS = [TensorBoardLink(), ReportLink(), VersionLink(), ModelServerLink()]
