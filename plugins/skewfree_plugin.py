"""Airflow plugin: the Skewfree models page (``skewfree.ui``), mounted by the api-server at ``/skewfree`` and
linked from the navigation bar (Browse > Models); the steps' extra links; the run-note listener."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from skewfree import run_note
from skewfree.links import ALL_LINKS
from skewfree.ui import PREFIX, app


class SkewfreePlugin(AirflowPlugin):
    name = "skewfree"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "Skewfree models"}]
    external_views = [{"name": "Models", "href": f"{PREFIX}/", "destination": "nav", "category": "browse",
                       "url_route": "skewfree-models"}]
    operator_extra_links = ALL_LINKS
    listeners = [run_note]  # writes what each run shipped on its DagRun note
