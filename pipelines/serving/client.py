"""A small client for TF Serving's REST API (works against the local server and tensorflow/serving).

Standard library only: the Airflow side and the demo use it without TensorFlow.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class VersionLoadError(RuntimeError):
    """The server reports that a version failed to load."""


class ModelServerClient:
    """:param url: the REST root, e.g. ``http://127.0.0.1:8501``."""

    def __init__(self, url: str, *, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    @staticmethod
    def model_path(model: str, *, version: int | None = None, label: str | None = None) -> str:
        if version is not None and label is not None:
            raise ValueError("address a model by version or by label, not both")
        suffix = f"/versions/{version}" if version is not None else f"/labels/{label}" if label else ""
        return f"/v1/models/{model}{suffix}"

    def request(self, method: str, path: str, body: dict | bytes | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body); errors come back as their status and ``{"error": ...}``."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                return err.code, json.loads(payload or b"{}")
            except json.JSONDecodeError:
                return err.code, {"error": payload.decode(errors="replace")}

    def version_statuses(self, model: str) -> dict[int, dict[str, Any]]:
        status, body = self.request("GET", self.model_path(model))
        if status != 200:
            return {}
        return {int(v["version"]): v for v in body["model_version_status"]}

    def version_states(self, model: str) -> dict[int, str]:
        return {number: v["state"] for number, v in self.version_statuses(model).items()}

    def predict(self, model: str, body: dict, *, version: int | None = None, label: str | None = None) -> dict:
        status, answer = self.request("POST", self.model_path(model, version=version, label=label) + ":predict", body)
        if status != 200:
            raise RuntimeError(f"predict on {model} failed with HTTP {status}: {answer.get('error', answer)}")
        return answer

    def wait_until_available(self, model: str, version: int, *, timeout: float = 120.0, poll: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            try:
                found = self.version_statuses(model).get(version, {})
            except OSError:  # the server is not listening yet
                found = {}
            state = found.get("state")
            if state == "AVAILABLE":
                return
            error = found.get("status", {})
            if state == "END" and error.get("error_code", "OK") != "OK":
                raise VersionLoadError(error.get("error_message") or error["error_code"])
            time.sleep(poll)
        raise TimeoutError(f"{model} version {version} not AVAILABLE at {self.url} after {timeout}s "
                           f"(last state: {state})")
