"""Deployment settings on the Airflow side, read when a task runs (never at DAG parse time)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.objectstore import is_s3

BACKENDS = ("local", "kubernetes")
# An image tag: Docker's tag grammar, never the moving 'latest'; optionally pinned to a digest too (TAG@sha256:...)
IMAGE_TAG_PATTERN = r"^(?!latest(@|$))[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?$"
# A namespace: a DNS-1123 label
NAMESPACE_PATTERN = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# The trainer image built from docker/trainer.Dockerfile; runs pin an exact tag, never 'latest'.
DEFAULT_TRAINER_IMAGE = "ghcr.io/skewfree/trainer"
DEFAULT_TRAINER_TAG = "0.1.0-tf2.21.0-gpu"


@dataclass(frozen=True)
class Settings:
    """Where steps run and which roots they use.

    :param backend: ``local`` runs each step as a subprocess of the task.
    :param data_root: raw partitions.
    :param artifact_root: run directories.
    :param serving_root: the TF Serving model base paths, as this side sees them.
    :param server_serving_root: the same directory as the model server sees it (a container path
        for tensorflow/serving); written into its model config file.
    :param model_server_config: TF Serving's ``--model_config_file``, re-read by the server.
    :param trainer_image: image repository for step pods (kubernetes backend).
    :param trainer_tag: the default exact tag; a run's ``image_tag`` param overrides it.
    :param namespace: Kubernetes namespace for step pods.
    :param deferrable: wait for pods from the triggerer instead of a worker slot.
    :param aws_conn_id: the Airflow connection this side reads ``s3://`` roots with.
    :param s3_secret: a Kubernetes Secret with ``AWS_*`` variables for step pods (``envFrom``); unset
        when pods get S3 access another way (an IAM role for the service account).
    :param s3_endpoint_url: ``AWS_ENDPOINT_URL_S3`` for step pods (MinIO and other S3-compatible stores).
    :param models_dir: ``SKEWFREE_MODELS_DIR``, model folders outside this repository; step pods get the
        same value, so the trainer image must hold those folders at the same path.
    :param service_account: ``SKEWFREE_K8S_SERVICE_ACCOUNT``, the step pods' service account (e.g. one with an
        IAM role that grants the S3 buckets); unset: the namespace's default.
    :param volume_claims: ``SKEWFREE_K8S_VOLUME_CLAIMS`` (``/models=skewfree-serving,/mnt/data=team-data``):
        PersistentVolumeClaims every step pod mounts at those paths. A root that is a local path on the
        kubernetes backend must be under one of them (the serving root on a ReadWriteMany claim that TF
        Serving and the Airflow workers mount too), else the pods could not see it: refused.
    """

    backend: str
    data_root: str
    artifact_root: str
    serving_root: str
    server_serving_root: str
    model_server_config: str
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    trainer_tag: str = DEFAULT_TRAINER_TAG
    namespace: str = "skewfree"
    deferrable: bool = False
    aws_conn_id: str = "aws_default"
    s3_secret: str | None = None
    s3_endpoint_url: str | None = None
    models_dir: str | None = None
    volume_claims: tuple[tuple[str, str], ...] = ()
    service_account: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("SKEWFREE_HOME", Path.cwd() / ".work"))
        serving_root = env.get("SKEWFREE_SERVING_ROOT", str(home / "serving"))
        settings = cls(
            backend=env.get("SKEWFREE_BACKEND", "local"),
            data_root=env.get("SKEWFREE_DATA_ROOT", str(home / "data")),
            artifact_root=env.get("SKEWFREE_ARTIFACT_ROOT", str(home / "artifacts")),
            serving_root=serving_root,
            server_serving_root=env.get("SKEWFREE_SERVER_SERVING_ROOT", serving_root),
            # the server's config file is a file it reads (TF Serving >= 2.7 cannot read s3://)
            model_server_config=env.get("SKEWFREE_MODEL_SERVER_CONFIG", str(home / "models.config")
                                        if is_s3(serving_root) else f"{serving_root}/models.config"),
            trainer_image=env.get("SKEWFREE_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE),
            trainer_tag=env.get("SKEWFREE_TRAINER_TAG", DEFAULT_TRAINER_TAG),
            namespace=env.get("SKEWFREE_K8S_NAMESPACE", "skewfree"),
            deferrable=_boolean(env, "SKEWFREE_DEFERRABLE", False),
            aws_conn_id=env.get("SKEWFREE_AWS_CONN_ID", "aws_default"),
            s3_secret=env.get("SKEWFREE_K8S_S3_SECRET") or None,
            s3_endpoint_url=env.get("SKEWFREE_S3_ENDPOINT_URL") or None,
            models_dir=env.get("SKEWFREE_MODELS_DIR") or None,
            volume_claims=parse_volume_claims(env.get("SKEWFREE_K8S_VOLUME_CLAIMS", "")),
            service_account=env.get("SKEWFREE_K8S_SERVICE_ACCOUNT") or None,
        )
        if is_s3(settings.model_server_config):
            raise ValueError("SKEWFREE_MODEL_SERVER_CONFIG must be a file the model server reads, not an s3:// URL "
                             f"(got {settings.model_server_config!r})")
        if not re.fullmatch(IMAGE_TAG_PATTERN, settings.trainer_tag) or ":" in settings.trainer_image.rsplit("/", 1)[-1] \
                or "@" in settings.trainer_image:
            raise ValueError("SKEWFREE_TRAINER_IMAGE is a repository without a tag and SKEWFREE_TRAINER_TAG an "
                             "exact tag other than 'latest' (letters, digits, '_', '.', '-'), optionally pinned to a "
                             f"digest: TAG@sha256:<64 hex> (got {settings.trainer_image!r}, {settings.trainer_tag!r})")
        if settings.service_account is not None and not re.fullmatch(
                r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", settings.service_account):
            raise ValueError(f"SKEWFREE_K8S_SERVICE_ACCOUNT={settings.service_account!r} is not a Kubernetes object "
                             "name (lower case letters, digits, '-' and '.')")
        if not re.fullmatch(NAMESPACE_PATTERN, settings.namespace):
            raise ValueError(f"SKEWFREE_K8S_NAMESPACE={settings.namespace!r} is not a Kubernetes namespace name (lower "
                             "case letters, digits and '-', at most 63): step pods would not be created")
        if settings.backend not in BACKENDS:
            raise ValueError(f"SKEWFREE_BACKEND={settings.backend!r} is not one of {', '.join(BACKENDS)}")
        if settings.backend == "kubernetes":
            for name, root in settings.roots.items():
                if not is_s3(root) and settings.claim_of(root) is None:
                    raise ValueError(
                        f"SKEWFREE_{name.upper()}_ROOT={root!r} is a local path, but step pods have no volume there: "
                        "mount a PersistentVolumeClaim at it with SKEWFREE_K8S_VOLUME_CLAIMS="
                        f"'{root}=<claim>' (for the serving root, a ReadWriteMany claim the model server and "
                        "the Airflow workers mount too), or use an s3:// root")
        return settings

    def claim_of(self, path: str) -> str | None:
        """The claim whose mount path holds ``path``, if any."""
        for mount, claim in self.volume_claims:
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return claim
        return None

    @property
    def roots(self) -> dict[str, str]:
        return {"data": self.data_root, "artifact": self.artifact_root, "serving": self.serving_root}


def _boolean(env, name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _BOOLEANS:
        raise ValueError(f"{name}={env[name]!r} is not a boolean: use true or false")
    return _BOOLEANS[value]


def parse_volume_claims(text: str) -> tuple[tuple[str, str], ...]:
    """``/models=skewfree-serving,/mnt/data=team-data`` -> ((mount path, claim name), ...)."""
    claims: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        mount, sep, claim = (part.strip() for part in item.partition("="))
        mount = mount.rstrip("/") or "/"
        if not sep or not mount.startswith("/") or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", claim):
            raise ValueError(f"SKEWFREE_K8S_VOLUME_CLAIMS: {item!r} is not /mount/path=claim-name (a Kubernetes "
                             "object name: lower case letters, digits, '-' and '.')")
        if mount in ("/", "/scratch") or mount in (m for m, _ in claims):
            raise ValueError(f"SKEWFREE_K8S_VOLUME_CLAIMS: {mount} is the root, the pods' /scratch or given twice")
        claims.append((mount, claim))
    return tuple(claims)
