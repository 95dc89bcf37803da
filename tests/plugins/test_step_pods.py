"""The kubernetes backend, tested by rendering pods (no cluster): same argv as local, pinned image,
resources, GPU scheduling, non-root, timeouts, XCom sidecar."""

from __future__ import annotations

import copy
import datetime as dt
import re
from types import SimpleNamespace

import pytest

from skewfree.operators.step import PipelineStepOperator
from skewfree.settings import Settings

ENV = {
    "SKEWFREE_BACKEND": "kubernetes",
    "SKEWFREE_DATA_ROOT": "/mnt/data",
    "SKEWFREE_ARTIFACT_ROOT": "/mnt/artifacts",
    "SKEWFREE_SERVING_ROOT": "/mnt/serving",
    "SKEWFREE_TRAINER_IMAGE": "registry.example.com/skewfree/trainer",
    "SKEWFREE_TRAINER_TAG": "0.1.0-tf2.21.0-gpu",
    "SKEWFREE_K8S_VOLUME_CLAIMS": "/mnt/data=team-data,/mnt/artifacts=team-artifacts,/mnt/serving=skewfree-serving",
    "AIRFLOW_CONN_KUBERNETES_DEFAULT": '{"conn_type": "kubernetes", "extra": {"in_cluster": false}}',
}


def dags(monkeypatch, backend: str):
    from skewfree.dag_factory import retrain_dag

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SKEWFREE_BACKEND", backend)
    return retrain_dag("taxi")


def rendered(task, dag, conf: dict | None = None):
    """Render a task's templates as a scheduled (or triggered) run for interval 2026-11-10 would."""
    params = copy.deepcopy(dag.params)
    params.update(conf or {})
    start = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=1)
    context = {"params": params.validate(), "data_interval_start": start, "logical_date": start,
               "run_id": "scheduled__2026-11-10T00:00:00+00:00", "ti": ti, "dag": dag, "ds": "2026-11-10"}
    task = copy.deepcopy(task)
    task.render_template_fields(context)
    return task, context


def local_argv(monkeypatch, step: str, conf: dict | None = None) -> list[str]:
    dag = dags(monkeypatch, "local")
    task, _ = rendered(dag.get_task(step), dag, conf)
    assert isinstance(task, PipelineStepOperator)
    return task.argv(Settings.from_env())


@pytest.mark.parametrize("step", ["transform", "train"])
def test_pod_runs_the_local_argv_in_the_pinned_image(monkeypatch, step):
    conf = {"epochs": 7, "force": True, "gpus": 1}  # a GPU count both backends give the trainer
    expected = local_argv(monkeypatch, step, conf)
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task(step), dag, conf)
    pod = task.build_pod_request_obj(context, dry_run=True)
    container = pod.spec.containers[0]
    assert [*container.command, *container.args] == expected
    assert expected[:5] == ["python", "-m", "pipelines", step, "--model"]
    assert "--interval" in expected and expected[expected.index("--interval") + 1] == "2026-11-10"
    assert container.image == "registry.example.com/skewfree/trainer:0.1.0-tf2.21.0-gpu"
    assert pod.metadata.namespace == "skewfree"
    # non-root, no privilege escalation
    assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == 1000
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    # timeouts, logs, cleanup, result through the XCom sidecar
    assert pod.spec.active_deadline_seconds == {"transform": 7200, "train": 14400}[step]
    assert task.startup_timeout_seconds == 600 and task.get_logs and task.on_finish_action == "delete_pod"
    assert [c.name for c in pod.spec.containers] == ["base", "airflow-xcom-sidecar"]
    assert {e.name: e.value for e in container.env}["SKEWFREE_XCOM_RETURN"] == "/airflow/xcom/return.json"


def test_train_pod_requests_a_gpu_node(monkeypatch):
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("train"), dag)
    pod = task.build_pod_request_obj(context, dry_run=True)
    resources = pod.spec.containers[0].resources
    assert resources.limits == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert resources.requests == {"cpu": "8", "memory": "32Gi"}
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    [toleration] = pod.spec.tolerations
    assert (toleration.key, toleration.operator, toleration.effect) == ("nvidia.com/gpu", "Exists", "NoSchedule")
    assert task.pool == "skewfree_training"


