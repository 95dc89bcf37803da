"""``[train] workers = N`` on the kubernetes backend: an Indexed Job of N train pods behind a headless Service,
each building TF_CONFIG from its completion index; only the chief's result is the task's."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.plugins.test_step_pods import ENV, rendered, validated_manifest


def multi_worker_config(tmp_path, workers: int = 3, strategy: str = "multi_worker", gpus: int = 1,
                        name: str = "taxi"):
    text = (ROOT / "pipelines/models/taxi/config.toml").read_text()
    assert 'strategy = "default"' in text and 'name = "taxi"' in text
    text = text.replace('strategy = "default"', f'strategy = "{strategy}"\nworkers = {workers}', 1)
    text = text.replace('name = "taxi"', f'name = "{name}"', 1)
    source = tmp_path / "taxi.toml"
    source.write_text(text)
    return source


def train_job(monkeypatch, tmp_path, **kwargs):
    from skewfree.dag_factory import retrain_dag

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path))
    dag = retrain_dag(str(multi_worker_config(tmp_path, **kwargs)))
    return dag, dag.get_task("train")


def test_the_train_job_renders_n_indexed_workers_with_a_headless_service(monkeypatch, tmp_path):
    from pipelines.cluster import INDEX_ENV, WORKERS_ENV, tf_config
    from skewfree.operators.train_job import TrainJobOperator

    dag, task = train_job(monkeypatch, tmp_path)
    assert isinstance(task, TrainJobOperator)
    task, context = rendered(task, dag)
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    # rendering needs no cluster: the one label that asks the API client where it runs
    monkeypatch.setattr(KubernetesHook, "is_in_cluster", property(lambda self: False))
    job = task.build_job_request_obj(context)
    manifest = validated_manifest(job)
    name, namespace = job.metadata.name, job.metadata.namespace
    spec = manifest["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] > 0
    pod = job.spec.template.spec
    assert pod.subdomain == name and pod.automount_service_account_token is False
    container = pod.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "1"  # per worker
    assert container.args[:3] == ["-m", "pipelines", "train"] and container.ports[0].container_port == 2222
    env = {e.name: e.value for e in container.env}
    hosts = env[WORKERS_ENV].split(",")
    assert hosts == [f"{name}-{i}.{name}.{namespace}.svc:2222" for i in range(3)]
    # what each pod's trainer builds from the index Kubernetes gives it: worker 0 is the chief
    configs = [tf_config({WORKERS_ENV: env[WORKERS_ENV], INDEX_ENV: str(i)}) for i in range(3)]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == {"worker": hosts} for c in configs)

    service = TrainJobOperator.headless_service(job, owner_uid="0b5e8f2c-1111-2222-3333-444455556666")
    data = validated_manifest(service)
    assert data["spec"]["clusterIP"] == "None" and data["spec"]["publishNotReadyAddresses"] is True
    assert data["spec"]["selector"] == {"batch.kubernetes.io/job-name": name} and data["metadata"]["name"] == name
    assert data["metadata"]["ownerReferences"][0]["kind"] == "Job"  # deleted with the Job


def test_a_long_model_name_still_gives_every_worker_a_valid_hostname(monkeypatch, tmp_path):
    """Each pod's hostname is <job>-<index>: with the provider's 63-character Job name, a model named with 40
    characters gave hostnames of 64, which no DNS label may be, though the manifest passed the schema (a
    platform trial). The Job's name is cut to leave room for the largest index."""
    import re

    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    from pipelines.cluster import WORKERS_ENV

    name = "customer_lifetime_value_churn_propensity"
    dag, task = train_job(monkeypatch, tmp_path, workers=12, name=name)
    task, context = rendered(task, dag)
    monkeypatch.setattr(KubernetesHook, "is_in_cluster", property(lambda self: False))
    job = task.build_job_request_obj(context)
    validated_manifest(job)
    assert job.metadata.name.startswith("job-skewfree-customer-lifetime")
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    hostnames = [host.split(".", 1)[0] for host in env[WORKERS_ENV].split(",")]
    assert len(hostnames) == 12 and hostnames[-1] == f"{job.metadata.name}-11"
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", h) for h in hostnames), hostnames


def test_only_the_chiefs_result_is_the_tasks(monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    _, task = train_job(monkeypatch, tmp_path, workers=2)
    chief, worker = {"chief": True, "saved_model": "/m"}, {"chief": False, "saved_model": ""}
    assert task._chief([worker, chief]) == chief
    with pytest.raises(AirflowFailException, match="reported 0 chief results"):
        task._chief([worker, worker])


def test_workers_need_the_multi_worker_strategy_and_a_sane_count(tmp_path):
    from pipelines.config import ConfigError, load_model_config

    with pytest.raises(ConfigError, match=r'workers = 2 trains on 2 pods, which needs strategy = "multi_worker"'):
        load_model_config(str(multi_worker_config(tmp_path, workers=2, strategy="default")))
    with pytest.raises(ConfigError, match=r"\[train\] workers must be an integer 1..64, got 0"):
        load_model_config(str(multi_worker_config(tmp_path, workers=0)))


def test_a_pod_outside_an_indexed_job_is_refused_by_name():
    from pipelines.cluster import WORKERS_ENV, tf_config
    from pipelines.runs import StepError

    assert tf_config({}) is None  # one worker: no cluster
    with pytest.raises(StepError, match="JOB_COMPLETION_INDEX=None is not an index 0..1"):
        tf_config({WORKERS_ENV: "a:2222,b:2222"})
    with pytest.raises(StepError, match="JOB_COMPLETION_INDEX='2' is not an index 0..1"):
        tf_config({WORKERS_ENV: "a:2222,b:2222", "JOB_COMPLETION_INDEX": "2"})
