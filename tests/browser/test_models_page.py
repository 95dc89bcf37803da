"""The Skewfree page in the Airflow UI, in a real browser: Airflow's own api-server app (which mounts the
plugin) served by uvicorn, Debian's Chromium driven by Playwright."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import END, ROOT, free_port

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update"]


def snap(page, name: str) -> None:
    """A screenshot for people reviewing the UI, when SKEWFREE_SCREENSHOTS names a directory."""
    import os

    if folder := os.environ.get("SKEWFREE_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def published(trained_run, tmp_path_factory, taxi_config):
    """Two published taxi versions (the second a copy with other metrics), 'stable' on the newer one."""
    from pipelines.publish import publish

    home = tmp_path_factory.mktemp("ui")
    art = home / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    first = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(home / "serving"),
                    run_id=FIRST_RUN)
    base = home / "serving" / "taxi"
    second = first.version + 1
    shutil.copytree(base / str(first.version), base / str(second))
    manifest = json.loads((base / str(second) / "manifest.json").read_text())
    manifest["metrics"]["auc"] = manifest["metrics"]["auc"] + 0.01
    manifest["metrics"]["calibration"] = float("nan")  # undefined (one class): written as NaN
    manifest["run_id"] = PENDING_RUN  # made by a run whose approval is still waiting
    manifest.pop("files")  # edited by hand: the graph alone marks it complete
    (base / str(second) / "manifest.json").write_text(json.dumps(manifest))
    (home / "serving" / "models.config").write_text(
        f'model_config_list {{\n  config {{\n    name: "taxi"\n    base_path: "{base}"\n'
        f'    model_platform: "tensorflow"\n'
        f'    model_version_policy {{ specific {{ versions: {first.version} versions: {second} }} }}\n'
        f'    version_labels {{ key: "stable" value: {second} }}\n'
        f'    version_labels {{ key: "previous" value: {first.version} }}\n  }}\n}}\n')
    evaluation = json.loads((art / "taxi" / "runs" / str(END) / "evaluate" / "result.json").read_text())
    return {"home": home, "versions": (first.version, second), "evaluation": evaluation}


TENSORBOARD = "http://127.0.0.1:16006"  # where the api-server says TensorBoard is (nothing needs to listen)
FIRST_RUN, PENDING_RUN = "scheduled__2026-11-11T00:00:00+00:00", "manual__2026-11-12T06:30:00+00:00"

# Airflow's metadata DB as two retraining runs leave it: the DAG serialized, the first run's approval answered
# by ml-lead, the second's waiting (the rows ApprovalOperator writes, with the body our DAG renders)
SETUP = """
import datetime as dt, json, sys
from skewfree.demo import migrate_db
migrate_db()
from airflow import settings
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
from airflow.models.dagbag import DBDagBag
from airflow.models.hitl import HITLDetail
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState, TaskInstanceState
from airflow.utils.types import DagRunTriggeredByType, DagRunType
from pipelines.config import load_model_config
from skewfree.approval import approval_page

evaluation, versions = json.loads(sys.argv[1]), json.loads(sys.argv[2])
from airflow.dag_processing.bundles.manager import DagBundlesManager
DagBundlesManager().sync_bundles_to_db()
sync_bag_to_db(DagBag(dag_folder=settings.DAGS_FOLDER), "dags-folder", None)
config = load_model_config("taxi")
answers = [{"id": "ml-lead", "name": "ml-lead"}, None]
with create_session() as session:
    dag = DBDagBag().get_latest_version_of_dag("taxi_retrain", session=session)
    for (run_id, version), answer in zip(versions, answers):
        day = dt.datetime.fromisoformat(run_id.split("__")[1])
        run = dag.create_dagrun(run_id=run_id, logical_date=day, run_after=day, state=DagRunState.RUNNING,
                                data_interval=(day.replace(hour=0, minute=0) - dt.timedelta(days=1),
                                               day.replace(hour=0, minute=0)),
                                run_type=DagRunType.MANUAL if run_id.startswith("manual") else DagRunType.SCHEDULED,
                                triggered_by=DagRunTriggeredByType.TEST, session=session)
        ti = run.get_task_instance("approve_promotion", session=session)
        ti.state = TaskInstanceState.SUCCESS if answer else TaskInstanceState.AWAITING_INPUT
        session.flush()
        session.add(HITLDetail(ti_id=ti.id, options=["Approve", "Reject"], defaults=["Reject"], multiple=False,
                               subject=f"Promote taxi version {version} to stable?", params={},
                               body=approval_page(evaluation, {"version": version}, config),
                               responded_at=dt.datetime.now(dt.UTC) if answer else None, responded_by=answer,
                               chosen_options=["Approve"] if answer else None))
