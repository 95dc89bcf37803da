"""The kubernetes backend: one pod per step, running the same argv as the local backend."""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from pipelines.cli import step_argv
from pipelines.config import ModelConfig
from skewfree.assets import emit_publication
from skewfree.links import STEP_LINKS
from skewfree.settings import Settings

XCOM_RETURN = "/airflow/xcom/return.json"  # read by KubernetesPodOperator's XCom sidecar
NON_ROOT_UID = 1000


class StepPod(KubernetesPodOperator):
    """The pod of one pipeline step (alone, or as the template of the train Job's pods).

    Trigger params reach the pod like the local task: flags that render empty are dropped from the
    argv, and a run's ``gpus`` param overrides the configured ``nvidia.com/gpu`` limit of ``train``.
    """

    gpu_scheduling: tuple[dict, tuple] = ({}, ())  # the model config's GPU node selector and tolerations

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        self.arguments = [arg for arg in self.arguments if arg]
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        gpus = ((context or {}).get("params") or {}).get("gpus") if self.task_id == "train" else None
        if gpus is not None:  # the run's GPU count, which the trainer's --gpus also gets (effective_gpus)
            limits = pod.spec.containers[0].resources.limits
            if gpus:
                limits["nvidia.com/gpu"] = str(gpus)
                # a model configured without GPUs still needs the GPU nodes' selector and tolerations
                pod.spec.node_selector = pod.spec.node_selector or dict(self.gpu_scheduling[0]) or None
                pod.spec.tolerations = pod.spec.tolerations or list(self.gpu_scheduling[1]) or None
            else:
                limits.pop("nvidia.com/gpu", None)
                pod.spec.node_selector, pod.spec.tolerations = None, None
        return pod


class StepPodOperator(StepPod):
    """KubernetesPodOperator for one pipeline step."""

    def execute(self, context: Any) -> Any:
        return self._published(context, super().execute(context))

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        # deferrable: the pod's result comes back here, not from execute
        return self._published(context, super().trigger_reentry(context, event))

    def _published(self, context: Any, result: Any) -> Any:
        if self.task_id == "publish" and isinstance(result, dict) and "version" in result:
            emit_publication(context, result["model"], result)
        return result


def image_ref(settings: Settings) -> str:
    """The trainer image a run uses (templated: a run's ``image_tag`` param overrides the default tag); the
    pod runs it and publish records it in the version's manifest."""
    return f"{settings.trainer_image}:{{{{ params.image_tag or '{settings.trainer_tag}' }}}}"


def effective_gpus(config: ModelConfig) -> str:
    """The train step's GPU count (templated): the run's ``gpus`` param, else the model config's."""
    return f"{{{{ params.gpus if params.gpus is not none else {config.kubernetes.for_step('train').gpus} }}}}"


def locked_down() -> k8s.V1SecurityContext:
    """A step container's security context, and its XCom sidecar's: non-root, no privilege escalation, no
    capabilities, a read-only root filesystem, the runtime's seccomp profile (the 'restricted' standard)."""
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False, privileged=False, run_as_non_root=True,
        read_only_root_filesystem=True, capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


SCRATCH = "/scratch"  # the one writable place in a step container (emptyDir): temp files, staging, HOME


def step_pod(step: str, *, model: str, config: ModelConfig, settings: Settings, interval: str,
             extra_args: list[str], **kwargs: Any) -> StepPod:
    """The pod for ``step``: pinned trainer image, resources from the model config, timed out; non-root with
    a read-only root filesystem (scratch on an emptyDir), the runtime's default seccomp profile, no service
    account token; the volume claims of ``SKEWFREE_K8S_VOLUME_CLAIMS`` mounted where the roots are. ``train``
    with ``[train] workers`` > 1 is an Indexed Job of that many such pods (``skewfree.operators.train_job``)."""
    operator_class: type[StepPod] = StepPodOperator
    if step == "train" and config.train.workers > 1:
        from skewfree.operators.train_job import TrainJobOperator

        operator_class = TrainJobOperator
        kwargs.update(TrainJobOperator.job_arguments(config))
    argv = step_argv(step, model=model, interval=interval, roots=settings.roots, extra=tuple(extra_args))
    resources = config.kubernetes.for_step(step)
    limits = {"cpu": resources.cpu, "memory": resources.memory}
    gpu = {}
    if resources.gpus:
        limits["nvidia.com/gpu"] = str(resources.gpus)
        gpu = {"node_selector": dict(config.kubernetes.gpu_node_selector),
               "tolerations": [k8s.V1Toleration(**t) for t in config.kubernetes.gpu_tolerations]}
    volumes = [k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource())]
    mounts = [k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH)]
    for i, (mount, claim) in enumerate(settings.volume_claims):
        volumes.append(k8s.V1Volume(name=f"claim-{i}", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=claim)))
        mounts.append(k8s.V1VolumeMount(name=f"claim-{i}", mount_path=mount))
    operator = operator_class(
        task_id=step,
        name=f"skewfree-{config.name}-{step}".replace("_", "-"),
        namespace=settings.namespace,
        image=image_ref(settings),
        image_pull_policy="IfNotPresent",
        cmds=[argv[0]],
        arguments=argv[1:],
        volumes=volumes,
        volume_mounts=mounts,
        automount_service_account_token=False,  # steps never call the Kubernetes API
        service_account_name=settings.service_account,  # e.g. one whose IAM role grants the S3 buckets
        env_vars={"SKEWFREE_XCOM_RETURN": XCOM_RETURN, "TF_CPP_MIN_LOG_LEVEL": "2",
                  "HOME": SCRATCH, "TMPDIR": SCRATCH, "SKEWFREE_STAGING_DIR": f"{SCRATCH}/staging",
                  **({"AWS_ENDPOINT_URL_S3": settings.s3_endpoint_url} if settings.s3_endpoint_url else {}),
                  **({"SKEWFREE_MODELS_DIR": settings.models_dir} if settings.models_dir else {})},
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.s3_secret))]
        if settings.s3_secret else None,
        container_resources=k8s.V1ResourceRequirements(requests={"cpu": resources.cpu, "memory": resources.memory},
                                                       limits=limits),
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=NON_ROOT_UID,
                                                  fs_group=NON_ROOT_UID,
                                                  # never a recursive chown of a shared claim at every start
                                                  fs_group_change_policy="OnRootMismatch",
                                                  seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        container_security_context=locked_down(),
        # the XCom sidecar too: a namespace enforcing the 'restricted' Pod Security Standard refuses a pod
        # with any container that may escalate or keeps capabilities
        xcom_sidecar_container_security_context=locked_down(),
        startup_timeout_seconds=config.kubernetes.startup_timeout_seconds,
        active_deadline_seconds=resources.active_deadline_seconds,
        get_logs=True,
        do_xcom_push=True,
        on_finish_action="delete_pod",
        deferrable=settings.deferrable,
        labels={"app": "skewfree", "model": config.name, "step": step},
        **gpu,
        **kwargs,
    )
    operator.operator_extra_links = STEP_LINKS.get(step, ())
    operator.gpu_scheduling = (dict(config.kubernetes.gpu_node_selector),
                               tuple(k8s.V1Toleration(**t) for t in config.kubernetes.gpu_tolerations))
    return operator
