"""Promote a published version to ``stable`` on the model server, or roll back to an earlier one."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.config import load_model_config
from skewfree.assets import emit_promotion
from skewfree.hooks.artifacts import open_root
from skewfree.hooks.model_server import ModelServerHook
from skewfree.links import PROMOTION_LINKS
from skewfree.run_note import refuse
from skewfree.settings import Settings


class RolloutOperator(BaseOperator):
    """Guarded rollout (or rollback) through TF Serving's model config file.

    Every check and the automatic restore live in ``pipelines.rollout``; this operator finds the
    server (a Connection) and the config file (settings) and reports the outcome. A failed rollout
    fails the task without retries: the previous stable version was already restored.

    :param model: a registered model name or a path to its config.toml.
    :param version: the version to promote (templated); for a rollback, the DAG param
        ``target_version`` is used instead (default: the ``previous`` label).
    :param rollback: roll back instead of rolling out a new version.
    :param model_server_conn_id: connection to the model server's REST API.
    """

    template_fields: Sequence[str] = ("version",)
    ui_color = "#e6f4ea"
    operator_extra_links = PROMOTION_LINKS

    def __init__(self, *, model: str, version: str | int | None = None, rollback: bool = False,
                 model_server_conn_id: str = ModelServerHook.default_conn_name, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.model = model
        self.version = version
        self.rollback = rollback
        self.model_server_conn_id = model_server_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from pipelines import rollout

        settings = Settings.from_env()
        config = load_model_config(self.model, check_module=not self.rollback)  # a rollback needs the config only
        client = ModelServerHook(self.model_server_conn_id).get_conn()
        params = context.get("params", {})
        store = open_root(settings.serving_root, settings.aws_conn_id)
        common = {"model": config.name, "base_path": f"{settings.server_serving_root.rstrip('/')}/{config.name}",
                  "policy": config.rollout}
        try:
            if self.rollback:
                target = params.get("target_version")
                result = rollout.rollback(client, Path(settings.model_server_config), store=store,
                                          target=None if target is None else int(target),
                                          reason=f"rolled back by {context.get('run_id', 'a manual rollback')}", **common)
            else:
                version = int(self.version)
                result = rollout.promote(
                    client, Path(settings.model_server_config), version=version,
                    canary_rows=rollout.canary_rows_of(store, config.name, version),
                    allow_older=bool(params.get("allow_older_than_serving", False)), store=store,
                    allow_class_change=bool(params.get("allow_class_change", False)), **common,
                    backfill=getattr(run_type := getattr(context.get("dag_run"), "run_type", None), "value",
                                     run_type) == "backfill",
                )
        except rollout.RolloutError as exc:
            refuse(context, str(exc))
        if result.skipped_reason or not result.changed:
            # skipped, not succeeded: the `stable` asset event (which schedules other DAGs) means a promotion
            reason = result.skipped_reason or f"version {result.stable} already serves as stable"
            self.log.warning("promotion skipped, nothing changed on the model server: %s", reason)
            context["ti"].xcom_push(key="skipped", value=reason)  # for the run note (skewfree.run_note)
            raise AirflowSkipException(f"nothing promoted: {reason}")
        self.log.info("%s version %s is stable (previous %s); loaded %s; canary %s", result.model,
                      result.stable, result.previous_stable, result.loaded_versions, result.canary)
        payload = dataclasses.asdict(result)
        emit_promotion(context, config.name, payload)
        return payload
