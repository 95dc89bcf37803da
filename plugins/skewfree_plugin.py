"""Airflow plugin: the Skewfree models page (``skewfree.ui``), mounted by the api-server at ``/skewfree`` and
linked from the navigation bar (Browse > Models); the steps' extra links; the run-note and schedule-slot
listeners."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from skewfree import run_note, schedule_slot
from skewfree.links import ALL_LINKS
from skewfree.ui import PREFIX, app


class SkewfreePlugin(AirflowPlugin):
    name = "skewfree"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "Skewfree models"}]
    external_views = [{"name": "Models", "href": f"{PREFIX}/", "destination": "nav", "category": "browse",
                       "url_route": "skewfree-models"}]
    operator_extra_links = ALL_LINKS
    # the run note: what each run shipped; the schedule slot: a manual run on a scheduled run's date gives it back
    listeners = [run_note, schedule_slot]