"""


SERVE = """
import sys, uvicorn
from skewfree.demo import migrate_db
migrate_db()  # the api-server checks tokens against the metadata DB (revoked tokens)
from airflow.api_fastapi.app import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@pytest.fixture(scope="module")
def airflow_ui(published, tmp_path_factory):
    """Airflow's api-server app, with the plugins of plugins/, in its own process on a free port."""
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import airflow_env

    passwords = published["home"] / "passwords.json"
    serving = published["home"] / "serving"
    server_port = free_port()
    model_server = subprocess.Popen([sys.executable, "-m", "pipelines", "serve", "--model-config-file",
                                     str(serving / "models.config"), "--port", str(server_port)],
                                    env=airflow_env(published["home"]), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=open(published["home"] / "serve.log", "w"))
    passwords.write_text(json.dumps({"reader": "browser-test-password"}))
    env = airflow_env(published["home"]) | {
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-only",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reader:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW_CONN_MODEL_SERVER_DEFAULT": f"http://127.0.0.1:{server_port}",
        "SKEWFREE_TENSORBOARD_URL": TENSORBOARD,
    }
    versions = [[FIRST_RUN, published["versions"][0]], [PENDING_RUN, published["versions"][1]]]
    setup = subprocess.run([sys.executable, "-c", SETUP, json.dumps(published["evaluation"]), json.dumps(versions)],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stderr[-4000:]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=open(published["home"] / "api.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=10)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (published["home"] / "api.log").read_text()
            time.sleep(0.5)
    login = urllib.request.Request(f"{url}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                   data=json.dumps({"username": "reader", "password": "browser-test-password"}).encode())
    with urllib.request.urlopen(login, timeout=30) as answer:
        token = json.loads(answer.read())["access_token"]
    yield {"url": url, "token": token}
    for process in (server, model_server):
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(airflow_ui):
    """A browser page signed in to Airflow as a viewer (the session cookie the UI's login sets)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./dev test installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context()
        context.add_cookies([{"name": "_token", "value": airflow_ui["token"], "url": airflow_ui["url"]}])
        yield context.new_page()
        browser.close()


def test_the_models_page_needs_an_airflow_login(airflow_ui):
    """Airflow mounts plugin apps without its auth: the page checks the caller itself."""
    import urllib.error
    import urllib.request

    for path in ("/skewfree/", "/skewfree/api/models/taxi/versions", f"/skewfree/models/taxi/runs/{END}/report"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(airflow_ui["url"] + path, timeout=30)
        assert refused.value.code == 401, path
    signed = urllib.request.Request(airflow_ui["url"] + "/skewfree/api/models/taxi/versions",
                                    headers={"Authorization": f"Bearer {airflow_ui['token']}"})
    with urllib.request.urlopen(signed, timeout=30) as answer:
        listing = json.loads(answer.read())  # strict JSON: Python's parser would take NaN, so look for it
    assert listing["model"] == "taxi"
    assert [v["metrics"]["calibration"] is None for v in listing["versions"]] == [True, False]


def test_the_models_page_lists_versions_with_labels_metrics_and_history(airflow_ui, published, page):
    older, newer = published["versions"]
    page.goto(f"{airflow_ui['url']}/skewfree/")
    section = page.locator("#model-taxi")
    rows = section.locator("table.versions tr[data-version]")
    assert rows.count() == 2
    assert rows.nth(0).get_attribute("data-version") == str(newer)  # newest first
    assert rows.nth(0).locator(".label.stable").inner_text() == "stable"
    assert rows.nth(1).locator(".label.previous").inner_text() == "previous"
    manifest = json.loads((published["home"] / "serving" / "taxi" / str(older) / "manifest.json").read_text())
    assert rows.nth(1).locator("td").nth(3).inner_text() == f"{manifest['metrics']['auc']:.4f}"
    link = rows.nth(1).locator("a", has_text="scheduled__")
    assert link.get_attribute("href") == "/dags/taxi_retrain/runs/scheduled__2026-11-11T00:00:00+00:00"
    chart = section.locator(".chart svg polyline")
    assert chart.count() == 1 and len(chart.get_attribute("points").split()) == 2  # one point per version
    ticks = section.locator(".chart svg text.k").all_text_contents()
    assert str(older) in ticks and str(newer) in ticks  # the x axis names the versions
    assert section.locator(".chart svg circle title").all_text_contents() == [
        f"{older}: auc {manifest['metrics']['auc']:.4g}",
        f"{newer}: auc {json.loads((published['home'] / 'serving' / 'taxi' / str(newer) / 'manifest.json').read_text())['metrics']['auc']:.4g}"]
    # the other example models have sections too (no versions yet)
    assert page.locator("#model-penguins").inner_text().count("No published versions yet") == 1


def test_a_versions_report_opens_with_its_plots(airflow_ui, published, page):
    older, _ = published["versions"]
    page.goto(f"{airflow_ui['url']}/skewfree/")
    page.locator(f'tr[data-version="{older}"] a', has_text="report").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/skewfree/models/taxi/versions/{older}/report")
    assert page.locator("#metrics").count() == 1
    assert page.locator("#plots svg").count() >= 2  # ROC and PR curves at least
    snap(page, "version-report")
    missing = page.goto(f"{airflow_ui['url']}/skewfree/models/taxi/versions/1/report")
    assert missing.status == 404 and "does not exist" in page.content()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_the_extra_links_targets_resolve(airflow_ui, published, page, monkeypatch):
    """What the evaluate and publish links point at (skewfree.links) opens: the run's report with its plots,
    and the version's row on the Models page."""
    import urllib.error
    from types import SimpleNamespace

    from skewfree import links

    older, _ = published["versions"]
    results = {"evaluate": {"interval": str(END)}, "publish": {"version": older}}
    monkeypatch.setattr(links.XCom, "get_all", lambda *, key, dag_id, task_id, run_id: [results[task_id]])
    report = links.ReportLink().get_link(None, ti_key=SimpleNamespace(dag_id="taxi_retrain", task_id="evaluate", run_id="manual__1"))
    version = links.VersionLink().get_link(None, ti_key=SimpleNamespace(dag_id="taxi_retrain", task_id="publish", run_id="manual__1"))
    page.goto(airflow_ui["url"] + report)
    assert page.locator("#plots svg").count() >= 2 and "2026-11-10" in page.title()
    page.goto(airflow_ui["url"] + version)
    assert page.locator(f"tr#taxi-v{older}").is_visible()

    # train -> TensorBoard: a redirect to the TensorBoard this Airflow names, at the run's curves
    results["train"] = {"interval": str(END), "tensorboard": "/runs/train/tensorboard"}  # train's result
    board = links.TensorBoardLink().get_link(None, ti_key=SimpleNamespace(dag_id="taxi_retrain", task_id="train", run_id="manual__1"))
    request = urllib.request.Request(airflow_ui["url"] + board, headers={"Authorization": f"Bearer {airflow_ui['token']}"})
    with pytest.raises(urllib.error.HTTPError) as redirect:  # not followed: nothing listens there
        urllib.request.build_opener(NoRedirect).open(request, timeout=30)
    assert redirect.value.code == 307
    assert redirect.value.headers["Location"] == f"{TENSORBOARD}/#timeseries&regexInput=taxi/runs/{END}"

    # publish -> model server: the version's status, fetched by the api-server from the model server
    server = links.ModelServerLink().get_link(None, ti_key=SimpleNamespace(dag_id="taxi_retrain", task_id="publish", run_id="manual__1"))
    deadline = time.monotonic() + 120
    while True:  # the model server loads the versions in the background
        status = json.loads(page.goto(airflow_ui["url"] + server).text())
        if status.get("model_version_status", [{}])[0].get("state") == "AVAILABLE" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status["model_version_status"][0]["version"] == str(older), status
    assert status["model_server"].endswith(f"/v1/models/taxi/versions/{older}")


def test_each_version_shows_its_approval_baseline_and_lineage(airflow_ui, published, page):
    """The approval column reads Airflow's HITL records of the run that made the version; the lineage folds
    out the manifest: input files with digests, params, code and image."""
    older, newer = published["versions"]
    page.goto(f"{airflow_ui['url']}/skewfree/")
    assert page.locator(f'tr[data-version="{older}"] td.approval').inner_text() == "Approve by ml-lead"
    assert page.locator(f'tr[data-version="{newer}"] td.approval').inner_text() == "waiting for an answer"
    manifest = json.loads((published["home"] / "serving" / "taxi" / str(older) / "manifest.json").read_text())
    assert page.locator(f'tr[data-version="{older}"] td.baseline').inner_text() == "-"  # the first release
    header = [c.inner_text() for c in page.locator("#model-taxi table.versions tr").first.locator("th").all()]
    assert header[3:6] == ["auc", "pr_auc", "accuracy"], header  # the headline first, then the key metrics
    lineage = page.locator(f'tr[data-version="{older}"] details.lineage')
    assert not lineage.locator("ul").first.is_visible()  # folded until asked
    lineage.locator("summary").click()
    text = lineage.inner_text()
    assert f"{len(manifest['input_digests'])} input files" in text and '"epochs": ' in text
    some_file, digest = next(iter(manifest["input_digests"].items()))
    assert some_file in text and digest[:12] in text
    snap(page, "models-page")


def test_airflow_shows_the_approval_request_as_a_decision_table(airflow_ui, published, page):
    """Airflow's own required-action page for the waiting approval renders the body our DAG writes: the
    candidate-vs-stable table with the thresholds, the gate's verdict and the report's location."""
    from urllib.parse import quote

    page.goto(f"{airflow_ui['url']}/dags/taxi_retrain/runs/{quote(PENDING_RUN, safe='')}/tasks/approve_promotion"
              "/required_actions")
    page.get_by_text("Promote taxi version").first.wait_for(timeout=60_000)
    table = page.locator("table", has_text="candidate").first
    table.wait_for(timeout=60_000)
    auc = published["evaluation"]["metrics"]["auc"]
    row = table.locator("tr", has_text="auc").first
    assert f"{auc:.4g}" in row.inner_text() and ">= 0.75" in row.inner_text(), row.inner_text()
    assert page.get_by_text("Gate:").count() >= 1 and page.get_by_text("Model report").count() >= 1
    snap(page, "approval-request")
