"""The Skewfree page in the Airflow UI: per model, its versions with labels, interval, key metrics, baseline,
lineage and the runs that made them, a metric-history chart, and each version's model report.

A FastAPI app the Airflow 3 api-server mounts at ``/skewfree`` (``skewfree_plugin.py``), linked from the
navigation bar. It reads what the steps write: the serving root (local, or S3 through the amazon
provider's hook) and the model server's config file (the labels). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from pipelines.config import HEADLINE_METRIC as HEADLINE  # the metric the chart follows
from skewfree.links import PREFIX


async def signed_in(request: Request):
    """The caller's Airflow user, from the UI's session cookie or a bearer token, exactly as the core API
    reads it: Airflow mounts plugin apps without its own authentication (401 without one)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None
    return await get_user(request, None, bearer)


def may_read(user, model: str) -> bool:
    """The user may read the model's retraining DAG (the auth manager decides, per DAG)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=f"{model}_retrain"),
                                                user=user)


User = Annotated[Any, Depends(signed_in)]

app = FastAPI(title="Skewfree models", description="Published model versions, their metrics and reports")


def readable(user, model: str) -> None:
    if not may_read(user, model):
        raise HTTPException(403, f"you may not read the DAGs of model {model!r}")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def model_config(model: str):
    """The config of a discovered model: a URL names a model, never a path (404 otherwise)."""
    from pipelines.config import ConfigError, discover_models, load_model_config

    known = discover_models()
    if model not in known:
        raise HTTPException(404, f"no model {model!r}; models: {', '.join(sorted(known))}")
    try:
        return load_model_config(model)
    except ConfigError as exc:
        raise HTTPException(404, f"model {model!r} does not load: {exc}") from None


def model_versions(model: str) -> dict[str, Any]:
    """A model's versions as the page shows them: newest first, with the server's labels."""
    from pipelines.publish import list_versions
    from pipelines.serving.models import version_labels
    from skewfree.hooks.artifacts import open_root
    from skewfree.settings import Settings

    config = model_config(model)
    settings = Settings.from_env()
    store = open_root(settings.serving_root, settings.aws_conn_id)
    rows = list_versions(settings.serving_root, config.name, store=store)
    config_file = Path(settings.model_server_config)
    labels = version_labels(config_file, config.name) if config_file.is_file() else {}
    for row in rows:  # the server's own config file is what serves (the serving root's copy may lag)
        row["labels"] = sorted(name for name, version in labels.items() if version == row["version"])
    return {"model": config.name, "task": config.task.type, "headline": HEADLINE[config.task.type],
            "serving_root": settings.serving_root, "versions": rows}


def history_chart(model: str, headline: str, rows: list[dict]) -> str:
    """The headline metric across versions, oldest to newest (an inline SVG)."""
    import numpy as np

    from pipelines.report import line_plot

    points = [(r["version"], r["metrics"].get(headline)) for r in reversed(rows) if not r.get("partial")]
    points = [(v, m) for v, m in points if isinstance(m, int | float)]
    if not points:
        return "<p>No metrics recorded yet.</p>"
    x = np.arange(len(points), dtype=float)
    chart = line_plot(f"history-{model}", f"{headline} by version ({points[0][0]} .. {points[-1][0]})",
                      {headline: (x, np.array([m for _, m in points], float))}, "version (oldest to newest)", headline,
                      x_ticks=[(i, str(v)) for i, (v, _) in enumerate(points)],
                      point_titles=[f"{v}: {headline} {m:.4g}" for v, m in points])
    return f'<div class="chart">{chart}</div>'


def approvals(model: str, run_ids: list[str]) -> dict[str, dict]:
    """The approval answers (Airflow's HITL records) of the runs that made these versions."""
    from airflow.utils.session import create_session

    from skewfree.run_note import approval_answers

    with create_session() as session:
        return approval_answers(session, f"{model}_retrain", [r for r in run_ids if r])


def key_metrics(task: str, metrics: dict) -> list[str]:
    """The metrics shown as columns: the task's headline first, then the other key ones it records."""
    from skewfree.assets import KEY_METRICS

    headline = HEADLINE[task]
    return [headline] + [m for m in KEY_METRICS if m not in (headline, "examples", "max_abs_skew") and m in metrics]


def lineage_cell(row: dict) -> str:
    """What the version was made from, folded: inputs with digests, params, accepted anomalies, fingerprint."""
    lineage = row.get("lineage") or {}
    inputs = lineage.get("input_digests") or {}
    items = [f"<li>published {_e(lineage.get('published_at', '?'))} from <code>{_e(lineage.get('source', '?'))}</code></li>",
             f"<li>params: <code>{_e(json.dumps(lineage.get('params', {}), sort_keys=True))}</code></li>",
             f"<li>code <code>{_e(lineage.get('code_version', '?'))}</code>, image <code>{_e(lineage.get('image', '?'))}"
             f"</code>, model fingerprint <code>{_e(str(lineage.get('model_fingerprint') or '-')[:16])}</code></li>",
             f"<li>accepted anomalies: {_e(', '.join(lineage.get('accepted_anomalies') or []) or 'none')}</li>",
             f"<li>{len(inputs)} input files:<ul class=k>"
             + "".join(f"<li><code>{_e(path)}</code> {_e(digest[:12])}</li>" for path, digest in sorted(inputs.items()))
             + "</ul></li>"]
    return f'<details class="lineage"><summary>lineage</summary><ul>{"".join(items)}</ul></details>'


def model_section(model: str) -> str:
    from skewfree.run_note import answer_text

    found = model_versions(model)
    headline = found["headline"]
    answers = approvals(found["model"], [r["run_id"] for r in found["versions"]])
    columns = key_metrics(found["task"], {k for r in found["versions"] for k in r["metrics"]})
    body = []
    for r in found["versions"]:
        labels = " ".join(f'<span class="label {_e(name)}">{_e(name)}</span>' for name in r["labels"])
        if r.get("rejected"):
            labels += ' <span class="label rejected">rejected</span>'
        if r.get("partial"):
            labels += f' <span class="label partial" title="{_e(r["partial"])}">partial</span>'
        metrics = r["metrics"]
        run = r["run_id"]
        run_link = (f'<a href="/dags/{_e(model)}_retrain/runs/{_e(run)}">{_e(run)}</a>' if run else "-")
        report = f'{PREFIX}/models/{_e(model)}/versions/{r["version"]}/report'
        against = (r.get("lineage") or {}).get("evaluated_against") or {}
        old = (against.get("metrics") or {}).get(headline)
        baseline = (f'{_e(against["version"])} <span class=k>({_e(headline)} {_metric(old)})</span>'
                    if against.get("version") else _e(r["baseline"] or "-"))
        cells = "".join(f'<td class="num">{_metric(metrics.get(m))}</td>' for m in columns)
        body.append(
            f'<tr id="{_e(model)}-v{r["version"]}" data-version="{r["version"]}"><td>{r["version"]}</td>'
            f'<td>{labels or "-"}</td><td>{_e(r["interval"])}</td>{cells}'
            f'<td class="num">{_metric(metrics.get("max_abs_skew"))}</td><td class="baseline">{baseline}</td>'
            f'<td class="approval">{_e(answer_text(answers.get(run)))}</td><td>{run_link}</td>'
            f'<td><a href="{report}">report</a></td><td>{lineage_cell(r)}</td></tr>')
    table = ("<table class=versions><tr><th>version</th><th>labels</th><th>interval</th>"
             + "".join(f"<th>{_e(m)}</th>" for m in columns)
             + "<th>skew</th><th>baseline</th><th>approval</th><th>made by run</th><th>report</th><th>lineage</th>"
             "</tr>" + "".join(body) + "</table>") if body else "<p>No published versions yet.</p>"
    return (f'<section id="model-{_e(model)}"><h2>{_e(model)} <small>({_e(found["task"])}, '
            f'{len(found["versions"])} versions under {_e(found["serving_root"])})</small></h2>'
            f'{history_chart(model, headline, found["versions"])}{table}</section>')


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left} td.num{text-align:right}
.label{border-radius:.6em;padding:0 .5em;background:#eee;margin-right:.2em} .label.stable{background:#c8e6c9}
.label.previous{background:#e3f2fd} .label.canary{background:#fff3cd} .label.rejected,.label.partial{background:#f8d7da}
.chart svg{max-width:640px} .k{font-size:11px} details.lineage ul{margin:.2em 0;padding-left:1.2em}"""


@app.get("/", response_class=HTMLResponse)
def index(user: User) -> str:
    from pipelines.config import discover_models

    sections = "".join(model_section(name) for name in discover_models() if may_read(user, name))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>Skewfree models</title><style>{STYLE}</style>"
            f"</head><body><h1>Skewfree models</h1>{sections or '<p>No models found.</p>'}</body></html>")


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON: NaN and infinity (an undefined metric, e.g. the AUC of one class) become null,
    anything else JSON lacks becomes its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


@app.get("/api/models/{model}/versions")
def versions_json(model: str, user: User) -> JSONResponse:
    readable(user, model)
    return JSONResponse(json_safe(model_versions(model)))


@app.get("/models/{model}/versions/{version}/report", response_class=HTMLResponse)
def version_report(model: str, version: int, user: User) -> str:
    """The model report published with the version (evaluate's report.html, copied by publish)."""
    readable(user, model)
    from pipelines.publish import REPORT
    from skewfree.hooks.artifacts import open_root
    from skewfree.settings import Settings

    settings = Settings.from_env()
    store = open_root(settings.serving_root, settings.aws_conn_id)
    name = model_config(model).name  # not the version listing: one report is one read
    payload = store.read_bytes(name, str(version), REPORT)
    if payload is None:
        raise HTTPException(404, f"{store.url(name, str(version), REPORT)} does not exist: version {version} of "
                                 f"{name} was published without a report, or is not published")
    return payload.decode()


@app.get("/models/{model}/runs/{interval}/report", response_class=HTMLResponse)
def run_report(model: str, interval: str, user: User) -> str:
    """The model report of one run (evaluate's report.html under the artifact root), published or not."""
    readable(user, model)
    from skewfree.hooks.artifacts import open_root
    from skewfree.settings import Settings

    day = _interval(interval)
    settings = Settings.from_env()
    store = open_root(settings.artifact_root, settings.aws_conn_id)
    name = model_config(model).name  # not the version listing: one report is one read
    parts = (name, "runs", day, "evaluate", "report.html")
    payload = store.read_bytes(*parts)
    if payload is None:
        raise HTTPException(404, f"{store.url(*parts)} does not exist: evaluate has not run for {name} {day}")
    return payload.decode()


def _interval(interval: str) -> str:
    import datetime as dt

    try:
        return dt.date.fromisoformat(interval).isoformat()
    except ValueError:
        raise HTTPException(400, f"interval {interval!r} is not a date (YYYY-MM-DD)") from None


@app.get("/models/{model}/runs/{interval}/tensorboard")
def run_tensorboard(model: str, interval: str, user: User) -> RedirectResponse:
    """The run's training curves in the TensorBoard this Airflow names (``SKEWFREE_TENSORBOARD_URL``, the address
    a browser reaches it at); resolved when clicked, so a link made by an earlier run (or ``./dev demo``) works."""
    import os

    readable(user, model)
    day = _interval(interval)
    name = model_config(model).name
    base = os.environ.get("SKEWFREE_TENSORBOARD_URL", "").rstrip("/")
    if not base:
        from skewfree.settings import Settings

        raise HTTPException(404, f"no TensorBoard is configured for this Airflow (SKEWFREE_TENSORBOARD_URL): "
                                 f"`./dev airflow` starts one; the run's logs are under "
                                 f"{Settings.from_env().artifact_root}/{name}/runs/{day}/train/tensorboard")
    # TensorBoard names runs by their path under its --logdir (the artifact root)
    return RedirectResponse(f"{base}/#timeseries&regexInput={name}/runs/{day}", status_code=307)


@app.get("/models/{model}/versions/{version}/server")
def version_on_server(model: str, version: int, user: User) -> JSONResponse:
    """The version's status on the model server, fetched by the api-server through the ``model_server_default``
    connection (the browser may not reach the server's address, e.g. ``tf-serving:8501`` in the compose stack)."""
    from skewfree.hooks.model_server import ModelServerHook

    readable(user, model)
    name = model_config(model).name
    client = ModelServerHook(timeout=10).get_conn()
    path = client.model_path(name, version=version)
    try:
        status, body = client.request("GET", path)
    except OSError as exc:
        raise HTTPException(502, f"the model server at {client.url} did not answer: {exc}") from None
    return JSONResponse({"model_server": client.url + path, **body}, status_code=status)
