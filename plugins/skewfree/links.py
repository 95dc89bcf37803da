"""Extra links on the steps' task pages: train -> TensorBoard, evaluate -> the run's model report, publish and
rollout -> the version on the Models page and on the model server.

Airflow 3 computes a link in the worker when the task finishes (``get_link`` may read the task's XCom) and
stores it as the XCom ``_link_<class>``; the UI shows it. The classes are registered in ``skewfree_plugin``.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

PREFIX = "/skewfree"  # where the api-server mounts the Models page (skewfree.ui)


def _model(ti_key) -> str:
    return ti_key.dag_id.removesuffix("_retrain").removesuffix("_rollback")


def _result(ti_key) -> dict[str, Any]:
    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, dict) else {}


class TensorBoardLink(BaseOperatorLink):
    """The run's training curves in the TensorBoard ``./dev airflow`` starts (``SKEWFREE_TENSORBOARD_URL``)."""

    name = "TensorBoard"

    def get_link(self, operator, *, ti_key) -> str:
        base = os.environ.get("SKEWFREE_TENSORBOARD_URL", "")
        result = _result(ti_key) if base else {}
        if not result.get("tensorboard"):
            return ""
        # TensorBoard names runs by their path under its --logdir (the artifact root)
        return f"{base.rstrip('/')}/#timeseries&regexInput={_model(ti_key)}/runs/{result.get('interval', '')}"


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
    """The version's status on the model server's REST API."""

    name = "Model server"

    def get_link(self, operator, *, ti_key) -> str:
        from skewfree.hooks.model_server import ModelServerHook

        version = _version(ti_key)
        if not version:
            return ""
        url = ModelServerHook().get_conn().url
        return f"{url}/v1/models/{_model(ti_key)}/versions/{version}"


STEP_LINKS = {"train": (TensorBoardLink(),), "evaluate": (ReportLink(),),
              "publish": (VersionLink(), ModelServerLink())}
PROMOTION_LINKS = (VersionLink(), ModelServerLink())
ALL_LINKS = [TensorBoardLink(), ReportLink(), VersionLink(), ModelServerLink()]
