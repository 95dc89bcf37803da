"""The Skewfree page in the Airflow UI, in a real browser: Airflow's own api-server app (which mounts the
plugin) served by uvicorn, Debian's Chromium driven by Playwright."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import END, ROOT, free_port

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update"]


@pytest.fixture(scope="module")
def published(trained_run, tmp_path_factory, taxi_config):
    """Two published taxi versions (the second a copy with other metrics), 'stable' on the newer one."""
    from pipelines.publish import publish

    home = tmp_path_factory.mktemp("ui")
    art = home / "artifacts"
    shutil.copytree(trained_run["artifact_root"], art)
    first = publish(taxi_config, interval=END, artifact_root=art, serving_root=str(home / "serving"),
                    run_id="scheduled__2026-11-11T00:00:00+00:00")
    base = home / "serving" / "taxi"
    second = first.version + 1
    shutil.copytree(base / str(first.version), base / str(second))
    manifest = json.loads((base / str(second) / "manifest.json").read_text())
    manifest["metrics"]["auc"] = manifest["metrics"]["auc"] + 0.01
    manifest.pop("files")  # edited by hand: the graph alone marks it complete
    (base / str(second) / "manifest.json").write_text(json.dumps(manifest))
    (home / "serving" / "models.config").write_text(
        f'model_config_list {{\n  config {{\n    name: "taxi"\n    base_path: "{base}"\n'
        f'    model_platform: "tensorflow"\n'
        f'    model_version_policy {{ specific {{ versions: {first.version} versions: {second} }} }}\n'
        f'    version_labels {{ key: "stable" value: {second} }}\n'
        f'    version_labels {{ key: "previous" value: {first.version} }}\n  }}\n}}\n')
    return {"home": home, "versions": (first.version, second)}


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
    passwords.write_text(json.dumps({"reader": "browser-test-password"}))
    env = airflow_env(published["home"]) | {
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-only",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reader:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
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
    server.terminate()
    server.wait(timeout=30)


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
        assert json.loads(answer.read())["model"] == "taxi"


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
    missing = page.goto(f"{airflow_ui['url']}/skewfree/models/taxi/versions/1/report")
    assert missing.status == 404 and "does not exist" in page.content()


def test_the_extra_links_targets_resolve(airflow_ui, published, page, monkeypatch):
    """What the evaluate and publish links point at (skewfree.links) opens: the run's report with its plots,
    and the version's row on the Models page."""
    from types import SimpleNamespace

    from skewfree import links

    older, _ = published["versions"]
    results = {"evaluate": {"interval": str(END)}, "publish": {"version": older}}
    monkeypatch.setattr(links.XCom, "get_value", lambda *, ti_key, key: results[ti_key.task_id])
    report = links.ReportLink().get_link(None, ti_key=SimpleNamespace(dag_id="taxi_retrain", task_id="evaluate"))
    version = links.VersionLink().get_link(None, ti_key=SimpleNamespace(dag_id="taxi_retrain", task_id="publish"))
    page.goto(airflow_ui["url"] + report)
    assert page.locator("#plots svg").count() >= 2 and "2026-11-10" in page.title()
    page.goto(airflow_ui["url"] + version)
    assert page.locator(f"tr#taxi-v{older}").is_visible()
