"""The model as Airflow Assets: ``publish`` emits ``skewfree.<model>.published``, and a rollout or rollback that
moves the ``stable`` label emits ``skewfree.<model>.stable``, each with the version's metadata in the event's
extra. The Assets page lists what was published and promoted; another DAG scheduled on
``stable_asset("taxi")`` runs after each promotion (``triggering_asset_events`` carries the version)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

KEY_METRICS = ("auc", "pr_auc", "accuracy", "log_loss", "rmse", "mae", "examples", "max_abs_skew")


def published_asset(model: str) -> Asset:
    return Asset(name=f"skewfree.{model}.published", uri=f"x-skewfree://{model}/published", group="model")


def stable_asset(model: str) -> Asset:
    return Asset(name=f"skewfree.{model}.stable", uri=f"x-skewfree://{model}/stable", group="model")


def emit_publication(context: Any, model: str, result: dict[str, Any]) -> None:
    """The published version's metadata on this task's ``published`` event."""
    evaluation = context["ti"].xcom_pull(task_ids="evaluate") or {}
    metrics = evaluation.get("metrics") or {}
    context["outlet_events"][published_asset(model)].extra = {
        "version": result["version"], "interval": result["interval"], "path": result["path"],
        "reused": result["reused"], "label": None, "run_id": context.get("run_id"),
        "metrics": {k: metrics[k] for k in KEY_METRICS if metrics.get(k) is not None},
        "baseline_version": (evaluation.get("baseline") or {}).get("version"),
    }


def emit_promotion(context: Any, model: str, result: dict[str, Any]) -> None:
    """The version now ``stable`` (and the one before it) on this task's ``stable`` event."""
    context["outlet_events"][stable_asset(model)].extra = {
        "version": result["stable"], "label": "stable", "previous_stable": result["previous_stable"],
        "loaded_versions": result["loaded_versions"], "run_id": context.get("run_id"),
    }
