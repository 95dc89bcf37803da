"""Multi-worker training on Kubernetes: the cluster a train pod belongs to, as ``TF_CONFIG``.

``[train] workers = N`` runs the train step as an Indexed Job of N pods (``skewfree.operators.train_job``) behind
a headless Service. The operator renders the workers' addresses into every pod's environment
(``SKEWFREE_CLUSTER_WORKERS``); Kubernetes gives each pod its completion index (``JOB_COMPLETION_INDEX``). The
trainer turns the two into ``TF_CONFIG`` for ``MultiWorkerMirroredStrategy``: worker 0 is the chief, the only
one that commits the step's output. No TensorFlow here: the Airflow side imports it to render the Job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pipelines.runs import StepError

WORKERS_ENV = "SKEWFREE_CLUSTER_WORKERS"  # host:port,host:port,... in worker order
INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job
PORT = 2222  # the workers' gRPC port (TensorFlow's convention)


def worker_hosts(job: str, service: str, namespace: str, workers: int, port: int = PORT) -> list[str]:
    """The DNS names of an Indexed Job's pods behind its headless Service (``<job>-<index>.<service>...``)."""
    return [f"{job}-{index}.{service}.{namespace}.svc:{port}" for index in range(workers)]


def tf_config(environ: Mapping[str, str] = os.environ) -> dict | None:
    """``TF_CONFIG`` from the Job's environment; None outside a multi-worker Job (one worker, no cluster)."""
    hosts = [h for h in environ.get(WORKERS_ENV, "").split(",") if h]
    if not hosts:
        return None
    index = environ.get(INDEX_ENV)
    if index is None or not index.isdigit() or int(index) >= len(hosts):
        raise StepError(f"{WORKERS_ENV} names {len(hosts)} workers but {INDEX_ENV}={index!r} is not an index "
                        f"0..{len(hosts) - 1}: a multi-worker train pod runs in an Indexed Job")
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": int(index)}}


def configure(environ: dict[str, str] | None = None) -> dict | None:
    """Set ``TF_CONFIG`` from the Job's environment unless it is already set; the cluster or None."""
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        return json.loads(environ["TF_CONFIG"])
    cluster = tf_config(environ)
    if cluster is not None:
        environ["TF_CONFIG"] = json.dumps(cluster)
    return cluster
