import pytest

from skewfree.hooks.model_server import ModelServerHook


def test_url_comes_from_the_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", "http://127.0.0.1:8765")
    assert ModelServerHook().get_conn().url == "http://127.0.0.1:8765"
    monkeypatch.setenv("AIRFLOW_CONN_SERVING_PROD", '{"conn_type": "http", "host": "tfs.internal", "port": 8501, '
                                                     '"schema": "https"}')
    assert ModelServerHook("serving_prod").get_conn().url == "https://tfs.internal:8501"


def test_connection_without_host_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MODEL_SERVER_DEFAULT", '{"conn_type": "http"}')
    with pytest.raises(ValueError, match="connection 'model_server_default' has no host"):
        ModelServerHook().get_conn()