def test_transform_pod_has_no_gpu(monkeypatch):
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("transform"), dag)
    pod = task.build_pod_request_obj(context, dry_run=True)
    assert "nvidia.com/gpu" not in pod.spec.containers[0].resources.limits
    assert not pod.spec.node_selector and not pod.spec.tolerations


KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the rendered manifests are validated against


def validated_manifest(obj) -> dict:
    """A pod (or any kubernetes client object) as the API server gets it, checked against the Kubernetes
    OpenAPI schema (strict: unknown fields are errors too)."""
    import kubernetes_validate
    from kubernetes.client import ApiClient

    data = ApiClient().sanitize_for_serialization(obj)
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", type(obj).__name__.removeprefix("V1"))
    kubernetes_validate.validate(data, KUBERNETES_VERSION, strict=True)
    return data


@pytest.mark.parametrize("step", ["validate", "transform", "train", "evaluate", "publish"])
def test_every_step_pod_is_a_valid_locked_down_pod(monkeypatch, step):
    """Each step's rendered pod passes the Kubernetes schema; it runs with the runtime's seccomp profile, a
    read-only root filesystem with one writable scratch emptyDir (HOME, TMPDIR, staging), no service
    account token, and the roots' volume claims mounted where the roots are."""
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task(step), dag)
    pod = task.build_pod_request_obj(context, dry_run=True)
    manifest = validated_manifest(pod)
    assert manifest["spec"]["automountServiceAccountToken"] is False
    assert manifest["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod.spec.containers[0]
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.seccomp_profile.type == "RuntimeDefault"
    # every container meets the 'restricted' Pod Security Standard, the XCom sidecar too
    for each in pod.spec.containers:
        assert each.security_context.allow_privilege_escalation is False, each.name
        assert each.security_context.capabilities.drop == ["ALL"], each.name
        assert each.security_context.run_as_non_root is True, each.name
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim}
    assert {path: claims[name] for path, name in mounts.items() if name in claims} == {
        "/mnt/data": "team-data", "/mnt/artifacts": "team-artifacts", "/mnt/serving": "skewfree-serving"}
    assert [v.empty_dir is not None for v in pod.spec.volumes if v.name == mounts["/scratch"]] == [True]
    env = {e.name: e.value for e in container.env}
    assert env["HOME"] == env["TMPDIR"] == "/scratch" and env["SKEWFREE_STAGING_DIR"].startswith("/scratch/")
    if step == "publish":  # it writes the serving root the model server reads, through the claim
        args = container.args
        assert args[args.index("--serving-root") + 1] == "/mnt/serving"
        assert "--image=registry.example.com/skewfree/trainer:0.1.0-tf2.21.0-gpu" in args


def test_a_local_root_without_a_volume_claim_is_refused(monkeypatch):
    monkeypatch.setitem(ENV, "SKEWFREE_K8S_VOLUME_CLAIMS", "/mnt/data=team-data,/mnt/artifacts=team-artifacts")
    with pytest.raises(ValueError, match=r"SKEWFREE_SERVING_ROOT='/mnt/serving' is a local path, but step pods "
                                         r"have no volume there: .*SKEWFREE_K8S_VOLUME_CLAIMS='/mnt/serving=<claim>'"):
        dags(monkeypatch, "kubernetes")
    with pytest.raises(ValueError, match="'models' is not /mount/path=claim-name"):
        Settings.from_env({"SKEWFREE_K8S_VOLUME_CLAIMS": "models"})


