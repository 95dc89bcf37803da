"""The whole daily DAG with the data, artifact and serving roots on S3 (a moto server on 127.0.0.1).

The same ``./dev demo`` run as the local e2e test, changed only by configuration: steps stage
their inputs in and outputs out of S3, publish uploads the version with saved_model.pb last, the
rollout reads the canary rows through the amazon provider's S3Hook, and the local model server
loads the version from S3. Then: nothing half-written is visible under the serving root, and a
second run of the same interval reuses everything instead of publishing a duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess

import pytest

from tests.conftest import airflow_env, run_demo, task_states

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

END = dt.date(2026, 11, 10)
INTERVAL = END.isoformat()
BUCKETS = {"data": "skewfree-data", "artifact": "skewfree-artifacts", "serving": "skewfree-serving"}


@pytest.fixture(scope="module")
def stack(s3_server, tmp_path_factory):
    import boto3

    home = tmp_path_factory.mktemp("s3stack")
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
    ).client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL_S3"])
    for bucket in BUCKETS.values():
        client.create_bucket(Bucket=bucket)
    env = airflow_env(home)
    env.update(s3_server)
    env.update(
        SKEWFREE_DATA_ROOT=f"s3://{BUCKETS['data']}/raw",
        SKEWFREE_ARTIFACT_ROOT=f"s3://{BUCKETS['artifact']}/skewfree",
        SKEWFREE_SERVING_ROOT=f"s3://{BUCKETS['serving']}/models",
        SKEWFREE_STAGING_DIR=str(home / "staging"),
        # the Airflow side (rollout) reaches S3 through this connection and the amazon provider
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": s3_server["AWS_ENDPOINT_URL_S3"], "region_name": "us-east-1"},
        }),
    )
    return {"home": home, "env": env, "client": client}


def demo(stack, *args: str) -> subprocess.CompletedProcess:
    return run_demo(stack["env"], *args)


def keys(client, bucket: str, prefix: str = "") -> dict[str, int]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return found


def read(client, bucket: str, key: str) -> dict:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def first_run(stack):
    out = demo(stack)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


def test_the_daily_dag_runs_with_every_root_on_s3(stack, first_run):
    states = task_states(first_run.stdout)
    assert states.pop("approve_promotion") == "skipped"  # no approval asked for
    assert set(states.values()) == {"success"}, first_run.stdout[-3000:]
    client = stack["client"]
    run_prefix = f"skewfree/taxi/runs/{INTERVAL}/"
    artifacts = keys(client, BUCKETS["artifact"], run_prefix)
    for step in ("validate", "transform", "train", "evaluate", "publish"):
        assert f"{run_prefix}{step}/result.json" in artifacts, step
    assert any(k.startswith(f"{run_prefix}train/saved_model/variables/") for k in artifacts)
    assert not any("train_checkpoints" in k for k in artifacts), "checkpoints are removed after training"

    # results on S3 name S3 URLs, never the local mirror the step ran on
    staging = str(stack["home"] / "staging")
    for step in ("validate", "transform", "train", "evaluate", "publish"):
        assert staging not in json.dumps(read(client, BUCKETS["artifact"], f"{run_prefix}{step}/result.json"))
    trained = read(client, BUCKETS["artifact"], f"{run_prefix}train/result.json")
    assert trained["saved_model"] == f"s3://{BUCKETS['artifact']}/{run_prefix}train/saved_model"
    validated = read(client, BUCKETS["artifact"], f"{run_prefix}validate/result.json")
    data_files = keys(client, BUCKETS["data"])
    assert validated["file_digests"] and all(
        url.startswith(f"s3://{BUCKETS['data']}/raw/") and url.split("/", 3)[3] in data_files
        for url in validated["file_digests"])
    # every step cleaned up its local mirror; nothing was written to a local root by mistake
    assert not list((stack["home"] / "staging").glob("skewfree-step-*"))
    assert not (stack["home"] / "artifacts").exists() and not (stack["home"] / "serving").exists()


def test_serving_root_holds_only_complete_versions(stack, first_run):
    client = stack["client"]
    published = read(client, BUCKETS["artifact"], f"skewfree/taxi/runs/{INTERVAL}/publish/result.json")
    version = published["version"]
    assert published["path"] == f"s3://{BUCKETS['serving']}/models/taxi/{version}"
    serving = keys(client, BUCKETS["serving"], "models/")
    pattern = re.compile(r"models/taxi/(\d+)/(.+)")
    assert all(pattern.fullmatch(k) for k in serving), f"unexpected objects under the serving root: {serving}"
    versions = {pattern.fullmatch(k).group(1) for k in serving}
    assert versions == {str(version)}
    # the version is the trained SavedModel, every file of it, plus its manifest and canary rows
    model_prefix = f"skewfree/taxi/runs/{INTERVAL}/train/saved_model/"
    trained = {k[len(model_prefix):]: size for k, size in keys(client, BUCKETS["artifact"], model_prefix).items()}
    version_prefix = f"models/taxi/{version}/"
    served = {k[len(version_prefix):]: size for k, size in serving.items()}
    assert {k: v for k, v in served.items() if k not in ("manifest.json", "canary.json", "report.html")} == trained
    assert "report.html" in served  # the evidence travels with the version
    manifest = read(client, BUCKETS["serving"], version_prefix + "manifest.json")
    assert manifest["version"] == version and manifest["interval"] == INTERVAL
    # lineage names the S3 objects the model came from, not the local copies a step worked on
    assert manifest["source"] == f"s3://{BUCKETS['artifact']}/{model_prefix.rstrip('/')}"
    assert manifest["input_digests"] and all(u.startswith(f"s3://{BUCKETS['data']}/") for u in manifest["input_digests"])


def test_model_server_loaded_the_version_from_s3_and_serves_it(first_run):
    match = re.search(r"label 'stable' -> version (\d+) \(AVAILABLE\)", first_run.stdout)
    assert match, first_run.stdout[-3000:]
    assert re.search(r'response: \{"predictions": \[0\.\d+', first_run.stdout), first_run.stdout[-3000:]


def test_rerun_of_the_same_interval_reuses_outputs_and_publishes_nothing_new(stack, first_run):
    client = stack["client"]
    before = keys(client, BUCKETS["serving"])
    out = demo(stack, "--no-generate")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "identical model already published" in out.stdout
    run_prefix = f"skewfree/taxi/runs/{INTERVAL}/"
    for step in ("transform", "train"):
        assert read(client, BUCKETS["artifact"], f"{run_prefix}{step}/result.json").get("cached") is True, step
    # the reused train output is still whole on S3 (only its result.json was rewritten)
    assert any(k.startswith(f"{run_prefix}train/saved_model/variables/") for k in keys(client, BUCKETS["artifact"]))
    assert keys(client, BUCKETS["serving"]) == before
