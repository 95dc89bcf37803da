"""Hook for a TF Serving REST endpoint (the local dev server or tensorflow/serving)."""

from __future__ import annotations

from airflow.sdk import BaseHook

from pipelines.serving.client import ModelServerClient


class ModelServerHook(BaseHook):
    """Talk to a model server's REST API. The Connection's host and port (and schema, ``http`` by
    default) give the URL, e.g. ``AIRFLOW_CONN_MODEL_SERVER_DEFAULT=http://127.0.0.1:8501``.

    :param model_server_conn_id: the Airflow connection to use.
    :param timeout: seconds per HTTP request.
    """

    conn_name_attr = "model_server_conn_id"
    default_conn_name = "model_server_default"
    conn_type = "http"
    hook_name = "Skewfree model server (TF Serving REST)"

    def __init__(self, model_server_conn_id: str = default_conn_name, *, timeout: float = 60.0) -> None:
        super().__init__()
        self.model_server_conn_id = model_server_conn_id
        self.timeout = timeout

    def get_conn(self) -> ModelServerClient:
        conn = self.get_connection(self.model_server_conn_id)
        if not conn.host:
            raise ValueError(f"connection {self.model_server_conn_id!r} has no host; expected e.g. http://127.0.0.1:8501")
        scheme = conn.schema or "http"
        port = f":{conn.port}" if conn.port else ""
        return ModelServerClient(f"{scheme}://{conn.host}{port}", timeout=self.timeout)