def test_a_scheduled_train_pod_and_its_trainer_agree_on_the_gpus(monkeypatch):
    """The config's GPU is in the pod limits AND the trainer's --gpus (its preflight fails a pod that cannot
    see it); a run asking for 0 GPUs gets neither a GPU limit nor the GPU node selector."""
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("train"), dag)
    pod = task.build_pod_request_obj(context, dry_run=True)
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert "--gpus=1" in pod.spec.containers[0].args
    task, context = rendered(dag.get_task("train"), dag, {"gpus": 0})
    pod = task.build_pod_request_obj(context, dry_run=True)
    assert "nvidia.com/gpu" not in pod.spec.containers[0].resources.limits and not pod.spec.node_selector
    assert "--gpus=0" in pod.spec.containers[0].args
    validated_manifest(pod)


def test_trigger_params_reach_the_pod(monkeypatch):
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("train"), dag, {"gpus": 4, "image_tag": "0.2.0-tf2.21.0-gpu"})
    pod = task.build_pod_request_obj(context, dry_run=True)
    assert pod.spec.containers[0].image.endswith(":0.2.0-tf2.21.0-gpu")
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "4"
    assert "--gpus=4" in pod.spec.containers[0].args


def test_deferrable_is_a_setting(monkeypatch):
    monkeypatch.setenv("SKEWFREE_DEFERRABLE", "true")
    assert dags(monkeypatch, "kubernetes").get_task("train").deferrable is True


def test_latest_tag_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="other than 'latest'"):
        Settings.from_env({"SKEWFREE_TRAINER_TAG": "latest"})
    with pytest.raises(ValueError, match="repository without a tag"):
        Settings.from_env({"SKEWFREE_TRAINER_IMAGE": "ghcr.io/skewfree/trainer:latest"})


@pytest.mark.parametrize(("variable", "value", "message"), [
    # each rendered and passed the schema, to fail at image pull or at the API server after validate and
    # transform had run (a platform trial)
    ("SKEWFREE_TRAINER_TAG", "", "SKEWFREE_TRAINER_TAG an exact tag other than 'latest'"),
    ("SKEWFREE_TRAINER_TAG", "0.1 gpu", "got 'ghcr.io/skewfree/trainer', '0.1 gpu'"),
    ("SKEWFREE_TRAINER_TAG", "latest@sha256:" + "a" * 64, "other than 'latest'"),
    ("SKEWFREE_TRAINER_IMAGE", "ghcr.io/skewfree/trainer@sha256:" + "a" * 64, "TAG@sha256:<64 hex>"),
    ("SKEWFREE_K8S_NAMESPACE", "", "SKEWFREE_K8S_NAMESPACE='' is not a Kubernetes namespace name"),
    ("SKEWFREE_K8S_NAMESPACE", "Skewfree_Prod", "SKEWFREE_K8S_NAMESPACE='Skewfree_Prod' is not a Kubernetes"),
    ("SKEWFREE_DEFERRABLE", "ture", "SKEWFREE_DEFERRABLE='ture' is not a boolean: use true or false"),
])
def test_bad_settings_are_refused_naming_the_variable(variable, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env({variable: value})


def test_the_trainer_image_may_be_pinned_to_its_digest(monkeypatch):
    digest = "sha256:" + "0123456789abcdef" * 4
    monkeypatch.setitem(ENV, "SKEWFREE_TRAINER_TAG", f"0.1.0-tf2.21.0-gpu@{digest}")
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("train"), dag)
    image = task.build_pod_request_obj(context, dry_run=True).spec.containers[0].image
    assert image == f"registry.example.com/skewfree/trainer:0.1.0-tf2.21.0-gpu@{digest}"
    assert Settings.from_env({"SKEWFREE_DEFERRABLE": "No"}).deferrable is False


def test_pods_on_s3_roots_get_the_urls_credentials_and_endpoint(monkeypatch):
    for key, value in {"SKEWFREE_ARTIFACT_ROOT": "s3://team-artifacts/skewfree",
                       "SKEWFREE_K8S_S3_SECRET": "skewfree-s3",
                       "SKEWFREE_S3_ENDPOINT_URL": "http://minio.storage:9000"}.items():
        monkeypatch.setitem(ENV, key, value)
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("transform"), dag)
    container = task.build_pod_request_obj(context, dry_run=True).spec.containers[0]
    args = container.args
    assert args[args.index("--artifact-root") + 1] == "s3://team-artifacts/skewfree"
    assert [e.secret_ref.name for e in container.env_from] == ["skewfree-s3"]
    assert {e.name: e.value for e in container.env}["AWS_ENDPOINT_URL_S3"] == "http://minio.storage:9000"


