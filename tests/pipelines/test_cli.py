"""`python -m pipelines versions`: the table a person reads."""

from __future__ import annotations

import json

from pipelines.cli import main


def test_the_versions_table_shows_each_tasks_headline_metric(tmp_path, capsys):
    """A regression model's versions show rmse (the column said auc, and '-' under it, for every model)."""
    for model, metrics in (("delivery", {"rmse": 3.25, "mae": 2.0}), ("taxi", {"auc": 0.8606})):
        version = tmp_path / model / "2026120600"
        version.mkdir(parents=True)
        (version / "manifest.json").write_text(json.dumps({"interval": "2026-12-06", "metrics": metrics}))
        assert main(["versions", "--model", model, "--serving-root", str(tmp_path)]) == 0
        header, row = capsys.readouterr().out.splitlines()[:2]
        name = "rmse" if model == "delivery" else "auc"
        assert header.split()[3] == name and row.split()[3] == f"{metrics[name]:.4f}", (header, row)



def test_a_step_error_is_printed_once_where_stdout_is_stderr_and_is_stdouts_last_line(tmp_path):
    """A user trial saw train's refusal twice in a terminal and in the task log (the step operator reads stdout
    and stderr as one pipe). A one-line error is now printed once there; a multi-line one is printed as written,
    then on one line; with separate streams stderr gets it as written. stdout's last line always carries it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    one = ["train", "--model", "taxi", "--interval", "1999-01-01", "--artifact-root", str(tmp_path / "art")]
    many = ["validate", "--model", "taxi", "--interval", "1999-01-01", "--data-root", str(tmp_path / "none"),
            "--artifact-root", str(tmp_path / "art")]

    def run(argv, merged):
        out = subprocess.run([sys.executable, "-m", "pipelines", *argv], cwd=root, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE)
        assert out.returncode == 1, out.stdout + (out.stderr or "")
        return [line for line in out.stdout.splitlines() if line.startswith("error: ")], out.stderr

    lines, _ = run(one, merged=True)
    assert lines == ["error: train: step 'transform' has no completed output for taxi interval 1999-01-01 (expected "
                     f"{tmp_path}/art/taxi/runs/1999-01-01/transform/result.json); run it first"]
    lines, stderr = run(one, merged=False)
    assert len(lines) == 1 and stderr.strip().splitlines()[-1] == lines[0]
    lines, _ = run(many, merged=True)
    assert len(lines) == 2 and lines[0].endswith("most severe first (report: "
                                                 f"{tmp_path}/art/taxi/runs/1999-01-01/validate/rejected/validation.json):")
    assert lines[1].startswith(lines[0] + " 1. [error missing_partition] missing partition for 1998-12-26")
    merged = subprocess.run([sys.executable, "-m", "pipelines", *many], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
    assert merged.strip().splitlines()[-1] == lines[1]  # the orchestrator's line, last
    lines, stderr = run(many, merged=False)
    assert len(lines) == 1 and "\n  7. [error missing_partition] missing partition for 1999-01-01" in stderr
    # in a pod the line is also the step's XCom, which KubernetesPodOperator pushes for a failed container (the
    # run note reads it there)
    env["SKEWFREE_XCOM_RETURN"] = str(tmp_path / "xcom" / "return.json")
    lines, _ = run(one, merged=True)
    assert json.loads((tmp_path / "xcom" / "return.json").read_text()) == {
        "error": lines[0].removeprefix("error: train: ")}


def test_an_s3_setup_error_is_a_step_error_naming_the_bucket_and_endpoint(tmp_path, s3_server):
    """A platform trial: a missing bucket and missing credentials were botocore tracebacks that named neither,
    and the DAG retried them as crashes ("it crashed (exit 1)"). They are expected failures now: one line with
    the bucket, the endpoint and what to set, and no retry (the step operator fails at once on an error line)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | s3_server | {
        "PYTHONPATH": str(root), "SKEWFREE_STAGING_DIR": str(tmp_path / "staging")}
    argv = [sys.executable, "-m", "pipelines", "validate", "--model", "taxi", "--interval", "2026-11-10",
            "--data-root", "s3://no-such-bucket/raw", "--artifact-root", str(tmp_path / "art")]

    def last_line(environ) -> str:
        out = subprocess.run(argv, cwd=root, env=environ, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert out.returncode == 1, out.stdout[-3000:]
        assert "Traceback" not in out.stdout, out.stdout[-3000:]
        return out.stdout.strip().splitlines()[-1]

    endpoint = s3_server["AWS_ENDPOINT_URL_S3"]
    assert last_line(env) == (f"error: validate: S3 s3://no-such-bucket at {endpoint}: the bucket does not exist: "
                              "create it, or fix the root's URL (NoSuchBucket in ListObjectsV2)")
    anonymous = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    anonymous["AWS_SHARED_CREDENTIALS_FILE"] = anonymous["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    assert last_line(anonymous).startswith("error: validate: S3: Unable to locate credentials: set "
                                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_s3_problem_looks_through_wrapped_errors_and_keeps_transient_ones_for_a_retry():
    """boto3's uploads wrap botocore's error (S3UploadFailedError), and a HEAD's refusal is a bare '403' (a
    review): both are setup errors. A lost connection or a throttle is not: it propagates, and is retried."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, EndpointConnectionError

    from pipelines.objectstore import s3_problem

    def wrapped(error: Exception) -> Exception:
        try:
            try:
                raise error
            except Exception as exc:
                raise S3UploadFailedError("Failed to upload x to b/x: An error occurred") from exc
        except S3UploadFailedError as outer:
            return outer

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")
    assert "access denied: the credentials may not use this bucket (AccessDenied in PutObject)" in s3_problem(
        wrapped(denied))
    assert "(AccessDenied in HeadObject)" in s3_problem(ClientError({"Error": {"Code": "403"}}, "HeadObject"))
    assert s3_problem(ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")) is None
    assert s3_problem(wrapped(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))) is None
    assert s3_problem(ValueError("not S3")) is None


def test_two_runs_of_one_interval_never_mix_their_outputs(trained_run, small_data, tmp_path, capsys, monkeypatch):
    """A user trial: a manual run and a backfill's run of the same day ran at once in one run directory; the
    scheduled run published the manual run's model (8 epochs, its own evaluate had scored a 6-epoch one) under
    its own run id. Validate now claims the interval for its run; the older run stops at its next step, and a
    step of it already under way cannot commit once the interval is claimed: its previous output stays."""
    import shutil

    from pipelines import evaluate as evaluate_module
    from pipelines.cli import main
    from pipelines.runs import claim_interval
    from tests.conftest import END

    art = tmp_path / "art"
    shutil.copytree(trained_run["artifact_root"], art)
    for result in art.rglob("result.json"):
        result.write_text(result.read_text().replace(str(trained_run["artifact_root"]), str(art)))
    common = ["--model", "taxi", "--interval", str(END), "--artifact-root", str(art)]

    def step(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        return code, capsys.readouterr().out.strip().splitlines()[-1]

    assert step("validate", *common, "--data-root", str(small_data), "--run-id", "manual__a")[0] == 0
    assert step("validate", *common, "--data-root", str(small_data), "--run-id", "backfill__b")[0] == 0
    code, line = step("transform", *common, "--run-id", "manual__a")
    assert code == 1 and line.startswith(f"error: transform: run backfill__b started interval {END} of taxi after "
                                         "this run (manual__a) and owns its run directory since ")
    assert "this run stops here, so that the two never mix their outputs" in line
    assert step("transform", *common, "--run-id", "backfill__b")[0] == 0  # the owner goes on
    assert step("transform", *common)[0] == 0  # (a step run by hand, without a run id, is not judged)

    # a step of the older run already under way when the newer one claims the interval commits nothing
    before = (art / "taxi" / "runs" / str(END) / "evaluate" / "result.json").read_text()
    real = evaluate_module.resolve_baseline

    def claimed_meanwhile(*args, **kwargs):
        claim_interval(str(art), "taxi", END, "scheduled__c")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "resolve_baseline", claimed_meanwhile)
    code, line = step("evaluate", *common, "--serving-root", str(tmp_path / "serving"), "--run-id", "backfill__b",
                      "--force")
    assert code == 1 and line.startswith(f"error: evaluate: run scheduled__c started interval {END}"), line
    assert (art / "taxi" / "runs" / str(END) / "evaluate" / "result.json").read_text() == before
