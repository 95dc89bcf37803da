"""``[train] workers = N`` on the kubernetes backend: the train step as an Indexed Job of N pods.

Each pod is the train step's pod (``skewfree.operators.pod``: same image, argv, resources and GPU limit per
worker). A headless Service named after the Job gives the pods stable DNS names (``<job>-<index>.<job>``);
every pod gets the list of them (``SKEWFREE_CLUSTER_WORKERS``) and Kubernetes gives each its
``JOB_COMPLETION_INDEX``, from which the trainer builds ``TF_CONFIG`` (``pipelines.cluster``). Worker 0 is the
chief: it alone commits the step's output and its result is the task's XCom. The Service is owned by the
Job, so Kubernetes deletes it with the Job (``ttl_seconds_after_finished``).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.job import KubernetesJobOperator
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import models as k8s

from pipelines.cluster import PORT, WORKERS_ENV, worker_hosts
from pipelines.config import ModelConfig
from skewfree.operators.pod import StepPod

JOB_TTL_SECONDS = 3600  # a finished Job (its pods' logs) is kept an hour, then deleted with its Service


class TrainJobOperator(KubernetesJobOperator, StepPod):
    """The train step on ``parallelism`` = ``completions`` = N pods of an Indexed Job."""

    @staticmethod
    def job_arguments(config: ModelConfig) -> dict[str, Any]:
        workers = config.train.workers
        return {"completion_mode": "Indexed", "completions": workers, "parallelism": workers,
                # one failed worker fails the Job at once; Airflow's retry starts a new one, which resumes
                # from the chief's last checkpoint (BackupAndRestore)
                "backoff_limit": 0, "ttl_seconds_after_finished": JOB_TTL_SECONDS,
                "wait_until_job_complete": True}

    def build_job_request_obj(self, context: Any = None) -> k8s.V1Job:
        job = super().build_job_request_obj(context)
        # each pod's hostname is <job>-<index>, a DNS label of at most 63 characters (the provider keeps the Job's
        # name itself to 63): a long model name is cut, before the provider's random suffix
        room = 63 - len(f"-{self.completions - 1}")
        if len(job.metadata.name) > room:
            base, suffix = job.metadata.name.rsplit("-", 1)
            job.metadata.name = f"{base[:room - len(suffix) - 1].rstrip('-.')}-{suffix}"
        name, namespace = job.metadata.name, job.metadata.namespace
        spec = job.spec.template.spec
        spec.subdomain = name  # the headless Service: <job>-<index>.<job>.<namespace>.svc
        container = spec.containers[0]
        container.env = [*(container.env or []), k8s.V1EnvVar(
            name=WORKERS_ENV, value=",".join(worker_hosts(name, name, namespace, self.completions)))]
        container.ports = [k8s.V1ContainerPort(name="tf-worker", container_port=PORT)]
        return job

    @staticmethod
    def headless_service(job: k8s.V1Job, owner_uid: str | None = None) -> k8s.V1Service:
        """The Service that names the Job's pods; owned by the Job (deleted with it)."""
        name = job.metadata.name
        owner = ([k8s.V1OwnerReference(api_version="batch/v1", kind="Job", name=name, uid=owner_uid)]
                 if owner_uid else None)
        return k8s.V1Service(
            api_version="v1", kind="Service",
            metadata=k8s.V1ObjectMeta(name=name, namespace=job.metadata.namespace, labels=job.metadata.labels,
                                      owner_references=owner),
            spec=k8s.V1ServiceSpec(
                cluster_ip="None", selector={"batch.kubernetes.io/job-name": name},
                # workers look each other up while they start, before any is ready
                publish_not_ready_addresses=True,
                ports=[k8s.V1ServicePort(name="tf-worker", port=PORT, target_port=PORT)]))

    def create_job(self, job_request_obj: k8s.V1Job) -> k8s.V1Job:
        created = self.hook.create_job(job=job_request_obj)
        self.hook.core_v1_client.create_namespaced_service(
            namespace=job_request_obj.metadata.namespace,
            body=self.headless_service(job_request_obj, owner_uid=created.metadata.uid))
        return job_request_obj

    def execute(self, context: Any) -> Any:
        return self._chief(super().execute(context))

    def execute_complete(self, context: Any, event: dict, **kwargs: Any) -> Any:
        return self._chief(super().execute_complete(context, event, **kwargs))

    def _chief(self, results: Any) -> dict:
        """The chief's result (the one that committed the output) out of every worker's."""
        results = results if isinstance(results, list) else [results]
        chiefs = [r for r in results if isinstance(r, dict) and r.get("chief")]
        if len(chiefs) != 1:
            raise AirflowFailException(f"the train Job's {len(results)} workers reported {len(chiefs)} chief "
                                       f"results, expected exactly one: {results!r:.2000}")
        return chiefs[0]