def test_pods_may_run_as_a_service_account_with_an_iam_role(monkeypatch):
    """The README offers an IAM role for the pods' service account instead of a Secret; the pods always ran
    as the namespace's default (a platform trial). SKEWFREE_K8S_SERVICE_ACCOUNT names it; still no token."""
    monkeypatch.setitem(ENV, "SKEWFREE_K8S_SERVICE_ACCOUNT", "skewfree-steps")
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("transform"), dag)
    pod = task.build_pod_request_obj(context, dry_run=True)
    assert pod.spec.service_account_name == "skewfree-steps" and pod.spec.automount_service_account_token is False
    validated_manifest(pod)
    with pytest.raises(ValueError, match="SKEWFREE_K8S_SERVICE_ACCOUNT='Steps_SA' is not a Kubernetes object name"):
        Settings.from_env({"SKEWFREE_K8S_SERVICE_ACCOUNT": "Steps_SA"})


def test_model_server_config_cannot_be_an_s3_url():
    settings = Settings.from_env({"SKEWFREE_SERVING_ROOT": "s3://b/models", "SKEWFREE_HOME": "/srv/skewfree"})
    assert settings.model_server_config == "/srv/skewfree/models.config"  # not under the S3 root
    with pytest.raises(ValueError, match="SKEWFREE_MODEL_SERVER_CONFIG must be a file"):
        Settings.from_env({"SKEWFREE_MODEL_SERVER_CONFIG": "s3://b/models/models.config"})


def test_pods_of_models_kept_outside_the_repository_get_their_models_folder(monkeypatch):
    monkeypatch.setitem(ENV, "SKEWFREE_MODELS_DIR", "/opt/team-models")
    dag = dags(monkeypatch, "kubernetes")
    task, context = rendered(dag.get_task("train"), dag)
    container = task.build_pod_request_obj(context, dry_run=True).spec.containers[0]
    assert {e.name: e.value for e in container.env}["SKEWFREE_MODELS_DIR"] == "/opt/team-models"


def test_more_gpus_than_configured_also_get_the_gpu_nodes(monkeypatch):
    """A run asking for GPUs on a model configured without them gets the GPU limit and the GPU nodes'
    selector and tolerations, or the pod would wait forever for a GPU on a CPU node."""
    import dataclasses

    from pipelines.config import load_model_config
    from skewfree.operators.pod import step_pod

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    config = load_model_config("taxi")
    cpu_only = dataclasses.replace(config, kubernetes=dataclasses.replace(
        config.kubernetes, resources={**config.kubernetes.resources,
                                      "train": dataclasses.replace(config.kubernetes.resources["train"], gpus=0)}))
    task = step_pod("train", model="taxi", config=cpu_only, settings=Settings.from_env(), interval="2026-11-10",
                    extra_args=[])
    dag = dags(monkeypatch, "kubernetes")
    task.dag = None
    _, context = rendered(dag.get_task("train"), dag, {"gpus": 2})
    pod = task.build_pod_request_obj(context, dry_run=True)
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"} and pod.spec.tolerations
    assert pod.spec.security_context.fs_group_change_policy == "OnRootMismatch"


@pytest.mark.parametrize("bad", ["/models=Serving_PVC", "/models=a/b", "/scratch=x", "/m=a,/m=b", "models=x"])
def test_volume_claims_are_checked_before_any_pod_is_made(bad):
    with pytest.raises(ValueError, match="SKEWFREE_K8S_VOLUME_CLAIMS"):
        Settings.from_env({"SKEWFREE_K8S_VOLUME_CLAIMS": bad})
