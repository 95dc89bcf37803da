"""Deployment files, checked without a Docker engine: pinned images, healthchecks, wiring, secrets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
EXACT_TAG = re.compile(r"^[\w./-]+:(?!latest$)[\w][\w.-]*$")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if not line.startswith("tests/")]


def test_no_latest_tag_anywhere():
    pattern = re.compile(r"[\w./-]+:latest\b")
    hits = []
    for path in tracked_files():
        if path.is_file() and path.suffix not in {".png", ".pb"}:
            for n, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_pin_exact_base_images(dockerfile):
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M)
    assert bases and all(EXACT_TAG.match(b) for b in bases), bases


def test_trainer_and_airflow_images_are_separate():
    trainer = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    airflow = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert "FROM tensorflow/tensorflow:2.21.0-gpu" in trainer and "USER 1000" in trainer
    assert "FROM apache/airflow:3.3.2-python3.11" in airflow
    assert not re.search(r"^\s*\"?tensorflow==", airflow, re.M)  # no TensorFlow in the Airflow image


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_is_pinned_and_health_checked(name):
    service = SERVICES[name]
    assert EXACT_TAG.match(service["image"]), service["image"]
    assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for dependency in service.get("depends_on", {}):
        assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
    for port in service.get("ports", []):  # but MinIO's S3 API, which step pods in the cluster use: .env says where
        assert port.startswith("127.0.0.1:") or (name, port) == ("minio", "${MINIO_BIND_ADDRESS:?set MINIO_BIND_"
                                                                          "ADDRESS in .env}:9000:9000"), \
            f"{name} publishes {port} beyond loopback"


def test_services_reference_each_other():
    env = SERVICES["airflow-scheduler"]["environment"]
    assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert urlparse(env["AIRFLOW_CONN_MODEL_SERVER_DEFAULT"]).hostname == "tf-serving"
    # the connections as Airflow reads them, with a generated password: a URI broke on its '+', '/', '@', '#'
    from airflow.models.connection import Connection

    password = "ab+c/d=ef@g#h:i%j"
    aws = Connection.from_json(interpolated(env["AIRFLOW_CONN_AWS_DEFAULT"], MINIO_ROOT_USER="minio",
                                            MINIO_ROOT_PASSWORD=password), conn_id="aws_default")
    assert (aws.conn_type, aws.login, aws.password) == ("aws", "minio", password)
    assert aws.extra_dejson == {"endpoint_url": "http://minio:9000"}
    kubernetes = Connection.from_json(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"], conn_id="kubernetes_default")
    kubeconfig = kubernetes.extra_dejson["kube_config_path"]
    assert kubernetes.conn_type == "kubernetes" and any(
        v.endswith(f":{kubeconfig}:ro") for v in SERVICES["airflow-scheduler"]["volumes"])
    assert urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).hostname == "airflow-apiserver"
    # TF Serving reads the model config file that the rollout task writes, on the same volume
    serving_args = SERVICES["tf-serving"]["command"]
    assert "--model_config_file=/models/models.config" in serving_args
    assert any(a.startswith("--model_config_file_poll_wait_seconds=") for a in serving_args)
    assert any(a.startswith("--monitoring_config_file=") for a in serving_args)
    assert env["SKEWFREE_MODEL_SERVER_CONFIG"] == "/models/models.config"
    assert "serving:/models" in SERVICES["tf-serving"]["volumes"]
    assert "serving:/models" in SERVICES["airflow-scheduler"]["volumes"]
    assert "postgres" in SERVICES["airflow-scheduler"]["depends_on"]
    # data and artifacts on MinIO, in the buckets airflow-init creates; pods get credentials from a Secret
    buckets = {urlparse(env[f"SKEWFREE_{root}_ROOT"]).netloc for root in ("DATA", "ARTIFACT")}
    assert all(env[f"SKEWFREE_{root}_ROOT"].startswith("s3://") for root in ("DATA", "ARTIFACT"))
    init = SERVICES["airflow-init"]
    assert "minio" in init["depends_on"] and all(f'\\"{b}\\"' in init["command"] for b in buckets)
    assert env["SKEWFREE_K8S_S3_SECRET"] and env["SKEWFREE_S3_ENDPOINT_URL"].startswith("${")


def interpolated(text: str, **values: str) -> str:
    """``text`` with compose's ``${NAME:?...}`` references replaced by ``values``."""
    return re.sub(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]*\}", lambda m: values[m.group(1)], text)


def test_tensorboard_reads_the_artifact_root_the_train_link_points_at():
    env = SERVICES["airflow-scheduler"]["environment"]
    board = SERVICES["tensorboard"]
    logdir = board["command"][board["command"].index("--logdir") + 1]
    assert logdir == env["SKEWFREE_ARTIFACT_ROOT"]  # TensorBoard names runs by their path under it
    assert urlparse(board["environment"]["S3_ENDPOINT"]).hostname == "minio"
    port = urlparse(env["SKEWFREE_TENSORBOARD_URL"]).port
    assert f"127.0.0.1:{port}:6006" in board["ports"]
    dockerfile = (ROOT / "docker" / "tensorboard.Dockerfile").read_text()
    assert '"tensorboard==2.21.0"' in dockerfile and "tensorflow==" not in dockerfile  # TF has no s3:// reader


def test_secrets_have_no_defaults():
    text = (ROOT / "docker-compose.yaml").read_text()
    references = re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)([^}]*)\}", text)  # $${X} is the container's, not compose's
    assert references
    for name, rest in references:
        assert rest.startswith(":?"), f"${{{name}{rest}}} must fail when unset, not default"
    example = (ROOT / ".env.example").read_text()
    assert all(f"{name}=" in example for name, _ in references)
    assert "ALL_ADMINS: \"false\"" in text


def test_kubernetes_serving_manifests_are_valid_and_share_the_serving_claim():
    """deploy/kubernetes/serving.yaml passes the Kubernetes schema (strict), and TF Serving reads the claim the
    step pods mount (SKEWFREE_K8S_VOLUME_CLAIMS) at the serving root the compose file documents."""
    import kubernetes_validate

    from tests.plugins.test_step_pods import KUBERNETES_VERSION

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "serving.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {doc["kind"]: doc for doc in docs}
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [serving] = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert serving["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    [server] = pod["containers"]
    assert "--model_config_file=/models/models.config" in server["args"] and EXACT_TAG.match(server["image"])
    assert {"mountPath": "/models", "name": serving["name"], "readOnly": True} in server["volumeMounts"]
    env = SERVICES["airflow-scheduler"].get("environment") or COMPOSE["x-airflow-common"]["environment"]
    assert env["SKEWFREE_K8S_VOLUME_CLAIMS"] == f"/models={serving['persistentVolumeClaim']['claimName']}"
    assert env["SKEWFREE_SERVING_ROOT"] == "/models"
